"""Collects the study's per-run results: mean +- std per arm and paired differences (rendered by `tables`).

Per run it reads the evaluation binary's `eval/step_<N>/metrics.json` on `REPORT_SPLIT` = "test" (a split
no default, sampler or weight was chosen on; validation, `CHOICE_SPLIT`, is where those choices are made,
and its paired differences are kept for them) and the compositional holdout: understanding accuracy
beside its image-blind and majority floors, generation all-correct / color / count beside the oracle on
reconstructions (a reference, not an upper bound), PSNR, and the information plane at evaluation (nHSIC
excess over the permutation floor, flat token view, 512 examples); from the training binary's
`metrics.jsonl` the last rate and the median `steps_per_sec`.

Paired statistics: runs of one seed share initialization and data order across arms, so each run is
compared with its baseline of the same host and seed: the `none` arm at the same sweep point when that
run exists, else the main baseline `<host>-none-s<seed>`. Per metric, the per-seed differences d_s =
run_s - baseline_s give a mean difference with a 95% Student-t interval over seeds, mean(d) +- t_{0.975,
n-1} * sd(d) / sqrt(n); a difference reads as supported only when the interval excludes 0 (n >= 2
needed). Runs are also paired with other arms of their host and seed (`REFERENCES`, `reference_run`): every
IB run with the supervised control (the issue credits the IB arms only with what they add beyond the
supervision their terms carry), the main HSIC run with the main VIB run (the paper's HSIC-vs-VIB
claim), and in the controls sweep every term ablation with its own arm's full run (what each term
does). `seeds_needed` turns the measured spread of the differences into the number of seeds
that resolves a given difference. The step-time ratio is baseline steps/s over the run's own (> 1: slower
than the baseline). Runs logged since the trainer's windowed rate (`steps_per_sec_window` present)
measure training steps only; older histories hold a whole-run rate that includes compilation, evaluation
and checkpoints. Each run records its measure, a pair of different measures gets no ratio, and the table
says which measures its column holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats as scipy_stats

from infotok_jax.study import runner
from infotok_jax.study.protocol import Run
from infotok_jax.training import reporting

REPORT_SPLIT = "test"  # the split the study's tables report; see the module docstring
CHOICE_SPLIT = "validation"  # the split settings are chosen on (e.g. each baseline's LM gradient)
CONFIDENCE = 0.95
OWN_ARM = "full"  # a Reference.arm meaning the run's own arm at its defaults
# What a setting is chosen by (each baseline's LM gradient, docs/study.md): the two tasks of a unified model
CHOICE_TERMS = (f"{CHOICE_SPLIT}/understanding/accuracy", f"{CHOICE_SPLIT}/generation/all_correct")
CHOICE_SCORE = f"{CHOICE_SPLIT}/choice_score"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Another run of the same host and seed that runs of `paired_arms` are compared with: the main run
    `<host>-<arm>-s<seed>` of `arm` (`OWN_ARM`: of the run's own arm); `main_only`: only the paired arms'
    main runs; `sweeps`: only in these sweeps (empty: all)."""

    arm: str
    paired_arms: tuple[str, ...]
    main_only: bool
    description: str
    sweeps: tuple[str, ...] = ()


REFERENCES = (
    Reference(
        "supervised",
        ("vib", "hsic"),
        False,
        "the supervised control (`<host>-supervised-s<seed>`: the same text signal through a linear probe "
        "and caption alignment, no IB): what an IB arm adds beyond the supervision its terms carry",
    ),
    Reference("vib", ("hsic",), True, "VIB (`<host>-vib-s<seed>`): HSIC against the other IB estimator"),
    Reference(
        OWN_ARM,
        ("supervised", "vib", "hsic"),
        False,
        "the full variant of the run's own arm (`<host>-<arm>-s<seed>`): what switching terms off changes "
        "(negative: the terms switched off helped)",
        sweeps=("controls",),
    ),
)


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    source: str  # "eval" (metrics.json key) | "final" (last metrics.jsonl value) | "derived"
    digits: int = 3
    resolution: float = 0.02  # the difference `seeds_needed` reports a seed count for
    paired: bool = True  # shown in the paired-difference table
    in_table: bool = True  # False: not in the main tables (the plots, or the choice table)


def _t(key: str) -> str:
    return f"{REPORT_SPLIT}/{key}"


METRICS = (
    Metric(_t("understanding/accuracy"), f"understanding acc ({REPORT_SPLIT})", "eval"),
    Metric(_t("understanding/floor_blind_accuracy"), "image-blind floor", "eval", paired=False),
    # the best constant answer per question type on the seed's test examples: it differs by seed
    Metric(_t("understanding/floor_majority_accuracy"), "majority floor", "eval", paired=False),
    Metric("holdout/understanding/accuracy", "understanding acc (holdout)", "eval"),
    Metric(_t("generation/all_correct"), f"gen all-correct ({REPORT_SPLIT})", "eval"),
    Metric(_t("generation/color_correct"), "gen color", "eval"),
    Metric(_t("generation/count_correct"), "gen count", "eval"),
    Metric(_t("generation/ceiling_recon_all_correct"), "oracle on recon all-correct", "eval", paired=False),
    Metric("holdout/generation/all_correct", "gen all-correct (holdout)", "eval"),
    Metric(_t("reconstruction/psnr"), f"PSNR dB ({REPORT_SPLIT})", "eval", 2, 0.5),
    Metric(_t("information/excess_nhsic_xz_flat"), "nHSIC(X,Z) - floor", "eval", 3, 0.01),
    Metric(_t("information/excess_nhsic_zy_flat"), "nHSIC(Z,Y) - floor", "eval", 3, 0.01),
    Metric(_t("information/excess_nhsic_zn_flat"), "nHSIC(Z,N) - floor", "eval", 3, 0.005),
    Metric(_t("information/probe_r2_zn_flat"), "probe R^2 Z->N", "eval", 3, 0.02),
    Metric(_t("information/excess_nhsic_xz_pooled"), "nHSIC(X,Z) pooled - floor", "eval", in_table=False),
    Metric(_t("information/excess_nhsic_zy_pooled"), "nHSIC(Z,Y) pooled - floor", "eval", in_table=False),
    Metric(_t("information/excess_nhsic_zn_pooled"), "nHSIC(Z,N) pooled - floor", "eval", in_table=False),
    Metric("eval/rate_bits_per_token", "rate bits/token", "final", 3, 0.1),
    Metric(CHOICE_TERMS[0], f"understanding acc ({CHOICE_SPLIT})", "eval", in_table=False),
    Metric(CHOICE_TERMS[1], f"gen all-correct ({CHOICE_SPLIT})", "eval", in_table=False),
    Metric(CHOICE_SCORE, "understanding + gen all-correct: the choice score", "derived", in_table=False),
    Metric("step_time_vs_baseline", "step time / baseline", "derived", 2, 0.05, paired=False),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


STEP_TIME_MEASURES = {
    "train": "training steps only, a window of recent steps (compile, evaluation and checkpoints excluded)",
    "wall": "whole-run wall clock incl. compilation, evaluation and checkpoints (runs logged before the "
    "windowed rate)",
}


def steps_per_sec_measure(history: dict[int, dict[str, float]]) -> str | None:
    """'train' if the run logged the windowed training-only rate, 'wall' for the older cumulative rate,
    None if it logged no rate (keys of `STEP_TIME_MEASURES`)."""
    if any("steps_per_sec_window" in r for r in history.values()):
        return "train"
    return "wall" if any("steps_per_sec" in r for r in history.values()) else None


def median_steps_per_sec(history: dict[int, dict[str, float]]) -> float | None:
    """Median of the `steps_per_sec` values a run logged (None if it logged none)."""
    values = [r["steps_per_sec"] for r in history.values() if "steps_per_sec" in r]
    return statistics.median(values) if values else None


def collect_run(run: Run, root: pathlib.Path) -> dict[str, Any]:
    """One run's record: identity, status, metrics (absent ones left out), median steps/s, plane curve."""
    workdir = run.workdir(root)
    record: dict[str, Any] = {
        "name": run.name,
        "host": run.host,
        "arm": run.arm,
        "seed": run.seed,
        "value": run.value,
        "status": runner.status(run, root),
        "metrics": {},
    }
    eval_path = runner.eval_metrics_path(workdir, run.steps)
    if eval_path.exists():
        scores = json.loads(eval_path.read_text())  # null: undefined (e.g. the nuisance's at nuisance 0)
        record["metrics"].update(
            {m.key: scores[m.key] for m in METRICS if m.source == "eval" and scores.get(m.key) is not None}
        )
    if all(k in record["metrics"] for k in CHOICE_TERMS):
        record["metrics"][CHOICE_SCORE] = sum(record["metrics"][k] for k in CHOICE_TERMS)
    history = reporting.read_metrics(workdir)
    for m in METRICS:
        if m.source == "final":
            steps = [s for s in sorted(history) if m.key in history[s]]
            if steps:
                record["metrics"][m.key] = history[steps[-1]][m.key]
    record["metrics"] = {k: float(v) for k, v in record["metrics"].items() if math.isfinite(v)}
    record["steps_per_sec"] = median_steps_per_sec(history)
    record["steps_per_sec_measure"] = steps_per_sec_measure(history)
    return record


def same_point_baseline(name: str, host: str, arm: str) -> str:
    """The name of the `none` run at the same host, seed and sweep point as run `name` of `arm`."""
    return name.replace(f"{host}-{arm}-", f"{host}-none-", 1)


def baseline_run(run: Run, root: pathlib.Path) -> Run | None:
    """The run `run` is paired with: the `none` arm of the same host and seed at the same sweep point if
    its workdir exists, else the main baseline `<host>-none-s<seed>`; never the run itself."""
    for name in (same_point_baseline(run.name, run.host, run.arm), f"{run.host}-none-s{run.seed}"):
        if name != run.name and (pathlib.Path(root) / "runs" / name).is_dir():
            return dataclasses.replace(run, name=name, arm="none")
    return None


def reference_run(run: Run, root: pathlib.Path, reference: Reference, sweep: str) -> Run | None:
    """The main run of `reference`'s arm with the same host and seed when `run` is of one of its paired
    arms (and, with `main_only`, their main variant), `sweep` is one of its sweeps, the reference is not
    `run` itself and its workdir exists."""
    main = f"{run.host}-{run.arm}-s{run.seed}"
    if run.arm not in reference.paired_arms or (reference.main_only and run.name != main):
        return None
    if reference.sweeps and sweep not in reference.sweeps:
        return None
    arm = run.arm if reference.arm == OWN_ARM else reference.arm
    name = f"{run.host}-{arm}-s{run.seed}"
    if name != run.name and (pathlib.Path(root) / "runs" / name).is_dir():
        return dataclasses.replace(run, name=name, arm=arm)
    return None


def t_interval(diffs: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of paired differences with its Student-t interval over seeds (no bounds with one seed)."""
    values = [float(d) for d in diffs]
    n = len(values)
    mean = sum(values) / n
    if n < 2:  # no spread to measure: no interval (None keeps results.json strict JSON)
        return {"mean": mean, "lo": None, "hi": None, "sd": None, "n": n, "diffs": values, "supported": False}
    else:
        sd = statistics.stdev(values)
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
    supported = n >= 2 and (lo > 0 or hi < 0)
    return {"mean": mean, "lo": lo, "hi": hi, "sd": sd, "n": n, "diffs": values, "supported": supported}


def seeds_needed(sd: float, resolution: float, confidence: float = CONFIDENCE, max_seeds: int = 100) -> int:
    """Fewest seeds n >= 2 whose t interval half-width t_{n-1} * sd / sqrt(n) is below `resolution`
    (max_seeds when none up to it is; 2 when sd is 0)."""
    if not sd > 0:
        return 2
    for n in range(2, max_seeds + 1):
        if float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n) < resolution:
            return n
    return max_seeds


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """mean, sample std (ddof=1; 0 for a single value), n and the values themselves."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def aggregate(runs: Sequence[Run], root: pathlib.Path, sweep: str) -> dict[str, Any]:
    """Per-run records and per-(host, arm, value) summaries of `runs` (the plan of one sweep)."""
    records = []
    for run in runs:
        record = collect_run(run, root)
        base_run = baseline_run(run, root)
        base = collect_run(base_run, root) if base_run is not None else None
        record["baseline"] = base_run.name if base_run is not None else None
        record["baseline_metrics"] = base["metrics"] if base is not None else {}
        record["reference_metrics"] = {}
        for reference in REFERENCES:
            other = reference_run(run, root, reference, sweep)
            if other is not None:
                record["reference_metrics"][reference.arm] = collect_run(other, root)["metrics"]
        if base is None and run.arm == "none":  # the baseline itself: its own steps/s
            base = record
        same_measure = base is not None and base["steps_per_sec_measure"] == record["steps_per_sec_measure"]
        if same_measure and base["steps_per_sec"] and record["steps_per_sec"]:
            record["metrics"]["step_time_vs_baseline"] = base["steps_per_sec"] / record["steps_per_sec"]
        records.append(record)
    groups: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["host"], record["arm"], _hashable(record["value"]))
        group = groups.setdefault(
            key,
            {
                "host": record["host"],
                "arm": record["arm"],
                "value": record["value"],
                "seeds": [],
                "complete": 0,
                "per_metric": {},
                "per_diff": {},
                "per_reference_diff": {},
            },
        )
        group["seeds"].append(record["seed"])
        group["complete"] += record["status"] == "complete"
        for k, v in record["metrics"].items():
            group["per_metric"].setdefault(k, []).append(v)
            if record["baseline"] is not None and k in record["baseline_metrics"]:
                group["per_diff"].setdefault(k, []).append(v - record["baseline_metrics"][k])
            for reference, metrics in record["reference_metrics"].items():
                if k in metrics:
                    diffs = group["per_reference_diff"].setdefault(reference, {})
                    diffs.setdefault(k, []).append(v - metrics[k])
    summary = []
    for group in groups.values():
        per_metric = group.pop("per_metric")
        group["metrics"] = {k: summarize(per_metric[k]) for k in METRIC_KEYS if k in per_metric}
        group["paired"] = _intervals(group.pop("per_diff"))
        group["paired_vs"] = {ref: _intervals(d) for ref, d in group.pop("per_reference_diff").items()}
        summary.append(group)
    return {
        "sweep": sweep,
        "split": REPORT_SPLIT,
        "confidence": CONFIDENCE,
        "metrics": {m.key: m.label for m in METRICS},
        "groups": summary,
        "seeds_needed": _seeds_needed(summary),
        "step_time_measures": _measure_counts(records),
        "runs": records,
    }


def _intervals(diffs: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    return {m.key: t_interval(diffs[m.key]) for m in METRICS if m.paired and diffs.get(m.key)}


def _measure_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many runs measured their steps/s each way (`STEP_TIME_MEASURES`)."""
    counts: dict[str, int] = {}
    for record in records:
        if record["steps_per_sec_measure"] is not None:
            counts[record["steps_per_sec_measure"]] = counts.get(record["steps_per_sec_measure"], 0) + 1
    return counts


def _seeds_needed(groups: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per paired metric: the pooled sd of the per-seed differences over all groups with >= 2 seeds, and
    the seeds whose 95% interval half-width resolves the metric's `resolution`."""
    out = {}
    for m in METRICS:
        parts = [g["paired"][m.key] for g in groups if m.key in g["paired"] and g["paired"][m.key]["n"] >= 2]
        if not parts:
            continue
        dof = sum(p["n"] - 1 for p in parts)
        pooled = math.sqrt(sum((p["n"] - 1) * p["sd"] ** 2 for p in parts) / dof)
        out[m.key] = {"sd": pooled, "resolution": m.resolution, "seeds": seeds_needed(pooled, m.resolution)}
    return out


def _hashable(value: Any) -> Any:
    return json.dumps(value)
