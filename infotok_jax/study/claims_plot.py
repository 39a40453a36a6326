"""The claims as a forest plot: per family, every cell's paired contrast with its raw and Holm intervals.

Drawn from `claims.evaluate` output, so it shows exactly the numbers of claims.md: a dot per seed, the
mean, the raw 95% t interval (a line) and the interval at Holm's level for the cell (a wider band; green
when it lies wholly above 0, red wholly below, grey otherwise). A pending cell (short of its planned seeds) is
drawn hollow with its raw interval only and labelled `n/planned pending`: described, not tested. Claims
that share one family (the same cells, another rule) share one panel, headed by each verdict; a family
without a single run yet gets no panel, only its name in the figure's last line.
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Sequence
from typing import Any

from infotok_jax.study import claims, plots

_ABOVE, _BELOW, _NEITHER, _PENDING = "tab:green", "tab:red", "0.35", "0.6"
_WRAP = 120  # characters per heading line


def _panels(decided: Sequence[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(claims, cells) per distinct family, in the claims' order."""
    panels: dict[tuple, tuple[list, list]] = {}
    for d in decided:
        key = tuple((c["host"], c["name"], c["endpoint"]) for c in d["cells"])
        panels.setdefault(key, ([], d["cells"]))[0].append(d)
    return list(panels.values())


def _color(cell: dict[str, Any]) -> str:
    if cell["pending"] or cell["lo_adj"] is None:
        return _PENDING
    return _ABOVE if cell["lo_adj"] > 0 else _BELOW if cell["hi_adj"] < 0 else _NEITHER


def _draw_cell(ax, y: float, cell: dict[str, Any]) -> None:
    color = _color(cell)
    if cell["diffs"]:
        ax.scatter(cell["diffs"], [y] * len(cell["diffs"]), s=7, color=color, alpha=0.45, zorder=2)
    if cell["lo"] is not None:
        ax.plot([cell["lo"], cell["hi"]], [y, y], color=color, linewidth=1.5, zorder=3)
    if not cell["pending"] and cell["lo_adj"] is not None:
        ax.plot([cell["lo_adj"], cell["hi_adj"]], [y, y], color=color, linewidth=7.0, alpha=0.3)
    if cell["mean"] is not None:
        face = "white" if cell["pending"] else color
        ax.scatter([cell["mean"]], [y], s=28, zorder=4, edgecolors=color, facecolors=face)


def _label(cell: dict[str, Any]) -> str:
    seeds = f"{cell['n']}/{cell['planned_n']}{' pending' if cell['pending'] else ''}"
    return f"{cell['host']} {cell['name']}, {claims.short_endpoint(cell['endpoint'])} ({seeds})"


def forest(decided: Sequence[dict[str, Any]], path: pathlib.Path, title: str = "") -> pathlib.Path:
    """Writes the forest plot of `decided` (a list of `claims.evaluate` results) as a PNG at `path`."""
    plt = plots.pyplot()
    panels = [p for p in _panels(decided) if any(c["n"] for c in p[1])]
    no_runs = [d["statement"] for d in decided if not any(c["n"] for c in d["cells"])]
    headings = [
        "\n".join(textwrap.fill(f"{d['statement']}: {d['verdict']}", _WRAP) for d in family_claims)
        for family_claims, _ in panels
    ]
    # two grid rows per family: its heading (with room for the x tick labels of the panel above), then
    # its cells, one row unit each
    heights = []
    for (_, cells), heading in zip(panels, headings, strict=True):
        heights += [0.35 * (heading.count("\n") + 1) + 1.1, len(cells) + 0.2]
    fig = plt.figure(figsize=(10, 0.28 * sum(heights) + 1.2), dpi=110)
    grid = fig.add_gridspec(
        max(len(heights), 1), 1, height_ratios=heights or [1], left=0.42, right=0.98, hspace=0.0
    )
    for i, ((_, cells), heading) in enumerate(zip(panels, headings, strict=True)):
        head = fig.add_subplot(grid[2 * i, 0])
        head.axis("off")
        head.annotate(
            heading, xy=(0.01, 0.0), xycoords=("figure fraction", "axes fraction"), fontsize=7.5, va="bottom"
        )
        ax = fig.add_subplot(grid[2 * i + 1, 0])
        for row, cell in enumerate(cells):
            _draw_cell(ax, -row, cell)
        ax.set_yticks([-row for row in range(len(cells))], [_label(c) for c in cells], fontsize=7)
        ax.set_ylim(-len(cells) + 0.4, 0.6)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    footer = (
        "small dots: seeds; line: raw 95% t interval; band: the interval at Holm's level (green: above 0, "
        "red: below 0); hollow: pending"
    )
    if no_runs:
        footer += "\n" + textwrap.fill("No runs yet at this study: " + "; ".join(no_runs), _WRAP + 20)
    fig.text(0.01, 0.005, footer, fontsize=7, va="bottom")
    if title:
        fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.subplots_adjust(top=1 - 0.45 / fig.get_figheight(), bottom=0.75 / fig.get_figheight())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
