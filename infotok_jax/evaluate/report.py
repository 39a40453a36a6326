"""Evaluation results -> flat named metrics with their chance levels, a Markdown table, JSON and grids.

Results are nested mappings, e.g. {"validation": {"understanding": {...}, "generation": {...}},
"holdout": {...}} as returned by the `evaluate_*` functions. `flatten_metrics` keeps the scalar entries
under "/"-joined names ("validation/understanding/accuracy_color"); non-scalar entries such as "examples"
are dropped. A metric `m` has a chance level when its section also holds `chance_m`; the table prints such
cells as "value (chance)". JSON is written with sorted keys and non-finite numbers as null, so two runs
with equal results give identical bytes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Number
from typing import Any

import jax

from infotok_jax.data.text_tokenizer import TextTokenizer
from infotok_jax.evaluate import generation, grids, reconstruction, understanding

CHANCE_PREFIX = "chance_"
_COUNT_ROWS = ("num_examples", "num_prompts")  # the only counts shown in the table


def _is_scalar(value: Any) -> bool:
    return isinstance(value, Number) or (hasattr(value, "ndim") and value.ndim == 0)


def flatten_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar leaves of a nested mapping as {"a/b/metric": float}, in insertion order."""
    out: dict[str, float] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, key + "/"))
        elif _is_scalar(value):
            out[key] = float(value)
    return out


def format_value(value: float) -> str:
    """Compact cell text: 3 decimals, scientific for magnitudes below 0.01, 'n/a' for NaN."""
    if math.isnan(value):
        return "n/a"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3f}"


def _rows(columns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """(section, metric) rows in first-seen order, without chance levels, per-type counts and examples."""
    rows: list[tuple[str, str]] = []
    for sections in columns.values():
        for section, metrics in sections.items():
            for metric, value in metrics.items():
                shown = not metric.startswith(CHANCE_PREFIX) and (
                    not metric.startswith("num_") or metric in _COUNT_ROWS)
                if shown and _is_scalar(value) and (section, metric) not in rows:
                    rows.append((section, metric))
    return rows


def markdown_table(columns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A Markdown table: one row per (section, metric), one column per key of `columns` (a split or host).

    `columns` maps a column name to {section: result dict}. A cell is "value (chance)" when the section
    holds chance_<metric>, "value" otherwise, and empty when the column lacks the metric.
    """
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for section, metric in _rows(columns):
        cells = []
        for name in names:
            result = columns[name].get(section, {})
            if metric not in result:
                cells.append("")
                continue
            value = float(result[metric])
            text = str(int(value)) if metric in _COUNT_ROWS else format_value(value)
            chance = result.get(CHANCE_PREFIX + metric)
            cells.append(text if chance is None else f"{text} ({format_value(float(chance))})")
        lines.append(f"| {section} {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(tree: Mapping[str, Any]) -> str:
    """Deterministic JSON of the flattened scalar metrics (sorted keys, non-finite numbers as null)."""
    flat = {k: (v if math.isfinite(v) else None) for k, v in flatten_metrics(tree).items()}
    return json.dumps(flat, indent=1, sort_keys=True, allow_nan=False) + "\n"


def evaluate_splits(
    make_batches: Callable[[str], Iterable[dict]],
    splits: Sequence[str],
    *,
    tokenizer: TextTokenizer,
    key: jax.Array,
    image_size: int,
    answer_fn: Callable | None = None,
    generate_fn: Callable | None = None,
    reconstruct_fn: Callable | None = None,
    max_batches: int | None = None,
    samples_per_prompt: int = 1,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Runs every evaluator whose callable is given on every split: {split: {section: result}}.

    `make_batches(split)` must return a fresh iterable per call (each evaluator makes its own pass);
    every split's generation uses the same `key`, so a split's numbers do not depend on the split list.
    """
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        sections: dict[str, dict[str, Any]] = {}
        if answer_fn is not None:
            sections["understanding"] = understanding.evaluate_understanding(
                answer_fn, make_batches(split), tokenizer, max_batches=max_batches)
        if generate_fn is not None:
            sections["generation"] = generation.evaluate_generation(
                generate_fn, make_batches(split), key, image_size, max_batches=max_batches,
                samples_per_prompt=samples_per_prompt, tokenizer=tokenizer)
        if reconstruct_fn is not None:
            sections["reconstruction"] = reconstruction.evaluate_reconstruction(
                reconstruct_fn, make_batches(split), max_batches=max_batches)
        columns[split] = sections
    return columns


def write_report(
    out_dir: str, columns: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str = "evaluation"
) -> dict[str, str]:
    """Writes metrics.json, metrics.md and, per column, the generation and QA grids of its examples.

    Args:
      out_dir: output directory (created).
      columns: {split or host: {"understanding" | "generation" | "reconstruction" | other: result dict}}.
      title: heading of metrics.md and prefix of the grid titles.

    Returns:
      {what: path} of the files written: "json", "markdown", "<column>_generation", "<column>_qa".
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "metrics.json"), "markdown": os.path.join(out_dir, "metrics.md")}
    with open(paths["json"], "w") as f:
        f.write(to_json(columns))
    with open(paths["markdown"], "w") as f:
        f.write(f"# {title}\n\nCells: value (chance level) where a chance level exists.\n\n")
        f.write(markdown_table(columns))
    for name, sections in columns.items():
        generated = sections.get("generation", {}).get("examples")
        if generated:
            paths[f"{name}_generation"] = os.path.join(out_dir, f"{name}_generation.png")
            grids.generation_grid(generated, paths[f"{name}_generation"],
                                  title=f"{title}: {name} generations")
        answered = sections.get("understanding", {}).get("examples")
        if answered:
            paths[f"{name}_qa"] = os.path.join(out_dir, f"{name}_qa.png")
            grids.qa_grid(answered, paths[f"{name}_qa"], title=f"{title}: {name} questions")
    return paths
