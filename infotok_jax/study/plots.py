"""PNG figures of the study: information plane per host, paired-difference bars, sweep curves, the
capacity sweep's gains, the baselines' learning curve over budgets (drawn from `budget_curve.points`).

The others are drawn from the `aggregate.aggregate` results dict, so they show exactly the numbers
of table.md / results.json: the test split, nHSIC as excess over its permutation floor, and for the bars
the per-seed differences from the baseline with their 95% t intervals (solid: the interval excludes 0).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from infotok_jax.study import aggregate, capacity
from infotok_jax.study.aggregate import REPORT_SPLIT
from infotok_jax.study.protocol import CAPACITY_NUISANCE, CAPACITY_TOKENS, capacity_label

ARM_COLORS = {"none": "tab:gray", "vib": "tab:blue", "hsic": "tab:orange", "supervised": "tab:green"}
_S = REPORT_SPLIT
XZ, ZY = (f"{_S}/information/excess_nhsic_{p}" for p in ("xz", "zy"))
PROBE_ZN = f"{_S}/information/probe_r2_zn_flat"
PSNR = f"{_S}/reconstruction/psnr"
BAR_PANELS = (
    (f"{_S}/understanding/accuracy", f"understanding accuracy ({_S})"),
    ("holdout/understanding/accuracy", "understanding accuracy (holdout)"),
    (f"{_S}/generation/all_correct", f"generation all-correct ({_S})"),
    ("holdout/generation/all_correct", "generation all-correct (holdout)"),
    (f"{_S}/generation/color_correct", f"generation color ({_S})"),
    (f"{_S}/generation/count_correct", f"generation count ({_S})"),
)
CURVE_PANELS = (
    (f"{_S}/understanding/accuracy", f"understanding acc ({_S})"),
    (f"{_S}/generation/all_correct", f"generation all-correct ({_S})"),
    (PSNR, f"PSNR dB ({_S})"),
    (f"{XZ}_flat", "nHSIC(X,Z) - perm. floor"),
)


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: binaries that draw nothing skip it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path) -> pathlib.Path:
    """Saves `fig` as `path` (parents created) and closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def _hosts(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(g["host"] for g in results["groups"]))


def _arms(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(g["arm"] for g in results["groups"]))


def information_plane(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """One panel per host; per arm, the evaluation-time excess nHSIC(X,Z) vs excess nHSIC(Z,Y) (over their
    permutation floors, 512 examples), mean ± std over seeds; filled markers: flat token view, hollow:
    pooled. Each flat point is labelled with the probe R^2 of the nuisance from the tokens ("N R2")."""
    plt = pyplot()
    hosts = _hosts(results)
    fig, axes = plt.subplots(1, len(hosts), figsize=(4.2 * len(hosts), 3.8), dpi=110, squeeze=False)
    for ax, host in zip(axes[0], hosts, strict=True):
        for g in (g for g in results["groups"] if g["host"] == host):
            color = ARM_COLORS.get(g["arm"])
            label = g["arm"] if g["value"] is None else f"{g['arm']} {g['value']}"
            for view, face in (("flat", color), ("pooled", "none")):
                x, y = g["metrics"].get(f"{XZ}_{view}"), g["metrics"].get(f"{ZY}_{view}")
                if not (x and y):
                    continue
                ax.errorbar(
                    x["mean"],
                    y["mean"],
                    yerr=y["std"],
                    xerr=x["std"],
                    fmt="o",
                    color=color,
                    mfc=face,
                    capsize=2,
                    label=f"{label} ({view}, n={x['n']})",
                )
                zn = g["metrics"].get(PROBE_ZN)
                if zn and view == "flat":
                    ax.annotate(f"N R2 {zn['mean']:.2f}", (x["mean"], y["mean"]), fontsize=6)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.axvline(0.0, color="black", linewidth=0.5)
        ax.set_title(f"{host} host ({_S}, excess over permutation floor)", fontsize=9)
        ax.set_xlabel("nHSIC(X, Z) - floor  (lower = more compressed)")
        ax.set_ylabel("nHSIC(Z, Y) - floor  (relevance)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return save_figure(fig, path)


def bar_chart(
    results: dict[str, Any], path: pathlib.Path, panels: Sequence[tuple[str, str]] = BAR_PANELS
) -> pathlib.Path:
    """Grouped bars (hosts x non-baseline arms) of the mean paired difference from the baseline, with the
    95% t interval over seeds as error bars; solid when the interval excludes 0, faded otherwise."""
    plt = pyplot()
    hosts = _hosts(results)
    arms = [a for a in _arms(results) if any(g["paired"] for g in results["groups"] if g["arm"] == a)]
    rows = (len(panels) + 2) // 3
    fig, axes = plt.subplots(rows, 3, figsize=(12, 3.4 * rows), dpi=110, squeeze=False)
    width = 0.8 / max(len(arms), 1)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        for j, arm in enumerate(arms):
            xs = np.arange(len(hosts)) + (j - (len(arms) - 1) / 2) * width
            for x, host in zip(xs, hosts, strict=True):
                group = next((g for g in results["groups"] if g["host"] == host and g["arm"] == arm), None)
                paired = group["paired"].get(key) if group else None
                if not paired:
                    continue
                mean = paired["mean"]
                err = None if paired["lo"] is None else [[mean - paired["lo"]], [paired["hi"] - mean]]
                ax.bar(
                    x,
                    mean,
                    width,
                    yerr=err,
                    capsize=3,
                    color=ARM_COLORS.get(arm),
                    alpha=1.0 if paired["supported"] else 0.35,
                )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(hosts)), hosts)
        ax.set_title(f"{label}: arm - baseline", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if arms:
        from matplotlib.patches import Patch

        handles = [Patch(color=ARM_COLORS.get(arm), label=arm) for arm in arms]
        axes.flat[0].legend(handles=handles, fontsize=8)
    fig.suptitle(
        "paired difference from the baseline, 95% t interval over seeds; faded: interval contains 0",
        fontsize=9,
    )
    return save_figure(fig, path)


VARIANT_PANELS = (
    (f"{_S}/understanding/accuracy", f"understanding acc ({_S})", f"{_S}/understanding/floor_blind_accuracy"),
    (f"{_S}/generation/all_correct", f"generation all-correct ({_S})", None),
    (PSNR, f"PSNR dB ({_S})", None),
)


def variant_chart(
    results: dict[str, Any],
    path: pathlib.Path,
    panels: Sequence[tuple[str, str, str | None]] = VARIANT_PANELS,
) -> pathlib.Path:
    """Categorical sweeps (controls, capacity): one horizontal bar per (host, variant), mean with the
    sample std over seeds (none with one seed), coloured by arm, faded below 3 complete seeds; a dashed
    line at the host's baseline and, where given, a dotted one at the metric's floor (image-blind)."""
    plt = pyplot()
    groups = results["groups"]
    labels = [f"{g['host']}: {g['value'] or g['arm']} ({g['complete']})" for g in groups]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels) + 2.6, 0.32 * len(groups) + 1.4), dpi=110
    )
    for i, (ax, (key, label, floor_key)) in enumerate(zip(np.atleast_1d(axes), panels, strict=True)):
        for y, g in enumerate(groups):
            stats = g["metrics"].get(key)
            if not stats:
                continue
            ax.barh(
                y,
                stats["mean"],
                xerr=stats["std"] if stats["n"] > 1 else None,
                capsize=2,
                color=ARM_COLORS.get(g["arm"]),
                alpha=1.0 if g["complete"] >= 3 else 0.4,
            )
        for host in _hosts(results):
            rows = [j for j, g in enumerate(groups) if g["host"] == host]
            span = (min(rows) - 0.5, max(rows) + 0.5)
            base = next((g for g in groups if g["host"] == host and g["arm"] == "none"), None)
            if base and key in base["metrics"]:
                ax.vlines(base["metrics"][key]["mean"], *span, colors="black", linestyles="--", linewidth=0.8)
            floors = [
                groups[j]["metrics"][floor_key]["mean"] for j in rows if floor_key in groups[j]["metrics"]
            ]
            if floors:
                ax.vlines(float(np.mean(floors)), *span, colors="tab:red", linestyles=":", linewidth=1.0)
        if key == PSNR:  # a dB scale has no meaningful zero
            means = [g["metrics"][key]["mean"] for g in groups if key in g["metrics"]]
            ax.set_xlim(left=min(means, default=1.0) - 1.0)
        ax.set_yticks(range(len(groups)), labels if i == 0 else [""] * len(groups), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "mean ± sample std over seeds (complete seeds in brackets; faded: fewer than 3); "
        "-- baseline, : image-blind floor",
        fontsize=8,
    )
    return save_figure(fig, path)


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
    plt = pyplot()
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
    return save_figure(fig, path)


def capacity_gains(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """The capacity claim at a glance: each IB arm's paired gain over the same-point baseline against the
    nuisance, solid at the fewer tokens and dashed at the more, 95% t interval over seeds as error bars
    (none with one seed); one row per host, one column per `capacity.CONTRAST_METRICS` metric."""
    plt = pyplot()
    by_point = capacity.gains(results["runs"])
    hosts = sorted({h for h, _, _ in by_point}) or ["(no paired runs)"]
    metrics = capacity.CONTRAST_METRICS
    fig, axes = plt.subplots(
        len(hosts), len(metrics), figsize=(4 * len(metrics), 3.2 * len(hosts)), dpi=110, squeeze=False
    )
    for row, host in zip(axes, hosts, strict=True):
        for ax, metric in zip(row, metrics, strict=True):
            for arm in sorted({a for h, a, _ in by_point if h == host}):
                for tokens, style in zip(CAPACITY_TOKENS, ("-", "--"), strict=True):
                    xs, means, errors = [], [], []
                    for nuisance in CAPACITY_NUISANCE:
                        seeds = by_point.get((host, arm, capacity_label(tokens, nuisance)), {})
                        diffs = [d[metric.key] for d in seeds.values() if metric.key in d]
                        if diffs:
                            interval = aggregate.t_interval(diffs)
                            xs.append(nuisance)
                            means.append(interval["mean"])
                            errors.append(
                                0.0 if interval["lo"] is None else interval["mean"] - interval["lo"]
                            )
                    if xs:
                        ax.errorbar(
                            xs, means, errors, marker="o", capsize=3, linestyle=style,
                            color=ARM_COLORS.get(arm), label=f"{arm}, {tokens} tokens",
                        )  # fmt: skip
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(CAPACITY_NUISANCE)
            ax.set_xlabel("nuisance")
            ax.set_title(f"{host}: {metric.label}, arm - baseline", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    return save_figure(fig, path)


def rate_distortion(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Each (host, arm)'s sweep points in the (excess nHSIC(X,Z), PSNR) plane: the rate-distortion curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    for host in _hosts(results):
        for arm in _arms(results):
            rows = [
                g
                for g in results["groups"]
                if g["host"] == host
                and g["arm"] == arm
                and f"{XZ}_flat" in g["metrics"]
                and PSNR in g["metrics"]
            ]
            if not rows:
                continue
            rows.sort(key=lambda g: g["metrics"][f"{XZ}_flat"]["mean"])
            xs = [g["metrics"][f"{XZ}_flat"]["mean"] for g in rows]
            ys = [g["metrics"][PSNR]["mean"] for g in rows]
            ax.plot(xs, ys, "o-", color=ARM_COLORS.get(arm), label=f"{host}/{arm}")
            for g, x, y in zip(rows, xs, ys, strict=True):
                ax.annotate(
                    f"{g['value']:g}" if _numeric([g["value"]]) else str(g["value"]), (x, y), fontsize=7
                )
    ax.set_xlabel("nHSIC(X, Z) - permutation floor, flat view (rate proxy)")
    ax.set_ylabel(f"PSNR dB ({_S})")
    ax.set_title("rate-distortion over the beta sweep (labels: beta)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


HOST_COLORS = {"ar": "tab:blue", "masked": "tab:red", "continuous": "tab:purple"}


def budget_curve(curve: Sequence[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    """The baselines' learning curve (`budget_curve.points`): per host, generation all-correct with its
    95% Wilson interval, its floor (dashed) and the oracle on its reconstructions (dotted); understanding
    with its image-blind floor (dashed); against the training budget in steps."""
    plt = pyplot()
    fig, (gen_ax, und_ax) = plt.subplots(1, 2, figsize=(9.5, 3.8), dpi=110)
    for host in dict.fromkeys(p["host"] for p in curve):
        rows = sorted((p for p in curve if p["host"] == host), key=lambda p: (p["steps"], p["seed"]))
        steps = [p["steps"] for p in rows]
        color = HOST_COLORS.get(host)
        gen = np.array([p["generation"] for p in rows])
        low = np.array([p["generation_low"] for p in rows])
        high = np.array([p["generation_high"] for p in rows])
        gen_ax.errorbar(steps, gen, [gen - low, high - gen], marker="o", capsize=3, color=color, label=host)
        gen_ax.plot(steps, [p["generation_floor"] for p in rows], "--", color=color, alpha=0.6)
        gen_ax.plot(steps, [p["generation_ceiling"] for p in rows], ":", color=color, alpha=0.6)
        und_ax.plot(steps, [p["understanding"] for p in rows], "o-", color=color, label=host)
        und_ax.plot(steps, [p["understanding_floor"] for p in rows], "--", color=color, alpha=0.6)
    gen_ax.set_title(f"baseline generation all-correct ({_S}); -- floor, : oracle on recon", fontsize=9)
    und_ax.set_title(f"baseline understanding accuracy ({_S}); -- image-blind floor", fontsize=9)
    budgets = sorted({p["steps"] for p in curve})
    for ax in (gen_ax, und_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("training steps (batch 32), each point its own run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
