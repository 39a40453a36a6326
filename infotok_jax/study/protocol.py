"""The study protocol as data: arms and their variants, sweeps, and the runs they plan (budgets and
the priority order of slices: `study/slices.py`).

A run is one (host, variant, seed) of `experiments/configs/host.py` under one budget. A variant is an arm
plus settings: config arguments of host.py (`tokens=64`, `nuisance=1.0`) and `--config.<field>=<value>`
overrides (`infotok.beta=0`, `host.lm_grad_to_tokenizer=1`). A setting equal to the config's default is
dropped, so a variant at the defaults IS the main run of its (host, arm, seed): `ar-hsic-s0` serves main,
beta x1, tokens=16, nuisance=0.5 and the "full" HSIC variant, and nothing is trained twice. Run names list
the remaining settings in one canonical order (`ar-hsic-beta0-lambda_c0-s0`), so the same run planned by
two sweeps has one name. Runs of one seed share data order, per-step keys and initialization (all derive
from `config.seed`), whatever the variant.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
HOST_CONFIG = "experiments/configs/host.py"  # relative to REPO; subprocesses run with cwd=REPO
HOSTS = ("ar", "masked", "continuous")
ARMS = ("none", "vib", "hsic", "supervised")
IB_ARMS = ("none", "vib", "hsic")  # baseline and the two InfoTok arms (main, capacity)
# Name prefix of a field override in run names; also the canonical order of the parts of a name.
FIELD_SHORT = {
    "host.lm_grad_to_tokenizer": "lmgrad",
    "infotok.relevance_target": "y_",
    "infotok.hsic_estimator": "hsic_",
    "infotok.beta": "beta",
    "infotok.lambda_y": "lambda_y",
    "infotok.lambda_c": "lambda_c",
}


@dataclasses.dataclass(frozen=True)
class Times:
    """A setting relative to the config's default: default x factor (beta sweeps)."""

    factor: float


@dataclasses.dataclass(frozen=True)
class Flip:
    """A 0/1 gate set to 1 - the config's default (the LM-gradient control of each host)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """An arm and its settings. `args` are host.py config arguments, `fields` dotted config fields;
    values are literals, `Times(f)` or `Flip()`; `None` keeps the default. `label` names the variant in
    tables (the run's `value`); without one, the value is the effective setting of `Sweep.key`.
    `same_run_as`: the label of another variant of the sweep that is the same computation; this variant
    is that run (not trained again), shown and paired as a run of `arm`."""

    arm: str
    label: str = ""
    args: tuple[tuple[str, Any], ...] = ()
    fields: tuple[tuple[str, Any], ...] = ()
    same_run_as: str = ""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named set of variants; `key` (an arg or field name) makes the runs' value numeric for curves."""

    name: str
    description: str
    variants: tuple[Variant, ...]
    key: str = ""


def _values(key: str, values: Sequence[Any], arms: Sequence[str], *, arg: bool) -> tuple[Variant, ...]:
    return tuple(
        Variant(arm, args=((key, v),)) if arg else Variant(arm, fields=((key, v),))
        for arm in arms
        for v in values
    )


_CONTROLS = (
    Variant("none", "baseline"),
    Variant("none", "baseline, LM gradient flipped", fields=(("host.lm_grad_to_tokenizer", Flip()),)),
    Variant("supervised", "supervised: probe + contrastive"),
    Variant("supervised", "supervised: probe only", fields=(("infotok.lambda_c", 0.0),)),
    Variant("supervised", "supervised: contrastive only", fields=(("infotok.lambda_y", 0.0),)),
    Variant("hsic", "hsic: full"),
    Variant("hsic", "hsic: compression only", fields=(("infotok.lambda_y", 0.0), ("infotok.lambda_c", 0.0))),
    Variant("hsic", "hsic: relevance only", fields=(("infotok.beta", 0.0), ("infotok.lambda_c", 0.0))),
    Variant("hsic", "hsic: consistency only", fields=(("infotok.beta", 0.0), ("infotok.lambda_y", 0.0))),
    Variant("hsic", "hsic: relevance + consistency", fields=(("infotok.beta", 0.0),)),
    Variant("hsic", "hsic: privileged Y (attributes)", fields=(("infotok.relevance_target", "attributes"),)),
    # the treatment's own LM-gradient choice, made on validation like the baseline's
    Variant("hsic", "hsic: LM gradient flipped", fields=(("host.lm_grad_to_tokenizer", Flip()),)),
    Variant("vib", "vib: full"),
    Variant("vib", "vib: rate only", fields=(("infotok.lambda_c", 0.0),)),
    # VIB's only estimator term is its rate: at beta=0 the VIB and HSIC objectives are both the consistency
    # term alone, the same program (tests/test_infotok_objective.py; the seed-0 runs were bitwise equal)
    Variant("vib", "vib: consistency only", same_run_as="hsic: consistency only"),
)
CAPACITY_TOKENS = (16, 64)
CAPACITY_NUISANCE = (0.0, 0.5, 1.0)


def capacity_label(tokens: int, nuisance: float) -> str:
    """The label (run `value`) of the capacity sweep's point at `tokens` and `nuisance`."""
    return f"tokens={tokens} nuisance={nuisance:g}"


_CAPACITY = tuple(
    Variant(arm, capacity_label(t, n), args=(("tokens", t), ("nuisance", n)))
    for arm in IB_ARMS
    for t in CAPACITY_TOKENS
    for n in CAPACITY_NUISANCE
) + tuple(  # the supervised control at the fewer-tokens contrast's points (claim `capacity_bottleneck`)
    Variant("supervised", capacity_label(t, 0.5), args=(("tokens", t), ("nuisance", 0.5)))
    for t in CAPACITY_TOKENS
)

SWEEPS: dict[str, Sweep] = {
    s.name: s
    for s in (
        Sweep("main", "arms none/vib/hsic at the config defaults", tuple(Variant(a) for a in IB_ARMS)),
        Sweep(
            "controls",
            "baseline (+ LM gradient flipped), supervised controls, hsic and vib term by term, privileged Y",
            _CONTROLS,
        ),
        Sweep(
            "capacity",
            "tokens 16/64 x nuisance 0/0.5/1, baseline vs the full arms; supervised at 16/64 tokens, "
            "nuisance 0.5",
            _CAPACITY,
        ),
        Sweep(
            "beta",
            "infotok.beta x (0.1, 1, 10, 100) of each arm's default (vib, hsic)",
            _values("infotok.beta", [Times(f) for f in (0.1, 1.0, 10.0, 100.0)], ("vib", "hsic"), arg=False),
            "infotok.beta",
        ),
        Sweep("tokens", "tokens=16 vs 64", _values("tokens", (16, 64), IB_ARMS, arg=True), "tokens"),
        Sweep(
            "nuisance",
            "nuisance=0 / 0.5 / 1",
            _values("nuisance", (0.0, 0.5, 1.0), IB_ARMS, arg=True),
            "nuisance",
        ),
        Sweep(
            "no_consistency",
            "infotok.lambda_c default vs 0 (vib, hsic)",
            _values("infotok.lambda_c", (None, 0.0), ("vib", "hsic"), arg=False),
            "infotok.lambda_c",
        ),
        Sweep(
            "hsic_estimator",
            "infotok.hsic_estimator biased vs unbiased (hsic)",
            _values("infotok.hsic_estimator", ("biased", "unbiased"), ("hsic",), arg=False),
            "infotok.hsic_estimator",
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training + evaluation job of the study."""

    name: str  # directory name under <root>/runs/ and file name under the results folder
    host: str
    arm: str
    seed: int
    sweep: str
    value: Any  # the variant's label, the swept setting's effective value, or None for main
    config_arg: str  # everything after `host.py:`
    overrides: tuple[str, ...]  # `--config.<field>=<value>` flags
    steps: int  # the config's num_train_steps: a run is complete when trained this far

    def workdir(self, root: pathlib.Path) -> pathlib.Path:
        return pathlib.Path(root) / "runs" / self.name

    def _command(self, module: str, root: pathlib.Path, python: str) -> list[str]:
        return [
            python,
            "-m",
            module,
            f"--config={HOST_CONFIG}:{self.config_arg}",
            f"--workdir={self.workdir(root)}",
            *self.overrides,
        ]

    def train_command(self, root: pathlib.Path, python: str = sys.executable) -> list[str]:
        """The training binary's command line for this run (run it with cwd=REPO)."""
        return self._command("infotok_jax.train", root, python)

    def eval_command(self, root: pathlib.Path, python: str = sys.executable) -> list[str]:
        """The evaluation binary's command line for this run (same config, same workdir)."""
        return self._command("infotok_jax.evaluate", root, python)

    def manifest(self) -> dict[str, Any]:
        """The run's identity, written beside it (study_run.json) and into its result file."""
        return {
            "name": self.name,
            "host": self.host,
            "arm": self.arm,
            "seed": self.seed,
            "sweep": self.sweep,
            "value": self.value,
            "config_arg": self.config_arg,
            "overrides": list(self.overrides),
            "steps": self.steps,
        }


@cache
def _host_config_module():
    spec = importlib.util.spec_from_file_location("_study_host_config", REPO / HOST_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _default_field(config_arg: str, field: str) -> Any:
    config = _host_config_module().get_config(config_arg)
    for part in field.split("."):
        if part not in config:
            raise ValueError(
                f"config field {field!r} does not exist in {HOST_CONFIG}:{config_arg}; the sweep needs a "
                "config that has it (is the code that adds it in this checkout?)"
            )
        config = config[part]
    return config


def _default_arg(config_arg: str, key: str) -> Any:
    from infotok_jax import config_args

    return config_args.parse(config_arg, _host_config_module().ARGS)[key]


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _join_args(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def _resolve(raw: Any, default: Any) -> Any:
    if raw is None:
        return default
    if isinstance(raw, Times):
        return float(_fmt(default * raw.factor))
    if isinstance(raw, Flip):
        return type(default)(1 - default)
    if isinstance(default, bool) or not isinstance(default, int | float):
        return raw
    return type(default)(raw)


def plan(
    sweep_name: str,
    hosts: Sequence[str],
    arms: Sequence[str],
    seeds: Sequence[int],
    steps: int | None,
    extra: str = "",
    overrides: Sequence[str] = (),
) -> list[Run]:
    """The runs of `sweep_name` for these hosts, arms (intersected with the sweep's) and seeds, ordered
    host, variant, seed.

    `steps` sets the config argument `steps=` (None keeps the config's); `extra` is appended to every
    config argument string (e.g. "tiny"); `overrides` (`--config.<field>=<value>` flags of the budget, e.g.
    the evaluation's size) are appended to every run's own. Raises ValueError naming a bad host, arm or sweep.
    """
    if sweep_name not in SWEEPS:
        raise ValueError(f"--sweep={sweep_name!r} is unknown; choose one of {', '.join(SWEEPS)}")
    for value, allowed, flag in ((hosts, HOSTS, "hosts"), (arms, ARMS, "arms")):
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"--{flag}: unknown {bad}; choose from {', '.join(allowed)}")
    sweep = SWEEPS[sweep_name]
    by_label = {v.label: v for v in sweep.variants if v.label}
    runs = []
    for host in hosts:
        for variant in (v for v in sweep.variants if v.arm in arms):
            trained = by_label[variant.same_run_as] if variant.same_run_as else variant
            for seed in seeds:
                base = _join_args(
                    f"host={host}",
                    f"arm={trained.arm}",
                    f"seed={seed}",
                    f"steps={steps}" if steps is not None else "",
                    extra,
                )
                run = _make_run(sweep, trained, host, seed, base)
                run = dataclasses.replace(run, overrides=run.overrides + tuple(overrides))
                runs.append(
                    dataclasses.replace(run, arm=variant.arm, value=variant.label)
                    if variant.same_run_as
                    else run
                )
    return runs


def _make_run(sweep: Sweep, variant: Variant, host: str, seed: int, base: str) -> Run:
    settings: dict[str, Any] = {}  # every setting of the variant, effective value
    name_args, name_fields = {}, {}  # the settings that differ from the defaults
    for key, raw in variant.args:
        default = _default_arg(base, key)
        settings[key] = value = _resolve(raw, default)
        if value != default:
            name_args[key] = value
    args = sorted(name_args.items(), key=_arg_rank)
    config_arg = _join_args(base, *(f"{k}={_fmt(v)}" for k, v in args))
    for field, raw in variant.fields:
        default = _default_field(config_arg, field)
        settings[field] = value = _resolve(raw, default)
        if value != default:
            name_fields[field] = value
    fields = sorted(name_fields.items(), key=_field_rank)
    overrides = tuple(f"--config.{f}={_fmt(v)}" for f, v in fields)
    parts = [f"{k}{_fmt(v)}" for k, v in args]
    parts += [f"{FIELD_SHORT.get(f, f.rsplit('.', 1)[-1])}{_fmt(v)}" for f, v in fields]
    name = "-".join([host, variant.arm, *parts, f"s{seed}"])
    value = variant.label or (settings.get(sweep.key) if sweep.key else None)
    steps = int(_default_field(config_arg, "num_train_steps"))
    return Run(name, host, variant.arm, seed, sweep.name, value, config_arg, overrides, steps)


def effective_fields(run: Run) -> dict[str, Any]:
    """The value of every field the protocol varies (`FIELD_SHORT`) that `run` trains with: its override,
    else the config's default for its config argument."""
    overridden = dict(o.removeprefix("--config.").split("=", 1) for o in run.overrides)
    return {
        field: _resolve(overridden.get(field), _default_field(run.config_arg, field)) for field in FIELD_SHORT
    }


def _arg_rank(item: tuple[str, Any]) -> int:
    return list(_host_config_module().ARGS).index(item[0])


def _field_rank(item: tuple[str, Any]) -> tuple[int, str]:
    order = list(FIELD_SHORT)
    return (order.index(item[0]) if item[0] in order else len(order), item[0])


def alias_of(sweep: str, arm: str, label: Any) -> str:
    """The label of the variant whose run serves the variant (`arm`, `label`) of `sweep` ("" if none):
    an aliased row is one program serving two variants, and tables mark it."""
    for v in SWEEPS[sweep].variants if sweep in SWEEPS else ():
        if v.arm == arm and v.label == label:
            return v.same_run_as
    return ""
