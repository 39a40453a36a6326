"""The study's results as Markdown and JSON: per-arm means, paired-difference tables, seeds needed.

Renders what `aggregate.aggregate` computed (nothing is recomputed here): one row per (host, arm[, swept
value]) with mean ± sample std over seeds, then the paired differences from the baseline and from each
reference arm of `aggregate.REFERENCES` with their t intervals, the capacity contrasts when the results
hold them (`capacity.contrasts`), then the seeds the measured spread needs.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from infotok_jax.study import capacity, protocol
from infotok_jax.study.aggregate import CHOICE_SPLIT, METRICS, REFERENCES, STEP_TIME_MEASURES


def _cell(stats: dict[str, Any] | None, digits: int) -> str:
    if not stats:
        return "—"
    if stats["n"] < 2:  # a sample std needs two seeds
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _diff_cell(paired: dict[str, Any] | None, digits: int) -> str:
    """'+0.031 [+0.012, +0.050] *' (* = the interval excludes 0); one seed: the difference alone."""
    if not paired:
        return "—"
    if paired["n"] < 2:
        return f"{paired['mean']:+.{digits}f} (1 seed)"
    mark = " *" if paired["supported"] else ""
    return f"{paired['mean']:+.{digits}f} [{paired['lo']:+.{digits}f}, {paired['hi']:+.{digits}f}]{mark}"


def markdown(results: dict[str, Any], title: str) -> str:
    """The results as Markdown: per (host, arm[, swept value]) mean ± std over seeds, then the paired
    differences from the baseline with their 95% t intervals, then the seeds the measured spread needs."""
    swept = results["sweep"] != "main"
    ident = ["host", "arm", *(["value"] if swept else [])]
    shown = [m for m in METRICS if m.in_table]
    head = [*ident, "seeds (complete)", *(m.label for m in shown)]
    lines = [
        f"## {title}",
        "",
        f"Split: {results['split']} (no default, sampler or weight was chosen on it) and the holdout. "
        "mean ± sample std (ddof=1) over seeds (no ± with one seed); — = not measured or not defined.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]

    def ident_cells(g: dict[str, Any]) -> list[str]:
        alias = protocol.alias_of(results["sweep"], g["arm"], g["value"])
        value = f"{g['value']} (alias: the run of '{alias}')" if alias else str(g["value"])
        return [g["host"], g["arm"], *([value] if swept else [])]

    for g in results["groups"]:
        cells = [
            *ident_cells(g),
            f"{len(g['seeds'])} ({g['complete']})",
            *(_cell(g["metrics"].get(m.key), m.digits) for m in shown),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _floor_lines(results["runs"])
    measures = results.get("step_time_measures") or {}
    if measures:
        parts = "; ".join(f"{STEP_TIME_MEASURES[k]}: {n} run(s)" for k, n in sorted(measures.items()))
        lines += [
            "",
            f"Step time / baseline: median steps/s of the baseline over the run's own, measured as {parts}. "
            "A run and a baseline measured differently get no ratio.",
        ]
    paired = [m for m in shown if m.paired]
    level = round(100 * results["confidence"])
    lines += [
        "",
        f"Paired differences from the baseline (the `none` arm of the same host and seed at the same sweep "
        f"point, else the main baseline): mean over seeds [{level}% Student-t interval over seeds]; "
        "* = the interval excludes 0 (the only differences that read as supported).",
        "",
        *_diff_head(ident, paired),
    ]
    lines += _diff_rows(results["groups"], lambda g: g["paired"], ident_cells, paired)
    choice = [m for m in METRICS if m.key.startswith(f"{CHOICE_SPLIT}/") and m.paired]
    choice_rows = _diff_rows(results["groups"], lambda g: g["paired"], ident_cells, choice)
    if choice_rows:
        lines += [
            "",
            f"The same paired differences on the {CHOICE_SPLIT} split, where settings are chosen (e.g. each "
            "host's baseline with or without the LM gradient into its tokenizer):",
            "",
            *_diff_head(ident, choice),
            *choice_rows,
        ]
    for reference in REFERENCES:
        of_reference = lambda g, r=reference.arm: g.get("paired_vs", {}).get(r)
        if any(of_reference(g) for g in results["groups"]):
            lines += [
                "",
                f"Paired differences from {reference.description}; same intervals and *; the "
                f"{CHOICE_SPLIT} columns are where settings are chosen.",
                "",
                *_diff_head(ident, paired + choice),
                *_diff_rows(results["groups"], of_reference, ident_cells, paired + choice),
            ]
    if results.get("contrasts"):
        lines += ["", *_contrast_lines(results["contrasts"], level)]
    if results["seeds_needed"]:
        lines += [
            "",
            f"Seeds for a {level}% interval half-width below the resolution, from the pooled sd of "
            "the paired differences measured here:",
            "",
        ]
        for m in paired:
            need = results["seeds_needed"].get(m.key)
            if need:
                lines.append(
                    f"- {m.label}: sd {need['sd']:.{m.digits + 1}f}, resolution {need['resolution']:g}"
                    f" -> {need['seeds']} seeds"
                )
    return "\n".join(lines) + "\n"


FLOOR_KEYS = ("test/understanding/floor_majority_accuracy",)


def _floor_lines(records: list[dict[str, Any]]) -> list[str]:
    """The majority floor per host and seed (it is a property of the seed's test examples, so it differs
    by seed, not by arm): one line per host."""
    floors: dict[str, dict[int, float]] = {}
    for r in records:
        for key in FLOOR_KEYS:
            if key in r["metrics"]:
                floors.setdefault(r["host"], {}).setdefault(r["seed"], r["metrics"][key])
    if not floors:
        return []
    lines = [
        "",
        "Majority floor of understanding (test) per seed, the best constant answer per question type:",
    ]
    for host, by_seed in floors.items():
        lines.append(f"- {host}: " + ", ".join(f"seed {s} {v:.3f}" for s, v in sorted(by_seed.items())))
    return lines


def _contrast_lines(rows: list[dict[str, Any]], level: int) -> list[str]:
    """The capacity claim (`capacity.contrasts`): per-seed gain over the same-point baseline at one
    point minus at another, with its t interval."""
    metrics = capacity.CONTRAST_METRICS
    lines = [
        "The capacity claim: each arm's paired gain over the baseline at one sweep point minus its gain at "
        f"another, per seed, mean [{level}% Student-t interval over seeds]; * = the interval excludes 0. "
        "Positive: the gain is larger where the contrast says (more nuisance, fewer tokens); for the probe "
        "R^2 of the nuisance, negative means the arm drops more of it there.",
        "",
        "| " + " | ".join(["host", "arm", "contrast", "seeds", *(m.label for m in metrics)]) + " |",
        "|" + " --- |" * (4 + len(metrics)),
    ]
    for row in rows:
        n = max(p["n"] for p in row["intervals"].values())
        cells = [row["host"], row["arm"], row["contrast"], str(n)]
        cells += [_diff_cell(row["intervals"].get(m.key), m.digits) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _diff_head(ident: list[str], metrics) -> list[str]:
    """The header and separator lines of a paired-difference table."""
    return [
        "| " + " | ".join([*ident, "pairs", *(m.label for m in metrics)]) + " |",
        "|" + " --- |" * (len(ident) + 1 + len(metrics)),
    ]


def _diff_rows(groups, intervals_of, ident_cells, metrics) -> list[str]:
    """Table rows of the paired differences `intervals_of(group)` ({metric: interval}) per group."""
    rows = []
    for g in groups:
        intervals = intervals_of(g)
        if not intervals:
            continue
        n = max(p["n"] for p in intervals.values())
        cells = [*ident_cells(g), str(n), *(_diff_cell(intervals.get(m.key), m.digits) for m in metrics)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write(results: dict[str, Any], out_dir: pathlib.Path, title: str) -> dict[str, pathlib.Path]:
    """Writes table.md and results.json into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / "table.md", "json": out_dir / "results.json"}
    paths["table"].write_text(markdown(results, title))
    paths["json"].write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    return paths
