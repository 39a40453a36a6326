"""Roofline and profile of the trainer's step: study configs of the three hosts and the main config.

    python experiments/bench_roofline.py --out roofline.json            # CPU or accelerator alike

Per config (infotok_jax/benchmarks/roofline.py): the median step time, XLA's and the analytic FLOP counts,
the step's own matrix products timed alone at their shapes, and the square float32 / bf16 matmul rates of
the same process; then (benchmarks/step_profile.py) a jax.profiler trace of a few steps attributed to the
model's parts, and the host-side work around a step. Prints Markdown tables; the JSON is rewritten after
every config, so a run cut short keeps what it measured. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import jax

from infotok_jax.benchmarks import roofline, step_profile

STUDY = "arm=hsic,batch=32,steps=600"  # the study's per-run config (cpu600 budget; batch 32)
CONFIGS = (f"host=ar,{STUDY}", f"host=masked,{STUDY}", f"host=continuous,{STUDY}", "")  # "": main


def _name(arg: str) -> str:
    return arg or "main (host.py defaults: masked, batch 64)"


def markdown(data: dict) -> str:
    meta = data["meta"]
    rates = meta["square_rates"]
    out = [
        f"{meta['device']}, jax {meta['jax']}, {meta['date']}; square {meta['square_size']}^3 matmul: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()),
        "",
        "| config | batch | step ms (quartiles) | XLA GFLOP | LM GFLOP (analytic) | matmul GFLOP | achieved "
        "GFLOP/s | % of square f32 | own matmuls ms | own-shape GFLOP/s | step / own matmuls |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
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
    out.append("| part | " + " | ".join(_name(r["config"]) for r in data["rows"]) + " |")
    out.append("|---|" + "---|" * len(data["rows"]))
    for part in step_profile.PARTS:
        cells = []
        for r in data["rows"]:
            total = sum(r["profile_s"].values())
            cells.append(f"{1e3 * r['profile_s'][part]:.1f} ({100 * r['profile_s'][part] / total:.0f}%)")
        out.append(f"| {part} | " + " | ".join(cells) + " |")
    out.append(
        "| wall time of a step | " + " | ".join(f"{1e3 * r['step_s']:.1f}" for r in data["rows"]) + " |"
    )
    for what in data["rows"][0]["host_side_s"]:
        values = [r["host_side_s"][what] for r in data["rows"]]
        cells = ["-" if v is None else f"{1e3 * v:.2f}" for v in values]
        out.append(f"| host side: {what} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--configs", default="|".join(CONFIGS), help="host.py arguments, '|'-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config (after 3 warm-up)")
    parser.add_argument("--profile_steps", type=int, default=3)
    parser.add_argument("--square_size", type=int, default=None, help="default 1024 on CPU, 8192 else")
    parser.add_argument("--out", default="roofline.json")
    args = parser.parse_args()
    device = jax.devices()[0]
    size = args.square_size or (1024 if device.platform == "cpu" else 8192)
    data = {
        "meta": dict(
            device=f"{device.device_kind} ({device.platform}, {os.cpu_count()} CPUs, {platform.processor()})",
            jax=jax.__version__,
            date=datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
            square_size=size,
            square_rates=roofline.square_rates(size),
            xla_flags=os.environ.get("XLA_FLAGS", ""),
        ),
        "rows": [],
    }
    for arg in args.configs.split("|"):
        under_test = roofline.StepUnderTest(arg)
        row = roofline.measure(under_test, steps=args.steps, square=data["meta"]["square_rates"])
        row["profile_s"] = step_profile.profile_steps(
            under_test.step, under_test.compiled.as_text(), args.profile_steps
        )
        row["host_side_s"] = step_profile.host_side(under_test)
        data["rows"].append(row)
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
        print(f"{_name(arg)}: step {1e3 * row['step_s']:.1f} ms", flush=True)
    print(markdown(data))


if __name__ == "__main__":
    main()
