"""The baselines' learning curve over training budgets, and the budget it picks for the main table.

Item 4 of the study asks for a budget at which every host's baseline generates measurably above its
floors, picked from a measured curve. Each point of the curve is its own run trained to completion at that
budget (its learning-rate schedule ends there), not a checkpoint of a longer run, because a budget is
what a run of that length reaches. The runs are the `main` sweep's baseline arm under each budget of
`CURVE_BUDGETS`, so their result files sit with the other runs of that budget
(`experiments/results/runs/<budget>/<host>-none-s<seed>.json`) and are shared with its slices.

"Measurably above the floor": on the test split, the 95% Wilson interval of the baseline's generation
all-correct rate over the test prompts lies wholly above that of its floor (the larger of two floors, a
noise image and the render of another prompt, each scored against the prompt over the same prompts), for
every seed of the curve. The floor's own interval matters: a floor of 0/512 is only known to be < 0.008.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

from scipy import stats as scipy_stats

from infotok_jax.study import protocol, slices
from infotok_jax.study import results as results_lib
from infotok_jax.study.aggregate import CONFIDENCE
from infotok_jax.study.aggregate import REPORT_SPLIT as SPLIT

CURVE_BUDGETS = ("cpu600", "cpu1200", "cpu2400")  # increasing steps, same batch
CURVE_SEEDS = (0,)
Z = float(scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2))  # 1.96 for 95%


def plan(
    budgets: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> list[tuple[str, protocol.Run]]:
    """[(budget name, run)]: every host's baseline under each budget (default `CURVE_BUDGETS`, seeds
    `CURVE_SEEDS`), budget-major (cheapest first)."""
    seeds = CURVE_SEEDS if seeds is None else seeds
    planned = []
    for name in CURVE_BUDGETS if budgets is None else budgets:
        budget = slices.BUDGETS[name]
        runs = protocol.plan("main", protocol.HOSTS, ("none",), seeds, budget.steps, budget.extra)
        planned += [(name, run) for run in runs]
    return planned


def wilson_interval(fraction: float, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion `fraction` observed over `n` trials."""
    if n <= 0:
        raise ValueError(f"a proportion needs n > 0 trials, got n={n}")
    center = (fraction + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def point(budget: str, result: dict[str, Any]) -> dict[str, Any]:
    """One run's point of the curve: generation with its Wilson interval and floors, understanding with
    its image-blind floor, the oracle on reconstructions, PSNR and wall time."""
    metrics = result["eval"]["files"]["metrics.json"]

    def m(key: str) -> float:
        return float(metrics[f"{SPLIT}/{key}"])

    generation, prompts = m("generation/all_correct"), int(m("generation/num_prompts"))
    low, high = wilson_interval(generation, prompts)
    floor = max(m("generation/floor_noise_all_correct"), m("generation/floor_other_all_correct"))
    floor_high = wilson_interval(floor, prompts)[1]
    run = result["run"]
    return {
        "budget": budget,
        "host": run["host"],
        "seed": run["seed"],
        "steps": run["steps"],
        "generation": generation,
        "generation_low": low,
        "generation_high": high,
        "generation_floor": floor,
        "generation_floor_high": floor_high,
        "generation_ceiling": m("generation/ceiling_recon_all_correct"),
        "above_floor": low > floor_high,
        "understanding": m("understanding/accuracy"),
        "understanding_floor": m("understanding/floor_blind_accuracy"),
        "psnr": m("reconstruction/psnr"),
        "wall_min": results_lib.wall_seconds(result) / 60,
    }


def points(results_dir: pathlib.Path, planned: Sequence[tuple[str, protocol.Run]]) -> list[dict[str, Any]]:
    """The curve's points that have a committed result, in plan order."""
    found = []
    for budget, run in planned:
        path = results_lib.result_path(results_dir, budget, run)
        if path.exists():
            found.append(point(budget, results_lib.load_result(path, run)))
    return found


def chosen_budget(curve: Sequence[dict[str, Any]], planned: Sequence[tuple[str, protocol.Run]]) -> str | None:
    """The smallest budget whose every planned run has a point, each above its floor; None if none is."""
    for budget in dict.fromkeys(b for b, _ in planned):
        names = {(r.host, r.seed) for b, r in planned if b == budget}
        have = {(p["host"], p["seed"]): p["above_floor"] for p in curve if p["budget"] == budget}
        if set(have) == names and all(have.values()):
            return budget
    return None


def _missing(curve: Sequence[dict[str, Any]], planned: Sequence[tuple[str, protocol.Run]]) -> list[str]:
    done = {(p["budget"], p["host"], p["seed"]) for p in curve}
    return [f"{b}/{r.name}" for b, r in planned if (b, r.host, r.seed) not in done]


def summary(results_dir: pathlib.Path) -> str:
    """One line for `run_study.py --status`: the curve's progress and the budget it picks so far."""
    planned = plan()
    curve = points(results_dir, planned)
    missing = _missing(curve, planned)
    return (
        f"Budget curve (`--curve`: every host's baseline, seeds {list(CURVE_SEEDS)}, budgets "
        f"{', '.join(CURVE_BUDGETS)}): {len(curve)} of {len(planned)} runs done; next missing "
        f"{missing[0] if missing else '—'}; chosen budget {chosen_budget(curve, planned) or 'none yet'}."
    )


def markdown(curve: Sequence[dict[str, Any]], planned: Sequence[tuple[str, protocol.Run]]) -> str:
    """The curve as a table, the runs still missing, and the budget it picks (or why none yet)."""
    lines = [
        f"| host | budget | steps | seed | generation all-correct [95% Wilson] ({SPLIT}) | "
        "generation floor [upper end] | oracle on reconstructions | above floor | understanding | "
        "image-blind floor | PSNR dB | wall min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in sorted(curve, key=lambda p: (protocol.HOSTS.index(p["host"]), p["steps"], p["seed"])):
        lines.append(
            f"| {p['host']} | {p['budget']} | {p['steps']} | {p['seed']} | {p['generation']:.3f} "
            f"[{p['generation_low']:.3f}, {p['generation_high']:.3f}] | {p['generation_floor']:.3f} "
            f"[{p['generation_floor_high']:.3f}] | "
            f"{p['generation_ceiling']:.3f} | {'yes' if p['above_floor'] else 'no'} | "
            f"{p['understanding']:.3f} | {p['understanding_floor']:.3f} | {p['psnr']:.2f} | "
            f"{p['wall_min']:.1f} |"
        )
    missing = _missing(curve, planned)
    chosen = chosen_budget(curve, planned)
    lines += ["", f"Missing: {', '.join(missing) if missing else 'none'}."]
    if chosen:
        lines.append(f"Chosen budget: `{chosen}` ({slices.BUDGETS[chosen].description}).")
    else:
        lines.append("Chosen budget: none yet (no budget has every host's baseline above its floor).")
    return "\n".join(lines) + "\n"
