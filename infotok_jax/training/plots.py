"""PNG outputs of a run: image grids (inputs vs reconstructions / generations) and the information plane.

Paths may be local or gs:// (`etils.epath`): PIL and matplotlib write into an opened file object, which
on a bucket is uploaded when it is closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath
from PIL import Image


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


def save_image_grid(path: epath.PathLike, rows_RxBxHxWx3: np.ndarray, **kwargs) -> epath.Path:
    """Writes `image_grid(...)` as a PNG and returns the path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        Image.fromarray(image_grid(rows_RxBxHxWx3, **kwargs)).save(f, format="PNG")
    return path


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
