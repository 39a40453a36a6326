"""Benchmark of the HSIC estimators: CPU comparison against public formulations, and accelerator scaling.

CPU mode (default): n in {512, 1024, 2048, 4096}, d = 256, one process, the same float32 inputs for
every implementation, median-heuristic bandwidths included in every timing:
  infotok_jax   `infotok_jax.estimators.hsic` under jax.jit (biased, "median", exact precision)
  numpy_H       the explicit-centring-matrix formulation of public HSIC code: np.median of all pair
                distances, K, L, trace(K @ H @ L @ H) / (n-1)^2 in NumPy
  hyppo         hyppo's `Hsic(bias=True).statistic` on float64 copies (only when hyppo is importable;
                its statistic is normalised, so only its time is compared)
It prints a table with the speed-up of infotok_jax over each and writes JSON.

Accelerator mode (--mode accelerator): n in {4096, 16384, 65536, 262144}, d = 1024; forward and
forward+backward (gradient w.r.t. x) in "fast" and "exact" precision, next to the Gram-matmul floor
measured in the same run: an (n, d) x (d, n) matmul at the same precision (for n > 16384 the n x n output
does not fit, so the floor is a (16384, d) x (d, n) slab scaled by n / 16384, i.e. the same FLOPs).

  python experiments/bench_estimators.py --out bench_cpu.json
  python experiments/bench_estimators.py --mode accelerator --out bench_accel.json
  python experiments/bench_estimators.py --mode accelerator --sizes 256 512 --d 32   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax import estimators as est

CPU_SIZES = (512, 1024, 2048, 4096)
ACCEL_SIZES = (4096, 16384, 65536, 262144)
FLOOR_SLAB = 16384


def make_inputs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, 1) (n, d); y = tanh(x W) + 0.5 noise: dependent float32 pair."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)
    y = np.tanh(x @ w) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return x, y.astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def device_inputs(n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """The same distribution as make_inputs, generated on the device (n up to 262144 at d = 1024)."""
    kx, kw, kn = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (n, d), jnp.float32)
    w = jax.random.normal(kw, (d, d), jnp.float32) / np.sqrt(d)
    y = jnp.tanh(jnp.matmul(x, w, precision="highest")) + 0.5 * jax.random.normal(kn, (n, d), jnp.float32)
    return x, y


def time_call(fn: Callable[..., Any], reps: int, *args: Any) -> tuple[float, float]:
    """(first call seconds incl. compile, median seconds of `reps` further calls) of fn(*args)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def numpy_explicit_h(x: np.ndarray, y: np.ndarray) -> float:
    """Public-code style biased HSIC: full-median bandwidths, explicit H, trace(K H L H) / (n-1)^2."""
    n = x.shape[0]

    def gram(a: np.ndarray) -> np.ndarray:
        sq = np.maximum((a * a).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2.0 * a @ a.T, 0.0)
        dist = np.sqrt(sq[np.triu_indices(n, k=1)])
        sigma = np.median(dist)
        return np.exp(-sq / (2.0 * sigma * sigma))

    k, g = gram(x), gram(y)
    h = np.eye(n, dtype=x.dtype) - np.ones((n, n), dtype=x.dtype) / n
    return float(np.trace(k @ h @ g @ h) / (n - 1) ** 2)


def hyppo_statistic() -> Callable[[np.ndarray, np.ndarray], float] | None:
    """hyppo's biased Hsic statistic on float64 copies, or None when hyppo is not installed."""
    try:
        from hyppo.independence import Hsic
    except ImportError:
        return None
    test = Hsic(bias=True)
    return lambda x, y: float(test.statistic(x.astype(np.float64), y.astype(np.float64)))


def bench_cpu(sizes: list[int], d: int, reps: int) -> list[dict[str, Any]]:
    hyppo = hyppo_statistic()
    hsic_jit = jax.jit(est.hsic)
    medians_jit = jax.jit(lambda a, b: (est.median_bandwidth(a), est.median_bandwidth(b)))
    rows = []
    for n in sizes:
        x, y = make_inputs(n, d)
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        row: dict[str, Any] = {"n": n, "d": d}
        row["infotok_jax_first_call_s"], row["infotok_jax_s"] = time_call(hsic_jit, reps, xj, yj)
        _, row["median_bandwidth_s"] = time_call(medians_jit, reps, xj, yj)
        numpy_reps = max(1, reps if n <= 2048 else reps // 2)
        _, row["numpy_H_s"] = time_call(numpy_explicit_h, numpy_reps, x, y)
        ours = float(hsic_jit(xj, yj))
        theirs = numpy_explicit_h(x.astype(np.float64), y.astype(np.float64))
        row["rel_diff_vs_numpy_float64"] = abs(ours - theirs) / abs(theirs)
        row["speedup_vs_numpy_H"] = row["numpy_H_s"] / row["infotok_jax_s"]
        if hyppo is not None:
            _, row["hyppo_s"] = time_call(hyppo, numpy_reps, x, y)
            row["speedup_vs_hyppo"] = row["hyppo_s"] / row["infotok_jax_s"]
        rows.append(row)
        print_row(row, cpu=True)
    return rows


def matmul_floor(n: int, d: int, precision: str, reps: int) -> tuple[float, bool]:
    """Seconds for an (n, d) x (d, n) matmul at the policy's precision; (time, extrapolated?)."""
    prec = jax.lax.Precision.HIGHEST if precision == "exact" else jax.lax.Precision.DEFAULT
    rows = min(n, FLOOR_SLAB)
    a = jnp.asarray(np.random.default_rng(1).standard_normal((rows, d), dtype=np.float32))
    b = jnp.asarray(np.random.default_rng(2).standard_normal((n, d), dtype=np.float32))
    mm = jax.jit(
        lambda p, q: jax.lax.dot_general(
            p, q, (((1,), (1,)), ((), ())), precision=prec, preferred_element_type=jnp.float32
        )
    )
    _, seconds = time_call(mm, reps, a, b)
    return seconds * (n / rows), rows < n


def bench_accelerator(sizes: list[int], d: int, reps: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        xj, yj = device_inputs(n, d)
        for precision in ("fast", "exact"):
            row: dict[str, Any] = {"n": n, "d": xj.shape[1], "precision": precision}
            fwd = jax.jit(lambda a, b, p=precision: est.hsic(a, b, precision=p))
            bwd = jax.jit(jax.value_and_grad(lambda a, b, p=precision: est.hsic(a, b, precision=p)))
            row["fwd_first_s"], row["fwd_s"] = time_call(fwd, reps, xj, yj)
            row["fwd_bwd_first_s"], row["fwd_bwd_s"] = time_call(bwd, reps, xj, yj)
            row["floor_s"], row["floor_extrapolated"] = matmul_floor(n, xj.shape[1], precision, reps)
            row["fwd_over_floor"] = row["fwd_s"] / row["floor_s"]
            row["fwd_bwd_over_floor"] = row["fwd_bwd_s"] / row["floor_s"]
            rows.append(row)
            print_row(row, cpu=False)
    return rows


def print_row(row: dict[str, Any], cpu: bool) -> None:
    if cpu:
        hyppo = (
            f"{1e3 * row['hyppo_s']:10.1f} {row['speedup_vs_hyppo']:7.1f}x"
            if "hyppo_s" in row
            else f"{'n/a':>10} {'':>8}"
        )
        print(
            f"{row['n']:6d} {1e3 * row['infotok_jax_s']:12.1f} {1e3 * row['median_bandwidth_s']:9.1f} "
            f"{1e3 * row['numpy_H_s']:10.1f} {row['speedup_vs_numpy_H']:7.1f}x {hyppo} "
            f"{row['rel_diff_vs_numpy_float64']:9.1e}",
            flush=True,
        )
    else:
        print(
            f"{row['n']:7d} {row['d']:5d} {row['precision']:>6} {1e3 * row['fwd_s']:10.2f} "
            f"{1e3 * row['fwd_bwd_s']:12.2f} {1e3 * row['floor_s']:10.2f}"
            f"{'*' if row['floor_extrapolated'] else ' '} {row['fwd_over_floor']:8.2f} "
            f"{row['fwd_bwd_over_floor']:9.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("cpu", "accelerator"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", help="override the n values of the mode")
    parser.add_argument("--d", type=int, help="feature dimension (default 256 cpu, 1024 accelerator)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after the first call")
    parser.add_argument("--out", default="bench_estimators.json", help="JSON output path")
    args = parser.parse_args()
    cpu = args.mode == "cpu"
    sizes = args.sizes or list(CPU_SIZES if cpu else ACCEL_SIZES)
    d = args.d or (256 if cpu else 1024)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    if cpu:
        print(
            f"{'n':>6} {'infotok ms':>12} {'median ms':>9} {'numpy_H ms':>10} {'speedup':>8} "
            f"{'hyppo ms':>10} {'speedup':>8} {'rel diff':>9}"
        )
        rows = bench_cpu(sizes, d, args.reps)
    else:
        print(
            f"{'n':>7} {'d':>5} {'prec':>6} {'fwd ms':>10} {'fwd+bwd ms':>12} {'floor ms':>11} "
            f"{'fwd/floor':>8} {'f+b/floor':>9}   (* = floor extrapolated from a slab)"
        )
        rows = bench_accelerator(sizes, d, args.reps)
    report = {
        "mode": args.mode,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
