"""Roofline and profile of the trainer's step: study configs of the three hosts and the main config.

    python experiments/bench_roofline.py --out roofline.json            # CPU or accelerator alike

Per config (infotok_jax/benchmarks/roofline.py): the median step time, XLA's and the analytic FLOP counts,
the step's own matrix products timed alone at their shapes, and the square float32 / bf16 matmul rates of
the same process; then (benchmarks/step_profile.py) a jax.profiler trace of a few steps attributed to the
model's parts, and the host-side work around a step. Prints Markdown tables (benchmarks/roofline_report.py);
the JSON is rewritten after every config, so a run cut short keeps what it measured. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import jax

from infotok_jax.benchmarks import roofline, roofline_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--configs", default="|".join(roofline_report.CONFIGS), help="host.py arguments, '|'-separated"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config (after 3 warm-up)")
    parser.add_argument("--profile_steps", type=int, default=3)
    parser.add_argument("--square_size", type=int, default=None, help="default 1024 on CPU, 8192 else")
    parser.add_argument("--out", default="roofline.json")
    args = parser.parse_args()
    device = jax.devices()[0]
    size = args.square_size or (1024 if device.platform == "cpu" else 8192)
    meta = dict(
        device=f"{device.device_kind} ({device.platform}, {os.cpu_count()} CPUs, {platform.processor()})",
        jax=jax.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        square_size=size,
        square_rates=roofline.square_rates(size),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    rows = []
    for row in roofline_report.rows(
        tuple(args.configs.split("|")), meta["square_rates"], args.steps, args.profile_steps
    ):
        rows.append(row)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        print(f"{row['config'] or 'main'}: step {1e3 * row['step_s']:.1f} ms", flush=True)
    print(roofline_report.markdown(meta, rows))


if __name__ == "__main__":
    main()
