"""PNG outputs of a run: image grids (inputs vs reconstructions / generations) and the information plane.

The training grids are labelled: a title at the left of each row (what the row shows) and, when the
task gives captions, a column number over each column and the numbered captions under the grid.
`publish_pictures` writes each grid of `task.visualize` as a PNG and as a TensorBoard image.

Paths may be local or gs:// (`etils.epath`): PIL and matplotlib write into an opened file object, which
on a bucket is uploaded when it is closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

# Row titles of the grids the tasks' `visualize` returns (any other grid gets "row 1", "row 2", ...).
ROW_TITLES = {
    "reconstructions": ("input", "reconstruction"),
    "generations": ("data image", "generated"),
}
MIN_CAPTION_WIDTH = 360  # pixels: narrow grids are widened (white) so captions need fewer lines
_INK, _PAPER = (0, 0, 0), (255, 255, 255)


def image_grid(
    rows_RxBxHxWx3: np.ndarray, max_columns: int = 16, upscale: int = 2, pad: int = 1
) -> np.ndarray:
    """Tiles (rows, B, H, W, 3) images in [0, 1] into one uint8 image (row r = one kind of image)."""
    rows = np.clip(np.asarray(rows_RxBxHxWx3, np.float32), 0.0, 1.0)[:, :max_columns]
    num_rows, num_cols, height, width, _ = rows.shape
    cell_h, cell_w = height * upscale + pad, width * upscale + pad
    canvas = np.ones((num_rows * cell_h + pad, num_cols * cell_w + pad, 3), np.float32)
    for r in range(num_rows):
        for c in range(num_cols):
            tile = rows[r, c].repeat(upscale, axis=0).repeat(upscale, axis=1)
            y, x = pad + r * cell_h, pad + c * cell_w
            canvas[y : y + height * upscale, x : x + width * upscale] = tile
    return (canvas * 255).round().astype(np.uint8)


def labeled_image_grid(
    rows_RxBxHxWx3: np.ndarray,
    row_titles: Sequence[str],
    captions: Sequence[str] = (),
    max_columns: int = 16,
    upscale: int = 2,
    pad: int = 1,
) -> np.ndarray:
    """`image_grid` with `row_titles` at the left and, given `captions` (one per column), column numbers
    on top and 'n: caption' lines underneath, wrapped to the grid's width; uint8 (H, W, 3)."""
    grid = image_grid(rows_RxBxHxWx3, max_columns, upscale, pad)
    num_rows, num_cols = min(len(rows_RxBxHxWx3), len(row_titles)), min(rows_RxBxHxWx3.shape[1], max_columns)
    captions = list(captions)[:num_cols]
    font = ImageFont.load_default()
    line_h = _text_size(font, "Ag")[1] + 3
    left = max(_text_size(font, t)[0] for t in row_titles) + 8
    top = line_h if captions else 0
    width = max(left + grid.shape[1], MIN_CAPTION_WIDTH if captions else 0)
    lines = [line for i, c in enumerate(captions) for line in wrap_to_width(f"{i + 1}: {c}", font, width - 6)]
    canvas = Image.new("RGB", (width, top + grid.shape[0] + len(lines) * line_h + 2), _PAPER)
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    cell_h, cell_w = (grid.shape[0] - pad) // max(len(rows_RxBxHxWx3), 1), (grid.shape[1] - pad) // num_cols
    for r, title in enumerate(row_titles[:num_rows]):
        draw.text((3, top + pad + r * cell_h + cell_h // 2), title, fill=_INK, font=font, anchor="lm")
    if captions:
        for c in range(num_cols):
            draw.text(
                (left + pad + c * cell_w + cell_w // 2, 1), str(c + 1), fill=_INK, font=font, anchor="ma"
            )
    for i, line in enumerate(lines):
        draw.text((3, top + grid.shape[0] + 1 + i * line_h), line, fill=_INK, font=font)
    return np.asarray(canvas)


def wrap_to_width(text: str, font: Any, width_px: int) -> list[str]:
    """`text` in lines no wider than `width_px` in `font` (words longer than a line are cut)."""
    lines: list[str] = []
    for word in text.split() or [""]:
        while font.getlength(word) > width_px and len(word) > 1:  # a word longer than a line
            cut = next(
                n for n in range(len(word) - 1, 0, -1) if font.getlength(word[:n]) <= width_px or n == 1
            )
            lines.append(word[:cut])
            word = word[cut:]
        if lines and font.getlength(f"{lines[-1]} {word}") <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _text_size(font: Any, text: str) -> tuple[int, int]:
    x0, y0, x1, y1 = font.getbbox(text)
    return x1 - x0, y1 - y0


def save_png(path: epath.PathLike, image_HxWx3: np.ndarray) -> epath.Path:
    """Writes a uint8 (H, W, 3) image as a PNG (parent directories created) and returns the path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        Image.fromarray(np.asarray(image_HxWx3, np.uint8)).save(f, format="PNG")
    return path


def save_image_grid(path: epath.PathLike, rows_RxBxHxWx3: np.ndarray, **kwargs) -> epath.Path:
    """Writes `image_grid(...)` as a PNG and returns the path."""
    return save_png(path, image_grid(rows_RxBxHxWx3, **kwargs))


def save_information_plane(
    path: epath.PathLike,
    curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    x_label: str,
    y_label: str,
    title: str = "Information plane",
) -> epath.Path:
    """Plots compression (x) against relevance (y) over training, one curve per arm, colored by step.

    `curves` maps an arm name to (steps, compression values, relevance values).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    markers = "os^Dv<>"
    for i, (name, (steps, xs, ys)) in enumerate(curves.items()):
        steps, xs, ys = np.asarray(steps), np.asarray(xs, float), np.asarray(ys, float)
        ax.plot(xs, ys, "-", color="0.7", linewidth=0.8, zorder=1)
        points = ax.scatter(
            xs, ys, c=steps, cmap="viridis", marker=markers[i % len(markers)], s=18, label=name
        )
        if len(xs):
            ax.annotate("end", (xs[-1], ys[-1]), fontsize=7)
    if curves:
        fig.colorbar(points, ax=ax, label="training step")
        ax.legend(fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def publish_pictures(pictures: Mapping[str, np.ndarray], task: Any, step: int, workdir, writer) -> None:
    """Writes each grid of `task.visualize`'s output, labelled, to `images/<name>_step<step>.png` and to
    TensorBoard as image `images/<name>` (captions also as text `images/<name>/captions`).

    Entries named `<grid>.<key>` are not grids but annotations of `<grid>`: a task with a method
    `picture_captions(name, rows_RxBxHxWx3, {key: array}) -> list[str]` turns them into one caption per
    column (e.g. the caption text and the oracle's verdict on the generated image)."""
    for name, rows in pictures.items():
        if "." in name:
            continue
        rows = np.asarray(rows)
        titles = ROW_TITLES.get(name, tuple(f"row {r + 1}" for r in range(len(rows))))
        notes = {k[len(name) + 1 :]: np.asarray(v) for k, v in pictures.items() if k.startswith(f"{name}.")}
        captions = task.picture_captions(name, rows, notes) if hasattr(task, "picture_captions") else []
        image = labeled_image_grid(rows, titles, captions)
        save_png(epath.Path(workdir) / "images" / f"{name}_step{step:06d}.png", image)
        text = "\n".join(f"{i + 1}. {c}  " for i, c in enumerate(captions))
        rows_text = ", ".join(f"{t} (row {r + 1})" for r, t in enumerate(titles))
        writer.write_image(step, f"images/{name}", image, f"rows: {rows_text}  \n{text}")
