"""HSIC sections of the accelerator benchmark: the hot path against its matmul floor, checked in float64.

  hsic     dense (the library's dense path, called past its n <= 1024 switch) and blocked (the public
           `hsic`) x "fast"/"exact" x forward / forward+backward (gradient w.r.t. x), gaussian kernels at
           fixed median bandwidths; floor = two Gram matmuls at the same precision.
  batched  `batched_hsic` of `sets` feature sets against one target vs as many `hsic` calls.
  memory   compiled.memory_analysis() of every blocked forward+backward (the O(n d) claim).
Value and gradient are checked against `reference`, the textbook biased HSIC with its analytic gradient in
float64 (JAX x64), so the accuracy columns measure the fast paths against an independent formula.
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infotok_jax import estimators as est
from infotok_jax.benchmarks.timing import RowSink, time_fn
from infotok_jax.estimators import gram_sums, hsic_estimators

VALUE_TOL = {"fast": 1e-3, "exact": 1e-5}  # relative error of the value vs float64 (issue 2 policy)
GRAD_TOL = {"fast": 1e-2, "exact": 1e-4}  # relative Frobenius error of the gradient w.r.t. x


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def hsic_inputs(key: jax.Array, sets: int, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """Dependent pairs: y ~ N(0, I) (n, d); xs[s] = tanh(y W_s) + (0.25 + 0.1 s) noise, (sets, n, d)."""
    ky, kw, kn = jax.random.split(key, 3)
    y_NxD = jax.random.normal(ky, (n, d), jnp.float32)
    w_SxDxD = jax.random.normal(kw, (sets, d, d), jnp.float32) / math.sqrt(d)
    scale_S = 0.25 + 0.1 * jnp.arange(sets, dtype=jnp.float32)
    xs = jnp.tanh(jnp.einsum("nd,sde->sne", y_NxD, w_SxDxD, precision=lax.Precision.HIGHEST))
    return xs + scale_S[:, None, None] * jax.random.normal(kn, (sets, n, d), jnp.float32), y_NxD


def dense_hsic(
    x_NxD: jax.Array, y_NxE: jax.Array, bandwidths: tuple[float, float], precision: str
) -> jax.Array:
    """The library's dense biased-HSIC path (what `hsic` runs for n <= 1024), for any n."""
    sides = [
        gram_sums.make_side(a[None].astype(jnp.float32), jnp.full((1,), bw, jnp.float32), "gaussian")
        for a, bw in zip((x_NxD, y_NxE), bandwidths, strict=True)
    ]
    s = gram_sums.dense_sums(*sides, unbiased=False, precision=precision, need_self=False)
    return gram_sums.combine(s.s_kl_S, s.r_k_SxN, s.r_l_N[None], x_NxD.shape[0], False)[0]


@jax.jit
def reference_hsic(
    x_NxD: jax.Array, y_NxE: jax.Array, bw_x: jax.Array, bw_y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Biased HSIC tr(K H L H) / (n-1)^2 and its gradient w.r.t. x, from the textbook formulas.

    Call under `jax.enable_x64(True)` with float64 inputs. With G = H L H / (n-1)^2 and W = G * K
    (elementwise), d HSIC / d x_i = -(2 / bw_x^2) sum_j W_ij (x_i - x_j) for the gaussian kernel.
    """
    n = x_NxD.shape[0]

    def gram(a: jax.Array, bw: jax.Array) -> jax.Array:
        sq_N = jnp.sum(a * a, axis=1)
        d2 = sq_N[:, None] + sq_N[None, :] - 2.0 * jnp.matmul(a, a.T, precision=lax.Precision.HIGHEST)
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2.0 * bw * bw))

    def center(m: jax.Array) -> jax.Array:
        return m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + jnp.full((1, 1), m.mean())

    k, lc = gram(x_NxD, bw_x), center(gram(y_NxE, bw_y)) / ((n - 1.0) * (n - 1.0))
    w = lc * k
    grad = -(2.0 / (bw_x * bw_x)) * (
        w.sum(1)[:, None] * x_NxD - jnp.matmul(w, x_NxD, precision=lax.Precision.HIGHEST)
    )
    return jnp.sum(k * lc), grad


def reference(x: jax.Array, y: jax.Array, bw: tuple[float, float]) -> tuple[float, np.ndarray]:
    """float64 (value, gradient w.r.t. x) of `reference_hsic` at bandwidths `bw` = (bw_x, bw_y)."""
    with jax.enable_x64(True):
        value, grad = reference_hsic(
            x.astype(jnp.float64), y.astype(jnp.float64), jnp.float64(bw[0]), jnp.float64(bw[1])
        )
        return float(value), np.asarray(grad)


def rel_err(value: Any, ref: Any) -> float:
    """||value - ref|| / ||ref|| in float64 (Frobenius norm for arrays)."""
    value, ref = np.asarray(value, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(value - ref) / max(np.linalg.norm(ref), 1e-300))


def bench_hsic(args: argparse.Namespace, prof: dict, report: RowSink, gram_s: dict) -> None:
    """Dense/blocked x fast/exact x fwd/fwd+bwd for every n, checked against float64 where affordable."""
    for n in args.sizes:
        xs, y = hsic_inputs(jax.random.PRNGKey(args.seed + n), 1, n, args.d)
        x = xs[0]
        bw = (float(est.median_bandwidth(x)), float(est.median_bandwidth(y)))
        medians = jax.jit(lambda a, b: (est.median_bandwidth(a), est.median_bandwidth(b)))
        median_s, _, _ = time_fn(functools.partial(medians, x, y), args.reps)
        ref = reference(x, y, bw) if n <= prof["ref_max"] else None
        block = args.block_size or hsic_estimators.default_block_size(n)
        for precision in ("fast", "exact"):
            for variant in ("dense", "blocked") if n <= prof["dense_max"] else ("blocked",):
                if variant == "dense":
                    f = functools.partial(dense_hsic, bandwidths=bw, precision=precision)
                else:
                    f = functools.partial(
                        est.hsic, bandwidth_x=bw[0], bandwidth_y=bw[1], precision=precision, block_size=block
                    )
                fwd, fb = jax.jit(f), jax.jit(jax.value_and_grad(f))
                row: dict[str, Any] = dict(
                    n=n,
                    d=args.d,
                    precision=precision,
                    variant=variant,
                    block=block if variant == "blocked" else n,
                    median_bw_s=median_s,
                )
                lowered_fb = fb.lower(x, y)
                compiled_fb = lowered_fb.compile()
                if variant == "blocked" and compiled_fb.memory_analysis() is not None:
                    report.add("memory", memory_row(compiled_fb, n, args.d, precision))
                row["fwd_s"], value, row["fwd_reps"] = time_fn(functools.partial(fwd, x, y), args.reps)
                row["fwd_bwd_s"], (value_fb, grad), row["fwd_bwd_reps"] = time_fn(
                    functools.partial(compiled_fb, x, y), args.reps
                )
                floor = 2.0 * gram_s[(n, precision)]
                row.update(
                    floor_s=floor,
                    fwd_over_floor=row["fwd_s"] / floor,
                    fwd_bwd_over_floor=row["fwd_bwd_s"] / floor,
                    value=float(value),
                )
                if ref is not None:
                    row.update(
                        rel_err=max(rel_err(value, ref[0]), rel_err(value_fb, ref[0])),
                        grad_rel_err=rel_err(grad, ref[1]),
                        tol=VALUE_TOL[precision],
                        grad_tol=GRAD_TOL[precision],
                    )
                    row["check_passed"] = bool(
                        row["rel_err"] <= row["tol"] and row["grad_rel_err"] <= row["grad_tol"]
                    )
                report.add("hsic", row)
                print_row(row)
        del xs, y, x


def memory_row(compiled: Any, n: int, d: int, precision: str) -> dict[str, Any]:
    """Compiled memory of a blocked forward+backward against O(n d) and n^2."""
    m = compiled.memory_analysis()
    row = dict(
        n=n,
        d=d,
        precision=precision,
        temp_bytes=m.temp_size_in_bytes,
        argument_bytes=m.argument_size_in_bytes,
        output_bytes=m.output_size_in_bytes,
        n_d_float32_bytes=4.0 * n * d,
        n2_float32_bytes=4.0 * n * n,
    )
    row["temp_over_n_d"] = row["temp_bytes"] / row["n_d_float32_bytes"]
    return row


def bench_batched(args: argparse.Namespace, prof: dict, report: RowSink, gram_s: dict) -> None:
    """batched_hsic over `sets` feature sets vs as many separate hsic calls (fast precision)."""
    for n in prof["batched"]:
        xs, y = hsic_inputs(jax.random.PRNGKey(args.seed + 7 * n), args.sets, n, args.d)
        bw = (float(est.median_bandwidth(xs[0])), float(est.median_bandwidth(y)))
        kw = dict(bandwidth_x=bw[0], bandwidth_y=bw[1], precision="fast")
        batched = jax.jit(functools.partial(est.batched_hsic, **kw))
        single = jax.jit(functools.partial(est.hsic, **kw))
        parts = [xs[i] for i in range(args.sets)]
        row: dict[str, Any] = dict(n=n, d=args.d, sets=args.sets)
        row["batched_s"], values, _ = time_fn(functools.partial(batched, xs, y), args.reps)
        row["separate_s"], separate, _ = time_fn(
            lambda single=single, y=y, parts=parts: [single(p, y) for p in parts], args.reps
        )
        floor = (args.sets + 1) * gram_s[(n, "fast")]
        row.update(
            speedup=row["separate_s"] / row["batched_s"],
            floor_s=floor,
            batched_over_floor=row["batched_s"] / floor,
            sets_per_s=args.sets / row["batched_s"],
            rel_diff_vs_separate=rel_err(values, np.asarray(separate)),
            tol=VALUE_TOL["fast"],
        )
        if n <= prof["ref_max"]:
            refs = [reference(p, y, bw)[0] for p in parts]
            row["max_rel_err"] = max(rel_err(v, r) for v, r in zip(np.asarray(values), refs, strict=True))
            row["check_passed"] = bool(
                row["max_rel_err"] <= row["tol"] and row["rel_diff_vs_separate"] <= row["tol"]
            )
        report.add("batched", row)
        print(
            f"batched n={n} sets={args.sets}: {1e3 * row['batched_s']:.2f} ms vs separate "
            f"{1e3 * row['separate_s']:.2f} ms ({row['speedup']:.2f}x), "
            f"{row['batched_over_floor']:.2f}x floor",
            flush=True,
        )


def print_row(row: dict[str, Any]) -> None:
    """One progress line of an "hsic" row."""
    check = (
        f"rel {row['rel_err']:.1e} grad {row['grad_rel_err']:.1e} {'ok' if row['check_passed'] else 'FAIL'}"
        if "rel_err" in row
        else "unchecked"
    )
    print(
        f"hsic n={row['n']} {row['precision']} {row['variant']}: fwd {1e3 * row['fwd_s']:.2f} ms "
        f"({row['fwd_over_floor']:.2f}x floor), fwd+bwd {1e3 * row['fwd_bwd_s']:.2f} ms "
        f"({row['fwd_bwd_over_floor']:.2f}x), {check}",
        flush=True,
    )
