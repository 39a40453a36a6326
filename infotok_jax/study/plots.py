"""PNG figures of the study: information plane per host, bar chart of the main table, sweep curves.

All figures are drawn from the `aggregate.aggregate` results dict, so they show exactly the numbers
of table.md / results.json.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

ARM_COLORS = {"none": "tab:gray", "vib": "tab:blue", "hsic": "tab:orange"}
BAR_PANELS = (
    ("validation/understanding/accuracy", "understanding accuracy (validation)"),
    ("holdout/understanding/accuracy", "understanding accuracy (holdout)"),
    ("validation/generation/all_correct", "generation all-correct (validation)"),
    ("holdout/generation/all_correct", "generation all-correct (holdout)"),
)
CURVE_PANELS = (
    ("validation/understanding/accuracy", "understanding acc (val)"),
    ("validation/generation/all_correct", "generation all-correct (val)"),
    ("validation/reconstruction/psnr", "PSNR dB (val)"),
    ("eval/nhsic_xz", "nHSIC(X,Z)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _hosts(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(g["host"] for g in results["groups"]))


def _arms(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(g["arm"] for g in results["groups"]))


def information_plane(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """One panel per host; per arm, nHSIC(X,Z) vs nHSIC(Z,Y) over training, averaged over seeds at the
    evaluation steps all its seeds share (markers go from light to dark with the step)."""
    plt = _pyplot()
    hosts = _hosts(results)
    fig, axes = plt.subplots(1, len(hosts), figsize=(4.2 * len(hosts), 3.8), dpi=110, squeeze=False)
    for ax, host in zip(axes[0], hosts, strict=True):
        for arm in _arms(results):
            curves = [
                dict((s, (x, y)) for s, x, y in r["information_curve"])
                for r in results["runs"]
                if r["host"] == host and r["arm"] == arm and r["information_curve"]
            ]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            xy = np.asarray([[np.mean([c[s][i] for c in curves]) for i in (0, 1)] for s in steps])
            if not len(xy):
                continue
            color = ARM_COLORS.get(arm)
            ax.plot(xy[:, 0], xy[:, 1], "-", color=color, linewidth=1, label=f"{arm} (n={len(curves)})")
            shades = np.linspace(0.3, 1.0, len(xy))
            ax.scatter(xy[:, 0], xy[:, 1], color=color, alpha=shades, s=16)
            ax.annotate(f"{steps[-1]}", xy[-1], fontsize=7)
        ax.set_title(f"{host} host")
        ax.set_xlabel("nHSIC(X, Z)  (lower = more compressed)")
        ax.set_ylabel("nHSIC(Z, Y)  (relevance)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def bar_chart(
    results: dict[str, Any], path: pathlib.Path, panels: Sequence[tuple[str, str]] = BAR_PANELS
) -> pathlib.Path:
    """Grouped bars (hosts x arms) of mean accuracy with sample-std error bars, one panel per metric."""
    plt = _pyplot()
    hosts, arms = _hosts(results), _arms(results)
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(10, 6.5), dpi=110, squeeze=False)
    width = 0.8 / max(len(arms), 1)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        top = 0.0
        for j, arm in enumerate(arms):
            stats = [
                next(
                    (
                        g["metrics"].get(key)
                        for g in results["groups"]
                        if g["host"] == host and g["arm"] == arm
                    ),
                    None,
                )
                for host in hosts
            ]
            means = [s["mean"] if s else np.nan for s in stats]
            stds = [s["std"] if s else 0.0 for s in stats]
            xs = np.arange(len(hosts)) + (j - (len(arms) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=stds, capsize=3, color=ARM_COLORS.get(arm), label=arm)
            top = np.nanmax([top, *(np.asarray(means) + np.asarray(stds))])
        ax.set_xticks(np.arange(len(hosts)), hosts)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, min(1.0, max(0.05, 1.2 * top)))  # small rates (generation) stay readable
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return _save(fig, path)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def sweep_curves(
    results: dict[str, Any],
    path: pathlib.Path,
    x_label: str,
    log_x: bool = False,
    panels: Sequence[tuple[str, str]] = CURVE_PANELS,
) -> pathlib.Path:
    """Metric vs swept value, one line per (host, arm), sample-std error bars; one panel per metric."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), dpi=110, squeeze=False)
    values = list(dict.fromkeys(g["value"] for g in results["groups"]))
    numeric = _numeric(values)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for host in _hosts(results):
            for arm in _arms(results):
                rows = [
                    g
                    for g in results["groups"]
                    if g["host"] == host and g["arm"] == arm and key in g["metrics"]
                ]
                if not rows:
                    continue
                rows.sort(key=lambda g: g["value"] if numeric else values.index(g["value"]))
                xs = [g["value"] if numeric else values.index(g["value"]) for g in rows]
                ax.errorbar(
                    xs,
                    [g["metrics"][key]["mean"] for g in rows],
                    [g["metrics"][key]["std"] for g in rows],
                    marker="o",
                    capsize=3,
                    label=f"{host}/{arm}",
                    color=ARM_COLORS.get(arm),
                    linestyle=["-", "--", ":"][_hosts(results).index(host) % 3],
                )
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        elif log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)


def rate_distortion(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Each (host, arm)'s sweep points in the (nHSIC(X,Z), PSNR) plane: the rate-distortion curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    for host in _hosts(results):
        for arm in _arms(results):
            rows = [
                g
                for g in results["groups"]
                if g["host"] == host
                and g["arm"] == arm
                and "eval/nhsic_xz" in g["metrics"]
                and "validation/reconstruction/psnr" in g["metrics"]
            ]
            if not rows:
                continue
            rows.sort(key=lambda g: g["metrics"]["eval/nhsic_xz"]["mean"])
            xs = [g["metrics"]["eval/nhsic_xz"]["mean"] for g in rows]
            ys = [g["metrics"]["validation/reconstruction/psnr"]["mean"] for g in rows]
            ax.plot(xs, ys, "o-", color=ARM_COLORS.get(arm), label=f"{host}/{arm}")
            for g, x, y in zip(rows, xs, ys, strict=True):
                ax.annotate(
                    f"{g['value']:g}" if _numeric([g["value"]]) else str(g["value"]), (x, y), fontsize=7
                )
    ax.set_xlabel("nHSIC(X, Z) (rate proxy)")
    ax.set_ylabel("PSNR dB (val)")
    ax.set_title("rate-distortion over the beta sweep (labels: beta)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
