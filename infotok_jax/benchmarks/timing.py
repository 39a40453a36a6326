"""Timing primitives and floors of the accelerator benchmark: every ratio it reports is against these.

time_fn is the one timer (one warm-up call, then the median of up to `reps` calls within a time budget);
matmul_floors and gram_floors measure, in the same process, the size^3 matmul rates and the per-n Gram
matmul times that the HSIC and train-step sections are divided by. compile_all compiles lowered programs
concurrently (XLA compiles outside the GIL). RowSink is the interface the sections write rows to (the
driver's Report, which rewrites the JSON after every row).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax import lax

SLAB = 16384  # Gram floors past this many rows time a SLAB-row slab and scale by n / SLAB


class RowSink(Protocol):
    """Where the sections put their result rows."""

    def add(self, section: str, row: dict[str, Any]) -> None:
        """Appends `row` to `section`."""


def time_fn(fn: Callable[[], Any], reps: int, budget_s: float = 5.0) -> tuple[float, Any, int]:
    """(median seconds, last output, timed calls): one warm-up call, then up to `reps` timed calls
    (fewer when a call is slow, so that the timed calls fit in about `budget_s`)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    count = max(1, min(reps, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    times = []
    for _ in range(count):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, count


def compile_all(lowered: dict[Any, Any], threads: int, options: dict | None = None) -> dict[Any, Any]:
    """Compiles lowered programs, `threads` at a time (XLA compiles outside the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        futures = {name: pool.submit(low.compile, options) for name, low in lowered.items()}
        return {name: f.result() for name, f in futures.items()}


def _prec(precision: str) -> lax.Precision:
    return lax.Precision.HIGHEST if precision == "exact" else lax.Precision.DEFAULT


def matmul_rate(size: int, dtype: Any, precision: str, reps: int) -> float:
    """FLOP/s of a size^3 matmul in `dtype` at the policy's precision."""
    a = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
    mm = jax.jit(lambda p, q: jnp.matmul(p, q, precision=_prec(precision)))
    seconds, _, _ = time_fn(lambda: mm(a, a), reps)
    return 2.0 * size**3 / seconds


def gram_seconds(n: int, d: int, precision: str, reps: int) -> tuple[float, bool]:
    """Seconds of one (n, d) x (d, n) float32 matmul (slab-extrapolated past SLAB rows), extrapolated?"""
    rows = min(n, SLAB)
    a = jax.random.normal(jax.random.PRNGKey(2), (rows, d), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(3), (n, d), jnp.float32)
    mm = jax.jit(
        lambda p, q: lax.dot_general(
            p, q, (((1,), (1,)), ((), ())), precision=_prec(precision), preferred_element_type=jnp.float32
        )
    )
    seconds, _, _ = time_fn(lambda: mm(a, b), reps)
    return seconds * n / rows, rows < n


def matmul_floors(size: int, reps: int, report: RowSink) -> dict[str, float]:
    """FLOP/s of a size^3 matmul in bf16, float32 DEFAULT (TF32 on NVIDIA) and float32 HIGHEST, each
    added to the "floors" section; keyed as in the table ("bf16", ...)."""
    rates = {
        "bf16": matmul_rate(size, jnp.bfloat16, "fast", reps),
        "float32 DEFAULT (TF32)": matmul_rate(size, jnp.float32, "fast", reps),
        "float32 HIGHEST": matmul_rate(size, jnp.float32, "exact", reps),
    }
    for what, rate in rates.items():
        report.add("floors", dict(what=what, size=size, tflops=rate / 1e12))
    return rates


def gram_floors(sizes: Iterable[int], d: int, reps: int, report: RowSink) -> dict[tuple[int, str], float]:
    """Seconds of one (n, d) x (d, n) Gram matmul per (n, precision) for every distinct n, ascending, each
    added to the "gram_floor" section."""
    gram_s = {}
    for n in sorted(set(sizes)):
        for precision in ("fast", "exact"):
            gram_s[(n, precision)], extrapolated = gram_seconds(n, d, precision, reps)
            report.add(
                "gram_floor",
                dict(
                    n=n,
                    d=d,
                    precision=precision,
                    extrapolated=extrapolated,
                    one_gram_s=gram_s[(n, precision)],
                ),
            )
    return gram_s
