"""The roofline report: the rows of `roofline.measure` with each step's profile, and their Markdown.

Shared by experiments/bench_roofline.py (CPU or accelerator) and experiments/bench_accelerator.py (its
`roofline` section), so both machines print the same table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from infotok_jax.benchmarks import roofline, step_profile

STUDY = "arm=hsic,batch=32,steps=600"  # the study's per-run config (cpu600 budget; batch 32)
CONFIGS = (f"host=ar,{STUDY}", f"host=masked,{STUDY}", f"host=continuous,{STUDY}", "")  # "": main


def rows(
    configs: tuple[str, ...], square: dict[str, float], steps: int = 20, profile_steps: int = 3
) -> Iterator[dict[str, Any]]:
    """Per host.py argument string: `roofline.measure`'s row with `profile_s` (ms per step per model part,
    `step_profile.breakdown`) and `host_side_s` (`step_profile.host_side`)."""
    for arg in configs:
        under_test = roofline.StepUnderTest(arg)
        row = roofline.measure(under_test, steps=steps, square=square)
        row["profile_s"] = step_profile.profile_steps(
            under_test.step, under_test.compiled.as_text(), profile_steps
        )
        row["host_side_s"] = step_profile.host_side(under_test)
        yield row


def _name(arg: str) -> str:
    return arg or "main (host.py defaults: masked, batch 64)"


def markdown(meta: dict[str, Any], rows_: list[dict[str, Any]]) -> str:
    """The roofline table and the profile table of `rows_`; `meta` holds the device and square rates."""
    rates = meta["square_rates"]
    out = [
        f"{meta['device']}, jax {meta['jax']}, {meta['date']}; square {meta['square_size']}^3 matmul: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()),
        "",
        "| config | batch | step ms (quartiles) | XLA GFLOP | LM GFLOP (analytic) | matmul GFLOP | achieved "
        "GFLOP/s | % of square f32 | own matmuls ms | own-shape GFLOP/s | step / own matmuls |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_:
        q1, q3 = (1e3 * q for q in r["step_s_quartiles"])
        percent_of_square = 100 * r["achieved_flops_per_s"] / rates["float32"]
        out.append(
            f"| {_name(r['config'])} | {r['batch']} | {1e3 * r['step_s']:.1f} ({q1:.1f}-{q3:.1f}) "
            f"| {r['xla_flops'] / 1e9:.2f} | {r['lm_flops'] / 1e9:.2f} | {r['matmul_flops'] / 1e9:.2f} "
            f"| {r['achieved_flops_per_s'] / 1e9:.1f} | {percent_of_square:.0f} "
            f"| {1e3 * r['own_matmul_s']:.1f} | {r['own_matmul_flops_per_s'] / 1e9:.1f} "
            f"| {r['step_over_own_matmul']:.2f} |"
        )
    out += ["", "Profile, ms per step summed over XLA's threads (share of the total):", ""]
    out.append("| part | " + " | ".join(_name(r["config"]) for r in rows_) + " |")
    out.append("|---|" + "---|" * len(rows_))
    for part in step_profile.PARTS:
        cells = []
        for r in rows_:
            total = sum(r["profile_s"].values())
            cells.append(f"{1e3 * r['profile_s'][part]:.1f} ({100 * r['profile_s'][part] / total:.0f}%)")
        out.append(f"| {part} | " + " | ".join(cells) + " |")
    out.append("| wall time of a step | " + " | ".join(f"{1e3 * r['step_s']:.1f}" for r in rows_) + " |")
    for what in rows_[0]["host_side_s"]:
        values = [r["host_side_s"][what] for r in rows_]
        cells = ["-" if v is None else f"{1e3 * v:.2f}" for v in values]
        out.append(f"| host side: {what} | " + " | ".join(cells) + " |")
    return "\n".join(out)
