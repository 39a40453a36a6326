"""Writes a PNG grid of captioned scenes, the same scenes at two nuisance levels, for the documentation.

  .venv/bin/python experiments/make_scene_grid.py --out docs/images/scenes_grid.png

Top row: nuisance 0 (flat background); bottom row: the same scenes at nuisance 1 (textured noise
background). Each panel shows the caption and the scene oracle's verdict on its own request.
"""

from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from infotok_jax.data import scene_oracle, scenes_render, scenes_spec  # noqa: E402

_OUT = flags.DEFINE_string("out", "docs/images/scenes_grid.png", "output PNG path")
_SIZE = flags.DEFINE_integer("image_size", 64, "scene side length (32 or 64)")
_NUM = flags.DEFINE_integer("num", 6, "scenes per row")
_SPLIT = flags.DEFINE_string("split", "train", "split to sample from")
_LEVELS = flags.DEFINE_list("nuisance", ["0.0", "1.0"], "the two nuisance levels (rows)")


def main(argv: list[str]) -> None:
    del argv
    levels = [float(v) for v in _LEVELS.value]
    fig, axes = plt.subplots(len(levels), _NUM.value, figsize=(2.3 * _NUM.value, 3.5 * len(levels)))
    for row, nuisance in enumerate(levels):
        for col in range(_NUM.value):
            ex = scenes_render.render_example(0, _SPLIT.value, col, _SIZE.value, nuisance)
            verdict = scene_oracle.score(ex["image"], ex["objects"], _SIZE.value)["all_correct"]
            ax = axes[row, col]
            ax.imshow(ex["image"], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("\n".join(textwrap.wrap(ex["caption"], 28)), fontsize=6.5)
            ax.set_xlabel(f"nuisance {nuisance:.1f}  oracle: {'ok' if verdict else 'FAIL'}", fontsize=7)
    fig.suptitle(
        f"captioned scenes ({_SIZE.value}x{_SIZE.value}, split '{_SPLIT.value}'); "
        f"held-out (shape, color) pairs: "
        + ", ".join(
            f"{scenes_spec.COLORS[c]} {scenes_spec.SHAPES[s]}" for s, c in sorted(scenes_spec.HOLDOUT_PAIRS)
        ),
        fontsize=9,
    )
    fig.tight_layout(h_pad=2.0)
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    fig.savefig(_OUT.value, dpi=110)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
