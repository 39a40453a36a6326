"""The capacity claim as contrasts of paired gains: does an IB arm gain more over the baseline when the
images carry more nuisance, and when the tokenizer has fewer tokens?

The paper's reading (docs/infotok.md): a bottleneck helps more when there is more to drop. In the
`capacity` sweep every arm runs at every point (tokens x nuisance) for every seed, so a run's gain is
paired: g_s(p) = arm_s(p) - baseline_s(p), the `none` run of the same host, seed and point. A contrast
between points a and b is the per-seed difference of gains, g_s(a) - g_s(b), summarized with the same
Student-t interval over seeds as every paired difference of the study (`aggregate.t_interval`); it reads
as supported only when its interval excludes 0, positive meaning the gain is larger at a. Runs whose
baseline is not the same-point `none` run (a missing point falls back to the main baseline in
`aggregate`) are left out of the gains, so a contrast never mixes points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from infotok_jax.study.aggregate import METRICS, REPORT_SPLIT, same_point_baseline, t_interval
from infotok_jax.study.protocol import CAPACITY_NUISANCE, CAPACITY_TOKENS, capacity_label


@dataclasses.dataclass(frozen=True)
class Contrast:
    """gain at `point_a` minus gain at `point_b` (capacity labels); `label` says what a positive value
    would support."""

    label: str
    point_a: str
    point_b: str


_FEW, _MANY = min(CAPACITY_TOKENS), max(CAPACITY_TOKENS)
_LOW, _MID, _HIGH = CAPACITY_NUISANCE
CONTRASTS = (
    *(
        Contrast(
            f"gain grows with nuisance ({_HIGH:g} vs {_LOW:g}, {t} tokens)",
            capacity_label(t, _HIGH),
            capacity_label(t, _LOW),
        )
        for t in CAPACITY_TOKENS
    ),
    Contrast(
        f"gain larger with fewer tokens ({_FEW} vs {_MANY}, nuisance {_MID:g})",
        capacity_label(_FEW, _MID),
        capacity_label(_MANY, _MID),
    ),
)
# the two tasks of the claim, and the direct measure of dropping the nuisance (lower: more dropped)
CONTRAST_METRICS = tuple(
    m
    for m in METRICS
    if m.key
    in (
        f"{REPORT_SPLIT}/understanding/accuracy",
        f"{REPORT_SPLIT}/generation/all_correct",
        f"{REPORT_SPLIT}/information/probe_r2_zn_flat",
    )
)


def gains(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    """(host, arm, point) -> seed -> metric -> run minus its same-point baseline, for every IB-arm record
    (`aggregate` records) that has one."""
    out: dict[tuple[str, str, str], dict[int, dict[str, float]]] = {}
    for r in records:
        if r["arm"] == "none" or r["baseline"] != same_point_baseline(r["name"], r["host"], r["arm"]):
            continue
        diffs = {
            m.key: r["metrics"][m.key] - r["baseline_metrics"][m.key]
            for m in CONTRAST_METRICS
            if m.key in r["metrics"] and m.key in r["baseline_metrics"]
        }
        out.setdefault((r["host"], r["arm"], r["value"]), {})[r["seed"]] = diffs
    return out


def contrasts(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (host, arm, contrast) with at least one seed at both points: {host, arm, contrast,
    intervals: {metric key: t_interval of the per-seed differences of gains}}."""
    by_point = gains(records)
    rows = []
    for host, arm in sorted({(h, a) for h, a, _ in by_point}):
        for c in CONTRASTS:
            at_a, at_b = by_point.get((host, arm, c.point_a), {}), by_point.get((host, arm, c.point_b), {})
            seeds = sorted(set(at_a) & set(at_b))
            intervals = {}
            for m in CONTRAST_METRICS:
                diffs = [
                    at_a[s][m.key] - at_b[s][m.key] for s in seeds if m.key in at_a[s] and m.key in at_b[s]
                ]
                if diffs:
                    intervals[m.key] = t_interval(diffs)
            if intervals:
                rows.append({"host": host, "arm": arm, "contrast": c.label, "intervals": intervals})
    return rows
