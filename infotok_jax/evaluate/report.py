"""Evaluation results -> flat named metrics with their floors and reference levels, a Markdown table, JSON
and grids.

Results are nested mappings, e.g. {"test": {"understanding": {...}, "generation": {...}}, "holdout": {...}}
as returned by the `evaluate_*` functions. `flatten_metrics` keeps the scalar entries under "/"-joined
names ("test/understanding/accuracy_color"); non-scalar entries such as "examples" are dropped.

A metric `m` has reference levels when its section also holds `<prefix>m` for a prefix of `REFERENCES`
(empirical floors, reference levels, uniform chance); the table prints such cells as
"value (blind 0.26, majority 0.52, chance 0.33)" and never gives a reference a row of its own, so no score
is read without the floor it must beat. JSON is written with sorted keys and non-finite numbers as null,
so two runs with equal results give identical bytes. Files are written through `etils.epath`, so the
output directory may be local or gs://.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Number
from typing import Any

import jax
from etils import epath

from infotok_jax.data.text_tokenizer import TextTokenizer
from infotok_jax.evaluate import generation, grids, information_plane, reconstruction, understanding

# (prefix, label in a cell): what a metric is read against. Floors first, then the reconstruction and truth
# references, then chance.
REFERENCES = (
    ("floor_blind_", "blind"),  # understanding: the same answerer on another example's image
    ("floor_majority_", "majority"),  # understanding: best constant answer per question type
    ("floor_noise_", "noise"),  # generation: the oracle on uniform noise
    ("floor_other_", "other"),  # generation: the oracle on true renders of other prompts
    ("floor_perm_", "perm"),  # information plane: nHSIC after shuffling one side
    # generation: the oracle on tokenizer reconstructions of the truth; the key says "ceiling" for the
    # committed results, but it is no upper bound (a generation can score above its reconstructions)
    ("ceiling_recon_", "recon"),
    ("truth_", "truth"),  # generation: the oracle on the true images
    ("chance_", "chance"),  # understanding: uniform guess among the possible answers (not a floor)
)
CHANCE_PREFIX = "chance_"
_COUNT_ROWS = ("num_examples", "num_prompts")  # the only counts shown in the table
LEGEND = (
    "Cells: value (references). Floors: blind = the same model answering with another example's image; "
    "majority = the best constant answer per question type on these examples; noise = the scene oracle on "
    "uniform noise; other = the oracle on true renders of other prompts; perm = nHSIC with one side "
    "shuffled (excess_ = value - perm). References: recon = the oracle on the tokenizer's reconstructions "
    "of the true images (not an upper bound: generations can score above it); truth = the oracle on the "
    "true images. chance = uniform guess (not a floor). "
    "Generation headline: all_correct, color_correct, count_correct; shape/size/position are only "
    "meaningful above both generation floors."
)


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


def _is_reference(metric: str) -> bool:
    return any(metric.startswith(prefix) for prefix, _ in REFERENCES)


def _rows(columns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """(section, metric) rows in first-seen order, without references, per-type counts and examples."""
    rows: list[tuple[str, str]] = []
    for sections in columns.values():
        for section, metrics in sections.items():
            for metric, value in metrics.items():
                shown = not _is_reference(metric) and (not metric.startswith("num_") or metric in _COUNT_ROWS)
                if shown and _is_scalar(value) and (section, metric) not in rows:
                    rows.append((section, metric))
    return rows


def markdown_table(columns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A Markdown table: one row per (section, metric), one column per key of `columns` (a split or host).

    `columns` maps a column name to {section: result dict}. A cell is "value (label ref, ...)" listing
    every reference `<prefix><metric>` the section holds (see `REFERENCES`), "value" without any, and
    empty when the column lacks the metric.
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
            refs = [
                f"{label} {format_value(float(result[prefix + metric]))}"
                for prefix, label in REFERENCES
                if prefix + metric in result
            ]
            cells.append(f"{text} ({', '.join(refs)})" if refs else text)
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
    encode_fn: Callable | None = None,
    max_batches: int | None = None,
    samples_per_prompt: int = 1,
    information_examples: int = information_plane.DEFAULT_EXAMPLES,
    x_view_size: int | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Runs every evaluator whose callable is given on every split: {split: {section: result}}.

    Callables (numpy in, numpy or jax out; every process may run them, the scoring is numpy):
      answer_fn(images_BxHxWx3, question_tokens_BxLq, max_answer_len) -> answer tokens (B, La)
      generate_fn(caption_tokens_BxLc, key) -> images (B, S, S, 3) in [0, 1]
      reconstruct_fn(images_BxHxWx3) -> images: PSNR, and the oracle on reconstructions
      encode_fn(images_BxHxWx3) -> z_BxNxD: the information plane on `information_examples` examples
    `make_batches(split)` must return a fresh iterable per call (each evaluator makes its own pass);
    every split's generation uses the same `key`, so a split's numbers do not depend on the split list.
    """
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        sections: dict[str, dict[str, Any]] = {}
        if answer_fn is not None:
            sections["understanding"] = understanding.evaluate_understanding(
                answer_fn, make_batches(split), tokenizer, max_batches=max_batches
            )
        if generate_fn is not None:
            sections["generation"] = generation.evaluate_generation(
                generate_fn,
                make_batches(split),
                key,
                image_size,
                max_batches=max_batches,
                samples_per_prompt=samples_per_prompt,
                tokenizer=tokenizer,
                reconstruct_fn=reconstruct_fn,
            )
        if reconstruct_fn is not None:
            sections["reconstruction"] = reconstruction.evaluate_reconstruction(
                reconstruct_fn, make_batches(split), max_batches=max_batches
            )
        if encode_fn is not None:
            sections["information"] = information_plane.evaluate_information(
                encode_fn, make_batches(split), num_examples=information_examples, x_view_size=x_view_size
            )
        columns[split] = sections
    return columns


def write_report(
    out_dir: str, columns: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str = "evaluation"
) -> dict[str, str]:
    """Writes metrics.json, metrics.md and, per column, the generation and QA grids of its examples.

    Args:
      out_dir: output directory, local or gs:// (created).
      columns: {split or host: {"understanding" | "generation" | "reconstruction" | other: result dict}}.
      title: heading of metrics.md and prefix of the grid titles.

    Returns:
      {what: path} of the files written: "json", "markdown", "<column>_generation", "<column>_qa".
    """
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "markdown": out / "metrics.md"}
    paths["json"].write_text(to_json(columns))
    paths["markdown"].write_text(f"# {title}\n\n{LEGEND}\n\n{markdown_table(columns)}")
    for name, sections in columns.items():
        generated = sections.get("generation", {}).get("examples")
        if generated:
            paths[f"{name}_generation"] = out / f"{name}_generation.png"
            _write_png(
                paths[f"{name}_generation"],
                grids.generation_grid,
                generated,
                title=f"{title}: {name} generations",
            )
        answered = sections.get("understanding", {}).get("examples")
        if answered:
            paths[f"{name}_qa"] = out / f"{name}_qa.png"
            _write_png(paths[f"{name}_qa"], grids.qa_grid, answered, title=f"{title}: {name} questions")
    return {k: str(v) for k, v in paths.items()}


def _write_png(path: epath.Path, draw: Callable, examples: list, title: str) -> None:
    """Draws a grid into memory, then writes its bytes through epath (local or gs://)."""
    buffer = io.BytesIO()
    draw(examples, buffer, title=title)
    with path.open("wb") as f:
        f.write(buffer.getvalue())
