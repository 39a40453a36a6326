"""PNG grids for the README and for eyeballing a model: generations with their prompts, and QA examples.

Rendering uses matplotlib's Agg canvas on a `Figure` object (no pyplot global state, no display), with a
fixed cell size and dpi and no tight bounding box, so a grid of n examples in c columns is exactly
(min(n, c) * cell_width * dpi) x (ceil(n / c) * cell_height * dpi) pixels.
Generation cells show the image with its caption underneath (green when the oracle accepted it, red
when not); QA cells show the image, the question, the predicted answer and the true answer, each wrapped
to `wrap` characters and cut to `max_lines` lines (ending in "...") so that long answers stay inside
their cell.
`path` is a local or gs:// path (written through `etils.epath`) or a binary file object.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_OK, _BAD, _NEUTRAL = "#1a7f37", "#cf222e", "black"
PathOrFile = str | epath.PathLike | IO[bytes]


def grid_pixels(num: int, columns: int, cell_inches: tuple[float, float], dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of a grid of `num` cells laid out in at most `columns` columns."""
    cols, rows = min(num, columns), math.ceil(num / columns)
    return round(cols * cell_inches[0] * dpi), round(rows * cell_inches[1] * dpi)


def _verdict_color(example: dict[str, Any], key: str) -> str:
    return _NEUTRAL if key not in example else (_OK if example[key] else _BAD)


def _draw_grid(
    examples: Sequence[dict[str, Any]],
    path: PathOrFile,
    columns: int,
    cell_inches: tuple[float, float],
    dpi: int,
    title: str | None,
    label: Callable[[Figure, dict[str, Any], float, float], None],
    image_fraction: float,
    on_figure: Callable[[Figure], None] | None = None,
) -> tuple[int, int]:
    """Lays out one image per cell, `label(fig, example, x, y)` drawing its text below (x, y in figure
    fractions: the cell centre, just under the image); writes the PNG and returns its pixel size.
    `on_figure` receives the drawn figure (tests measure its text boxes)."""
    if not examples:
        raise ValueError("examples is empty; there is nothing to draw")
    if columns < 1:
        raise ValueError(f"columns={columns} must be >= 1")
    rows = math.ceil(len(examples) / columns)
    cell_w, cell_h = cell_inches
    px_w, px_h = grid_pixels(len(examples), columns, cell_inches, dpi)
    fig_w, fig_h = (px_w + 0.25) / dpi, (px_h + 0.25) / dpi  # Agg truncates inches * dpi to an int
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    title_h = 0.3 if title else 0.0  # inches at the top, taken from the first row's margin
    side = min(cell_w * 0.9, (cell_h - title_h / rows) * image_fraction)
    for k, example in enumerate(examples):
        r, c = divmod(k, columns)
        top = fig_h - title_h - r * (cell_h - title_h / rows) - 0.05  # inches from the bottom
        left = c * cell_w + (cell_w - side) / 2
        ax = fig.add_axes((left / fig_w, (top - side) / fig_h, side / fig_w, side / fig_h))
        ax.imshow(np.clip(np.asarray(example["image"], np.float32), 0.0, 1.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        label(fig, example, (c + 0.5) * cell_w / fig_w, (top - side - 0.06) / fig_h)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.05 / fig_h, va="top")
    if on_figure is not None:
        on_figure(fig)
    if hasattr(path, "write"):
        fig.savefig(path, dpi=dpi, format="png")
    else:
        out = epath.Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            fig.savefig(f, dpi=dpi, format="png")
    return px_w, px_h


def generation_grid(
    examples: Sequence[dict[str, Any]],
    path: PathOrFile,
    columns: int = 8,
    title: str | None = None,
    cell_inches: tuple[float, float] = (1.6, 2.2),
    dpi: int = 100,
    wrap: int = 26,
) -> tuple[int, int]:
    """Writes a PNG of generated images, each with its prompt below; returns its (width, height) in pixels.

    Args:
      examples: dicts with "image" (H, W, 3) in [0, 1] and "caption"; optional "all_correct" colors the text.
      path: output PNG path, local or gs:// (parent directories are created), or a binary file object.
      columns / cell_inches / dpi: layout; the image size is `grid_pixels(len(examples), columns, ...)`.
      title: optional line above the grid. wrap: characters per caption line.
    """

    def label(fig: Figure, ex: dict[str, Any], x: float, y: float) -> None:
        fig.text(
            x,
            y,
            "\n".join(textwrap.wrap(str(ex["caption"]), wrap)),
            ha="center",
            va="top",
            fontsize=6,
            color=_verdict_color(ex, "all_correct"),
        )

    return _draw_grid(examples, path, columns, cell_inches, dpi, title, label, image_fraction=0.66)


def _wrapped(text: str, wrap: int, max_lines: int) -> str:
    """`text` wrapped to `wrap` characters per line, at most `max_lines` lines (the last ends in '...')."""
    lines = textwrap.wrap(text, wrap, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: max(wrap - 3, 1)].rstrip() + "..."]
    return "\n".join(lines)


def qa_label_lines(example: dict[str, Any], wrap: int, max_lines: int) -> tuple[str, str, str]:
    """The question, predicted and true answer texts of a QA cell, each at most `max_lines` x `wrap`."""
    return (
        _wrapped(f"Q: {example['question']}", wrap, max_lines),
        _wrapped(f"pred: {example['predicted']}", wrap, max_lines),
        _wrapped(f"true: {example['answer']}", wrap, max_lines),
    )


def qa_grid(
    examples: Sequence[dict[str, Any]],
    path: PathOrFile,
    columns: int = 6,
    title: str | None = None,
    cell_inches: tuple[float, float] = (1.8, 2.2),
    dpi: int = 100,
    wrap: int = 30,
    max_lines: int = 2,
    on_figure: Callable[[Figure], None] | None = None,
) -> tuple[int, int]:
    """Writes a PNG of question-answer examples; returns its (width, height) in pixels.

    Args:
      examples: dicts with "image", "question", "predicted", "answer" and optional "correct" (colors the
        prediction), as kept by `evaluate_understanding`.
      path / columns / title / cell_inches / dpi / wrap: as `generation_grid`.
      max_lines: lines per text (question, prediction, answer); longer ones are cut with "...".
      on_figure: called with the drawn matplotlib figure before it is saved.
    """
    line_pt = 8.0  # per 6-pt line

    def label(fig: Figure, ex: dict[str, Any], x: float, y: float) -> None:
        inch = 1.0 / fig.get_figheight()
        question, predicted, answer = qa_label_lines(ex, wrap, max_lines)
        styles = ({}, {"color": _verdict_color(ex, "correct"), "weight": "bold"}, {})
        for text, style in zip((question, predicted, answer), styles, strict=True):
            fig.text(x, y, text, ha="center", va="top", fontsize=6, **style)
            y -= (text.count("\n") + 1.25) * line_pt / 72.0 * inch

    # room for 3 blocks of max_lines lines under the image
    text_inches = 3 * (max_lines + 0.25) * line_pt / 72.0 + 0.1
    image_fraction = min(0.68, max(0.3, (cell_inches[1] - text_inches - 0.1) / cell_inches[1]))
    return _draw_grid(examples, path, columns, cell_inches, dpi, title, label, image_fraction, on_figure)
