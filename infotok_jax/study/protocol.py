"""The study protocol: which runs a sweep consists of, their names, config arguments and commands.

A run is one (host, arm, seed) of the host config at one point of a sweep. A sweep point changes either
a config argument of `experiments/configs/host.py` (`tokens=64`, `nuisance=1.0`) or a config field
through a `--config.<field>=<value>` override (`infotok.beta`, `infotok.lambda_c`,
`infotok.hsic_estimator`). A point whose value equals the config's default adds nothing to the run's
name, so it IS the main run of that (host, arm, seed): every sweep shares its default point with `main`
and nothing is trained twice. Runs of the same seed share data order, per-step keys and initialization
(all derive from `config.seed`), whatever the arm or sweep point.
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
ARMS = ("none", "vib", "hsic")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named ablation: one swept setting, its values, and the arms it applies to.

    `kind` is "arg" (a config argument such as `tokens`) or "field" (a dotted config field set with a
    `--config.` override). A value `None` in `values` means "the config's default"; with `beta_factors`
    the values are multiples of each arm's default `infotok.beta`.
    """

    name: str
    kind: str
    key: str
    values: tuple[Any, ...]
    arms: tuple[str, ...]
    short: str  # prefix of the value in run names
    beta_factors: bool = False


SWEEPS: dict[str, Sweep] = {
    s.name: s
    for s in (
        Sweep("main", "arg", "", (None,), ARMS, ""),
        Sweep("beta", "field", "infotok.beta", (0.1, 1.0, 10.0, 100.0), ("vib", "hsic"), "beta", True),
        Sweep("tokens", "arg", "tokens", (16, 64), ARMS, "tokens"),
        Sweep("nuisance", "arg", "nuisance", (0.0, 0.5, 1.0), ARMS, "nuisance"),
        Sweep("no_consistency", "field", "infotok.lambda_c", (None, 0.0), ("vib", "hsic"), "lambda_c"),
        Sweep(
            "hsic_estimator", "field", "infotok.hsic_estimator", ("biased", "unbiased"), ("hsic",), "hsic_"
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training + evaluation job of the study."""

    name: str  # directory name under <root>/runs/
    host: str
    arm: str
    seed: int
    sweep: str
    value: Any  # the swept setting's effective value (None for main)
    config_arg: str  # everything after `host.py:`
    overrides: tuple[str, ...]  # `--config.<field>=<value>` flags
    steps: int  # the config's num_train_steps: a run is complete when trained this far

    def workdir(self, root: pathlib.Path) -> pathlib.Path:
        return pathlib.Path(root) / "runs" / self.name

    def train_command(self, root: pathlib.Path, python: str = sys.executable) -> list[str]:
        """The training binary's command line for this run (run it with cwd=REPO)."""
        return [
            python,
            "-m",
            "infotok_jax.train",
            f"--config={HOST_CONFIG}:{self.config_arg}",
            f"--workdir={self.workdir(root)}",
            *self.overrides,
        ]

    def eval_command(self, root: pathlib.Path, python: str = sys.executable) -> list[str]:
        """The evaluation binary's command line for this run (same config, same workdir)."""
        return [
            python,
            "-m",
            "infotok_jax.evaluate",
            f"--config={HOST_CONFIG}:{self.config_arg}",
            f"--workdir={self.workdir(root)}",
            *self.overrides,
        ]

    def manifest(self) -> dict[str, Any]:
        """What aggregation needs to know about the run, written beside it as study_run.json."""
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
        config = config[part]
    return config


def _default_arg(config_arg: str, key: str) -> Any:
    from infotok_jax import config_args

    return config_args.parse(config_arg, _host_config_module().ARGS)[key]


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _join_args(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def plan(
    sweep_name: str,
    hosts: Sequence[str],
    arms: Sequence[str],
    seeds: Sequence[int],
    steps: int | None,
    extra: str = "",
) -> list[Run]:
    """The runs of `sweep_name` for these hosts, arms (intersected with the sweep's) and seeds.

    `steps` sets the config argument `steps=` (None keeps the config's); `extra` is appended to every
    config argument string (e.g. "tiny"). Raises ValueError naming a bad host, arm or sweep.
    """
    if sweep_name not in SWEEPS:
        raise ValueError(f"--sweep={sweep_name!r} is unknown; choose one of {', '.join(SWEEPS)}")
    for value, allowed, flag in ((hosts, HOSTS, "hosts"), (arms, ARMS, "arms")):
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"--{flag}: unknown {bad}; choose from {', '.join(allowed)}")
    sweep = SWEEPS[sweep_name]
    runs = []
    for host in hosts:
        for arm in [a for a in arms if a in sweep.arms]:
            for raw in sweep.values:
                for seed in seeds:
                    base = _join_args(
                        f"host={host}",
                        f"arm={arm}",
                        f"seed={seed}",
                        f"steps={steps}" if steps is not None else "",
                        extra,
                    )
                    runs.append(_make_run(sweep, host, arm, seed, raw, base))
    return runs


def _make_run(sweep: Sweep, host: str, arm: str, seed: int, raw: Any, base: str) -> Run:
    name = f"{host}-{arm}"
    config_arg, overrides, value = base, (), None
    if sweep.kind == "arg" and sweep.key:
        default = _default_arg(base, sweep.key)
        value = default if raw is None else type(default)(raw)
        if value != default:
            config_arg = _join_args(base, f"{sweep.key}={_fmt(value)}")
            name += f"-{sweep.short}{_fmt(value)}"
    elif sweep.kind == "field":
        default = _default_field(base, sweep.key)
        if sweep.beta_factors:
            value = float(_fmt(default * raw))
        else:
            value = default if raw is None else raw
        if value != default:
            overrides = (f"--config.{sweep.key}={_fmt(value)}",)
            name += f"-{sweep.short}{_fmt(value)}"
    steps = int(_default_field(config_arg, "num_train_steps"))
    return Run(f"{name}-s{seed}", host, arm, seed, sweep.name, value, config_arg, overrides, steps)
