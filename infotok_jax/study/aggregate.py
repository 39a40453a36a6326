"""Collects the study's per-run results and reduces them to mean +- std over seeds (Markdown and JSON).

Per run it reads the evaluation binary's `eval/step_<N>/metrics.json` (understanding accuracy,
oracle-scored generation, PSNR on the validation and holdout splits) and the training binary's
`metrics.jsonl` (the last in-training evaluation's rate and nHSIC, and the median of the logged
`steps_per_sec`). The step-time ratio of a run is its baseline's median steps/s over its own, with the
baseline being the `none` arm of the same host and seed at the same sweep point when that exists,
else the main baseline `<host>-none-s<seed>`; > 1 means slower than the baseline.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from infotok_jax.study import runner
from infotok_jax.study.protocol import Run
from infotok_jax.training import reporting


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    source: str  # "eval" (metrics.json key) | "final" (last metrics.jsonl value) | "derived"
    digits: int = 3


METRICS = (
    Metric("validation/understanding/accuracy", "understanding acc (val)", "eval"),
    Metric("holdout/understanding/accuracy", "understanding acc (holdout)", "eval"),
    Metric("validation/generation/all_correct", "generation all-correct (val)", "eval"),
    Metric("holdout/generation/all_correct", "generation all-correct (holdout)", "eval"),
    Metric("validation/reconstruction/psnr", "PSNR dB (val)", "eval", 2),
    Metric("eval/rate_bits_per_token", "rate bits/token", "final"),
    Metric("eval/nhsic_xz", "nHSIC(X,Z)", "final"),
    Metric("eval/nhsic_zy", "nHSIC(Z,Y)", "final"),
    Metric("step_time_vs_baseline", "step time / baseline", "derived", 2),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


def median_steps_per_sec(history: dict[int, dict[str, float]]) -> float | None:
    """Median of the `steps_per_sec` values a run logged (None if it logged none)."""
    values = [r["steps_per_sec"] for r in history.values() if "steps_per_sec" in r]
    return statistics.median(values) if values else None


def information_curve(history: dict[int, dict[str, float]]) -> list[tuple[int, float, float]]:
    """(step, eval/nhsic_xz, eval/nhsic_zy) of every in-training evaluation, by step."""
    return [
        (s, r["eval/nhsic_xz"], r["eval/nhsic_zy"])
        for s, r in sorted(history.items())
        if math.isfinite(r.get("eval/nhsic_xz", math.nan)) and math.isfinite(r.get("eval/nhsic_zy", math.nan))
    ]


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
        scores = json.loads(eval_path.read_text())
        record["metrics"].update(
            {m.key: scores[m.key] for m in METRICS if m.source == "eval" and m.key in scores}
        )
    history = reporting.read_metrics(workdir)
    for m in METRICS:
        if m.source == "final":
            steps = [s for s in sorted(history) if m.key in history[s]]
            if steps:
                record["metrics"][m.key] = history[steps[-1]][m.key]
    record["metrics"] = {k: float(v) for k, v in record["metrics"].items() if math.isfinite(v)}
    record["steps_per_sec"] = median_steps_per_sec(history)
    record["information_curve"] = information_curve(history)
    return record


def _baseline_sps(run: Run, root: pathlib.Path) -> float | None:
    same_point = run.name.replace(f"{run.host}-{run.arm}-", f"{run.host}-none-", 1)
    for name in (same_point, f"{run.host}-none-s{run.seed}"):
        workdir = pathlib.Path(root) / "runs" / name
        if workdir.is_dir():
            return median_steps_per_sec(reporting.read_metrics(workdir))
    return None


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
        base, own = _baseline_sps(run, root), record["steps_per_sec"]
        if base and own:
            record["metrics"]["step_time_vs_baseline"] = base / own
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
            },
        )
        group["seeds"].append(record["seed"])
        group["complete"] += record["status"] == "complete"
        for k, v in record["metrics"].items():
            group["per_metric"].setdefault(k, []).append(v)
    summary = []
    for group in groups.values():
        per_metric = group.pop("per_metric")
        group["metrics"] = {k: summarize(per_metric[k]) for k in METRIC_KEYS if k in per_metric}
        summary.append(group)
    return {"sweep": sweep, "metrics": {m.key: m.label for m in METRICS}, "groups": summary, "runs": records}


def _hashable(value: Any) -> Any:
    return json.dumps(value)


def _cell(stats: dict[str, Any] | None, digits: int) -> str:
    if not stats:
        return "—"
    if stats["n"] < 2:  # a sample std needs two seeds
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(results: dict[str, Any], title: str) -> str:
    """The results as a Markdown table: one row per (host, arm[, swept value]), mean ± std over seeds."""
    swept = results["sweep"] != "main"
    head = ["host", "arm", *(["value"] if swept else []), "seeds (complete)", *(m.label for m in METRICS)]
    lines = [
        f"## {title}",
        "",
        "mean ± sample std (ddof=1) over seeds (no ± with one seed); — = not measured or not defined.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for g in results["groups"]:
        cells = [
            g["host"],
            g["arm"],
            *([str(g["value"])] if swept else []),
            f"{len(g['seeds'])} ({g['complete']})",
            *(_cell(g["metrics"].get(m.key), m.digits) for m in METRICS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: pathlib.Path, title: str) -> dict[str, pathlib.Path]:
    """Writes table.md and results.json into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / "table.md", "json": out_dir / "results.json"}
    paths["table"].write_text(markdown(results, title))
    paths["json"].write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    return paths
