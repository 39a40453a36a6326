"""One-run accelerator benchmark: matmul floors, the HSIC hot path against them, and train-step MFU.

Everything is measured in the same process, so every ratio is against floors of the same run:
  floors   8192^3 matmul rates (bf16; float32 at DEFAULT = TF32 on NVIDIA; float32 HIGHEST) and, per n,
           one (n, d) x (d, n) Gram matmul at DEFAULT and HIGHEST (n > 16384: a 16384-row slab x n / 16384).
  hsic     n in --sizes, d = 1024, gaussian kernels at fixed bandwidths (medians of the inputs, computed
           once; the median's own cost is reported apart), "fast" and "exact", dense (n <= dense_max: the
           library's dense path, called past its n <= 1024 switch) and blocked (the public `hsic`), forward
           and forward+backward (gradient w.r.t. x). Floor = two Gram matmuls (4 n^2 d FLOP) at the same
           precision. Value and gradient are checked against a float64 reference (JAX x64, textbook formula,
           analytic gradient) on fresh random inputs wherever n <= ref_max.
  batched  12 feature sets against one target: `batched_hsic` vs 12 separate `hsic` calls; floor = 13 Grams.
  memory   compiled.memory_analysis() of every blocked forward+backward (n = 262144: the O(n d) claim).
  steps    the trainer's jitted, donated AdamW train step (training.train_state.setup, run in a mesh) of the
           tokenizer and of each host (ar, masked, continuous) at a base size in bf16, InfoTok estimator
           none / hsic / vib: step time, tokens/s, MFU against the measured bf16 rate, regularizer overhead.
           MFU counts the LM honestly (mllm.flops: 6 x matmul params per token + causal attention at half,
           also for omni masks, so it under-counts) plus 3 x the XLA cost_analysis FLOPs of the tokenizer
           forward (convs, VQ distances, elementwise work); heads, losses, regularizer, optimizer are not.
  roofline the study configs' own train steps (benchmarks/roofline_report.py, as bench_roofline.py on a
           CPU): step time, FLOPs, the step's matrix products timed alone, and the profile by model part.

  python experiments/bench_accelerator.py --out bench_accelerator.json      # H200: everything (< ~8 min)
  python experiments/bench_accelerator.py --tiny --out /tmp/tiny.json       # CPU smoke test, every code path
  python experiments/bench_accelerator.py --cpu_overhead                    # default host, batch 32, on a CPU
The JSON is rewritten after every row, so a run cut short keeps what it measured. docs/performance.md has
the exact device command (the accelerator image needs the ml_collections wheel and PYTHONPATH=repo root).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax

from infotok_jax.benchmarks import PROFILES, timing
from infotok_jax.benchmarks.hsic_bench import bench_batched, bench_hsic
from infotok_jax.benchmarks.step_bench import ALL_ARMS, TINY_ARMS, bench_steps


class Report:
    """Collects sections and rewrites the JSON file after every added row."""

    def __init__(self, path: str, meta: dict[str, Any]):
        self.path, self.data = path, {"meta": meta}

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.data.setdefault(section, []).append(row)
        with open(self.path, "w") as f:
            json.dump(self.data, f, indent=1, default=float)


def _f(x: float | None, scale: float = 1e3, spec: str = ".2f") -> str:
    return "-" if x is None else format(x * scale, spec)


def _check(row: dict[str, Any]) -> str:
    return ("ok" if row["check_passed"] else "FAIL") if "check_passed" in row else "-"


def _table(title: str, header: str, lines: list[str]) -> list[str]:
    return ["", f"## {title}", f"| {header} |", "|" + "---|" * (header.count("|") + 1)] + lines


def markdown(data: dict[str, Any]) -> str:
    """Compact Markdown tables of every section present."""
    m = data["meta"]
    out = [f"device {m['device']} ({m['backend']}), jax {m['jax']}, {m['date']}, seed {m['seed']}"]
    if "floors" in data:
        out += _table(
            "Matmul rates (size^3)",
            "dtype / precision | size | TFLOP/s",
            [f"| {r['what']} | {r['size']} | {r['tflops']:.1f} |" for r in data["floors"]],
        )
    if "hsic" in data:
        out += _table(
            "HSIC (floor = two (n,d)x(d,n) Gram matmuls at the same precision)",
            "n | prec | variant | block | fwd ms | fwd/floor | f+b ms | f+b/floor | floor ms | "
            "median bw ms | rel err | grad rel err | check",
            [
                f"| {r['n']} | {r['precision']} | {r['variant']} | {r['block']} | {_f(r['fwd_s'])} | "
                f"{r['fwd_over_floor']:.2f} | {_f(r['fwd_bwd_s'])} | {r['fwd_bwd_over_floor']:.2f} | "
                f"{_f(r['floor_s'])} | {_f(r['median_bw_s'])} | {_f(r.get('rel_err'), 1, '.1e')} | "
                f"{_f(r.get('grad_rel_err'), 1, '.1e')} | {_check(r)} |"
                for r in data["hsic"]
            ],
        )
    if "batched" in data:
        out += _table(
            "Batched HSIC (fast; floor = sets + 1 Gram matmuls)",
            "n | sets | batched ms | separate ms | speed-up | batched/floor | max rel err | check",
            [
                f"| {r['n']} | {r['sets']} | {_f(r['batched_s'])} | {_f(r['separate_s'])} | "
                f"{r['speedup']:.2f} | {r['batched_over_floor']:.2f} | "
                f"{_f(r.get('max_rel_err'), 1, '.1e')} | {_check(r)} |"
                for r in data["batched"]
            ],
        )
    if "memory" in data:
        out += _table(
            "Compiled memory of the blocked fwd+bwd",
            "n | prec | temp MiB | arguments MiB | temp / (4 n d bytes) | n^2 float32 GiB",
            [
                f"| {r['n']} | {r['precision']} | {r['temp_bytes'] / 2**20:.1f} | "
                f"{r['argument_bytes'] / 2**20:.1f} | {r['temp_over_n_d']:.2f} | "
                f"{r['n2_float32_bytes'] / 2**30:.1f} |"
                for r in data["memory"]
            ],
        )
    for section in ("steps", "cpu_overhead"):
        if section in data:
            out += _table(
                f"Train steps ({section})",
                "model | estimator | batch | step ms | LM tokens/s | "
                "images/s | model TFLOP/step | MFU % | MFU % (LM only) | overhead %",
                [
                    f"| {r['kind']} | {r['estimator']} | {r['batch']} | {_f(r['step_s'])} | "
                    f"{r['lm_tokens_per_s']:.0f} | {r['images_per_s']:.0f} | "
                    f"{_f(r['model_flops'], 1e-12, '.3f')} | {_f(r.get('mfu'), 100, '.1f')} | "
                    f"{_f(r.get('mfu_lm_only'), 100, '.1f')} | {r['overhead_pct']:+.1f} |"
                    for r in data[section]
                ],
            )
    if "roofline" in data:
        from infotok_jax.benchmarks import roofline_report

        out += ["", "## Roofline of the study configs (benchmarks/roofline_report.py)", ""]
        out.append(roofline_report.markdown(data["meta"], data["roofline"]))
    return "\n".join(out)


def roofline_section(args: argparse.Namespace, prof: dict, rates: dict[str, float], report: Report) -> None:
    """The study configs' roofline rows (benchmarks/roofline_report.py). They build the experiment task,
    whose modules import tensorflow-datasets and grain: without them the section is skipped, saying so."""
    try:
        from infotok_jax.benchmarks import roofline_report
    except ImportError as e:
        print(f"roofline section skipped: {e} (it needs tensorflow-datasets and grain)", flush=True)
        return
    square = {"float32": rates["float32 DEFAULT (TF32)"], "bfloat16": rates["bf16"]}
    report.data["meta"].update(square_size=prof["mm"], square_rates=square)
    for row in roofline_report.rows(roofline_report.CONFIGS, square, steps=args.reps * 4):
        report.add("roofline", row)


def all_checks_passed(data: dict[str, Any]) -> bool:
    rows = data.get("hsic", []) + data.get("batched", [])
    steps = data.get("steps", []) + data.get("cpu_overhead", [])
    return all(r.get("check_passed", True) for r in rows) and all(r["loss_finite"] for r in steps)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", help="HSIC n values (default 4096 16384 65536 262144)")
    p.add_argument("--d", type=int, help="HSIC feature dimension (default 1024)")
    p.add_argument("--block_size", type=int, help="blocked tile rows (default: the library's choice)")
    p.add_argument("--sets", type=int, default=12, help="feature sets of the batched HSIC")
    p.add_argument("--skip_hsic", action="store_true", help="skip the HSIC, batched and memory sections")
    p.add_argument("--skip_steps", action="store_true", help="skip the train-step section")
    p.add_argument(
        "--skip_roofline",
        action="store_true",
        help="skip the roofline section (the study configs' steps, as experiments/bench_roofline.py)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="CPU smoke test: tiny sizes and models, every code path"
    )
    p.add_argument(
        "--step_models",
        nargs="+",
        default=list(TINY_ARMS),
        choices=list(TINY_ARMS),
        help="models of the train-step section",
    )
    p.add_argument(
        "--cpu_overhead",
        action="store_true",
        help="only the default (small) ar host step, batch 32: estimator none vs hsic vs vib",
    )
    p.add_argument(
        "--host_batch", type=int, help="host step batch (default 64 base, 4 tiny, 32 cpu_overhead)"
    )
    p.add_argument("--tokenizer_batch", type=int, help="tokenizer step batch (default 256 base, 4 tiny)")
    p.add_argument("--reps", type=int, default=5, help="timed calls after one warm-up (median reported)")
    p.add_argument(
        "--compile_threads",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="train steps compiled concurrently (1 = sequential)",
    )
    p.add_argument("--profile_dir", default="", help="write a jax.profiler trace of 3 steps per variant here")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000, help="inputs seed (default: fresh)")
    p.add_argument("--out", default="bench_accelerator.json", help="JSON output path")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    prof = PROFILES["tiny" if args.tiny else "full"]
    args.sizes, args.d = args.sizes or list(prof["sizes"]), args.d or prof["d"]
    profile = "default" if args.cpu_overhead else prof["steps"]
    args.host_batch = args.host_batch or {"base": 64, "tiny": 4, "default": 32}[profile]
    args.tokenizer_batch = args.tokenizer_batch or {"base": 256, "tiny": 4, "default": 32}[profile]
    dev = jax.devices()[0]
    meta = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        jax=jax.__version__,
        backend=jax.default_backend(),
        device=dev.device_kind,
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        seed=args.seed,
        tiny=args.tiny,
        argv=list(sys.argv[1:] if argv is None else argv),
    )
    report = Report(args.out, meta)
    start = time.perf_counter()
    if args.cpu_overhead:
        bench_steps(args, "default", {"ar": ALL_ARMS}, report, None, section="cpu_overhead")
    else:
        if jax.default_backend() == "cpu" and not args.tiny:
            print("warning: full sizes on a CPU take very long; use --tiny for a smoke test", flush=True)
        rates = timing.matmul_floors(prof["mm"], args.reps, report)
        if not args.skip_hsic:
            gram_s = timing.gram_floors(set(args.sizes) | set(prof["batched"]), args.d, args.reps, report)
            bench_hsic(args, prof, report, gram_s)
            bench_batched(args, prof, report, gram_s)
            print(f"hsic sections done at {time.perf_counter() - start:.0f} s", flush=True)
        if not args.skip_steps:
            arms = {
                k: v
                for k, v in (TINY_ARMS if args.tiny else dict.fromkeys(TINY_ARMS, ALL_ARMS)).items()
                if k in args.step_models
            }
            bench_steps(args, profile, arms, report, rates["bf16"])
        if not (args.skip_roofline or args.tiny):
            roofline_section(args, prof, rates, report)
    report.data["meta"]["wall_s"] = time.perf_counter() - start
    report.data["checks_passed"] = all_checks_passed(report.data)
    report.data["markdown"] = markdown(report.data)
    report.add("done", {"ok": True})
    print(report.data["markdown"])
    print(
        f"all checks passed: {report.data['checks_passed']}; wrote {args.out} "
        f"({report.data['meta']['wall_s']:.0f} s)"
    )
    return report.data


if __name__ == "__main__":
    main()
