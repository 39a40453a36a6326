"""Public HSIC estimators: `hsic`, `normalized_hsic` (CKA), `batched_hsic`, `hsic_one_to_many`, linear forms.

HSIC (Gretton et al. 2005) measures dependence between paired samples x (n, dx) and y (n, dy) through
their kernel Gram matrices K and L:
  "biased"    tr(K H L H) / (n - 1)^2,  H = I - 11^T / n   (>= 0; the V-statistic)
  "unbiased"  Song et al. (2012), zero diagonals, n >= 4    (can be negative)
Normalised HSIC is HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)) (CKA); with linear kernels it is linear CKA.

Computation (see gram_sums.py): features are centred first; for n <= DENSE_MAX_N and block_size=None the
full Gram matrices are built and exactly centred; otherwise the upper-triangular tiles of the symmetric
Gram matrices are streamed (memory O(n (d + block)), gradient included). All scale factors are Python
floats, so any n traces.
Precision policy: "exact" (HIGHEST float32 matmuls, <= 1e-5 relative to float64) or "fast" (DEFAULT
precision Gram matmuls: TF32 on recent NVIDIA GPUs, float32 accumulation); see kernels.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infotok_jax.estimators import bandwidth as bandwidth_lib
from infotok_jax.estimators import gram_sums, validation
from infotok_jax.estimators import kernels as kernels_lib

Array = jax.Array

DENSE_MAX_N = 1024


def default_block_size(n: int) -> int:
    """Tile size when `block_size=None` selects the blocked path.

    512 on CPU (measured best at n = 4096 here). On accelerators n / 8 clamped to [1024, 4096]: large
    tiles amortise the per-tile loop overhead, at least 8 tiles per row keep the symmetric saving
    (untuned: no accelerator was available when this was written).
    """
    if jax.default_backend() == "cpu":
        return min(n, 512)
    return min(n, max(1024, min(4096, n // 8)))


def _check_common(
    kernel_x: str,
    kernel_y: str,
    bandwidth_x: Any,
    bandwidth_y: Any,
    estimator: str,
    block_size: Any,
    precision: str,
    median_subsample: int,
) -> None:
    validation.check_choice("kernel_x", kernel_x, validation.KERNELS)
    validation.check_choice("kernel_y", kernel_y, validation.KERNELS)
    validation.check_bandwidth("bandwidth_x", bandwidth_x, kernel_x)
    validation.check_bandwidth("bandwidth_y", bandwidth_y, kernel_y)
    validation.check_choice("estimator", estimator, validation.ESTIMATORS)
    validation.check_choice("precision", precision, validation.PRECISIONS)
    validation.check_block_size(block_size)
    validation.check_positive_int("median_subsample", median_subsample, minimum=2)


def _sums(
    xs_SxNxD: Array,
    y_NxE: Array,
    *,
    kernel_x: str,
    kernel_y: str,
    bandwidth_x: Any,
    bandwidth_y: Any,
    estimator: str,
    block_size: int | None,
    precision: str,
    median_subsample: int,
    need_self: bool,
) -> gram_sums.Sums:
    """Resolves bandwidths, builds both sides and dispatches to the dense or blocked sums."""
    n = xs_SxNxD.shape[1]
    dtype = jnp.promote_types(
        kernels_lib.compute_dtype(xs_SxNxD.dtype), kernels_lib.compute_dtype(y_NxE.dtype)
    )
    bw_x = jax.vmap(
        lambda x: bandwidth_lib.resolve_bandwidth(
            "bandwidth_x", bandwidth_x, x, kernel_x, median_subsample, dtype
        )
    )(xs_SxNxD)
    bw_y = bandwidth_lib.resolve_bandwidth(
        "bandwidth_y", bandwidth_y, y_NxE, kernel_y, median_subsample, dtype
    )[None]
    side_x = gram_sums.make_side(xs_SxNxD.astype(dtype), bw_x, kernel_x)
    side_y = gram_sums.make_side(y_NxE.astype(dtype)[None], bw_y, kernel_y)
    unbiased = estimator == "unbiased"
    if block_size is None and n <= DENSE_MAX_N:
        return gram_sums.dense_sums(
            side_x, side_y, unbiased=unbiased, precision=precision, need_self=need_self
        )
    block = default_block_size(n) if block_size is None else int(block_size)
    return gram_sums.blocked_sums(
        side_x, side_y, unbiased=unbiased, precision=precision, need_self=need_self, block_size=block
    )


def batched_hsic(
    xs: Array,
    y: Array,
    *,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | str = "median",
    bandwidth_y: float | str = "median",
    estimator: str = "biased",
    block_size: int | None = None,
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
    normalized: bool = False,
) -> Array:
    """HSIC of each feature set xs[s] (sets, n, dx) against one target y (n, dy), shape (sets,).

    One fused computation: the target's Gram matrix (or each of its row blocks) is built once and shared
    by all sets; a "median" bandwidth is computed per set. `normalized=True` returns normalised HSIC.
    """
    validation.check_feature_sets("xs", xs)
    validation.check_features("y", y)
    _check_common(
        kernel_x, kernel_y, bandwidth_x, bandwidth_y, estimator, block_size, precision, median_subsample
    )
    n = validation.check_same_n("xs", xs, "y", y, axis_x=1)
    validation.check_estimator_n(estimator, n)
    sums = _sums(
        xs,
        y,
        kernel_x=kernel_x,
        kernel_y=kernel_y,
        bandwidth_x=bandwidth_x,
        bandwidth_y=bandwidth_y,
        estimator=estimator,
        block_size=block_size,
        precision=precision,
        median_subsample=median_subsample,
        need_self=normalized,
    )
    unbiased = estimator == "unbiased"
    h_xy = gram_sums.combine(sums.s_kl_S, sums.r_k_SxN, sums.r_l_N[None], n, unbiased)
    if not normalized:
        return h_xy
    h_xx = gram_sums.combine(sums.s_kk_S, sums.r_k_SxN, sums.r_k_SxN, n, unbiased)
    h_yy = gram_sums.combine(sums.s_ll, sums.r_l_N, sums.r_l_N, n, unbiased)
    return _normalize(h_xy, h_xx, h_yy[None], unbiased)


def hsic_one_to_many(
    z: Array,
    others: Sequence[Array],
    *,
    kernel_z: str = "gaussian",
    kernels: Sequence[str] | None = None,
    bandwidth_z: float | str = "median",
    bandwidths: Sequence[float | str] | None = None,
    estimator: str = "biased",
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
    normalized: bool = False,
) -> Array:
    """HSIC of one sample z (n, dz) with each of several others[m] (n, d_m), shape (len(others),).

    z's side (bandwidth, Gram matrix, centring) is built once; each other side's centred Gram matrix is
    built with its own kernel and bandwidth (widths may differ), the M matrices are stacked (M, n, n) and
    all dependences come from one batched reduction against z's centred Gram matrix. Values equal
    `hsic(z, others[m])` (or `normalized_hsic`) with the same settings. `kernels` / `bandwidths` give one
    entry per other (default: "gaussian" / "median"). Dense only: for n > DENSE_MAX_N the pairs are
    computed one by one with the blocked path (nothing is shared there).
    """
    validation.check_features("z", z)
    if len(others) == 0:
        raise ValueError("others must hold at least one (n, d) array")
    kernels = tuple(kernels) if kernels is not None else ("gaussian",) * len(others)
    bandwidths = tuple(bandwidths) if bandwidths is not None else ("median",) * len(others)
    if not len(kernels) == len(bandwidths) == len(others):
        raise ValueError(
            f"kernels ({len(kernels)}) and bandwidths ({len(bandwidths)}) need one entry per other array "
            f"({len(others)})"
        )
    for m, (other, kernel, bw) in enumerate(zip(others, kernels, bandwidths, strict=True)):
        validation.check_features(f"others[{m}]", other)
        validation.check_same_n("z", z, f"others[{m}]", other)
        _check_common(kernel_z, kernel, bandwidth_z, bw, estimator, None, precision, median_subsample)
    n = int(z.shape[0])
    validation.check_estimator_n(estimator, n)
    if n > DENSE_MAX_N:
        pair = hsic if not normalized else normalized_hsic
        return jnp.stack(
            [
                pair(
                    z,
                    other,
                    kernel_x=kernel_z,
                    kernel_y=kernel,
                    bandwidth_x=bandwidth_z,
                    bandwidth_y=bw,
                    estimator=estimator,
                    precision=precision,
                    median_subsample=median_subsample,
                )
                for other, kernel, bw in zip(others, kernels, bandwidths, strict=True)
            ]
        )
    unbiased = estimator == "unbiased"
    dtype = functools.reduce(jnp.promote_types, [kernels_lib.compute_dtype(a.dtype) for a in (z, *others)])

    def centred(name: str, x_NxD: Array, kernel: str, bw: Any) -> Array:
        bw_1 = bandwidth_lib.resolve_bandwidth(name, bw, x_NxD, kernel, median_subsample, dtype)[None]
        side = gram_sums.make_side(x_NxD.astype(dtype)[None], bw_1, kernel)
        return gram_sums.centred_gram(side, unbiased=unbiased, precision=precision)

    lz_NxN = centred("bandwidth_z", z, kernel_z, bandwidth_z)[0]
    k_MxNxN = jnp.concatenate(
        [
            centred(f"bandwidths[{m}]", other, kernel, bw)
            for m, (other, kernel, bw) in enumerate(zip(others, kernels, bandwidths, strict=True))
        ]
    )
    sums = gram_sums.sums_from_grams(k_MxNxN, lz_NxN, need_self=normalized)
    h_zo = gram_sums.combine(sums.s_kl_S, sums.r_k_SxN, sums.r_l_N[None], n, unbiased)
    if not normalized:
        return h_zo
    h_oo = gram_sums.combine(sums.s_kk_S, sums.r_k_SxN, sums.r_k_SxN, n, unbiased)
    h_zz = gram_sums.combine(sums.s_ll, sums.r_l_N, sums.r_l_N, n, unbiased)
    return _normalize(h_zo, h_oo, h_zz[None], unbiased)


def _normalize(h_xy: Array, h_xx: Array, h_yy: Array, unbiased: bool) -> Array:
    """h_xy / sqrt(h_xx h_yy), 0 when a self term is below sqrt(smallest normal float) (~1e-19 in
    float32: zero, negative or rounding noise; never a square root of a negative number); clipped to
    [0, 1] (biased) or [-1, 1] (unbiased). The threshold keeps gradients finite (d/dh_xx ~ h_xx^-1.5)."""
    tiny = float(np.sqrt(np.finfo(np.dtype(h_xy.dtype)).tiny))
    positive = (h_xx > tiny) & (h_yy > tiny)
    denom_sq = jnp.where(positive, h_xx * h_yy, 1.0)
    ratio = jnp.where(positive, h_xy * lax.rsqrt(denom_sq), 0.0)
    return jnp.clip(ratio, -1.0 if unbiased else 0.0, 1.0)


def hsic(
    x: Array,
    y: Array,
    *,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | str = "median",
    bandwidth_y: float | str = "median",
    estimator: str = "biased",
    block_size: int | None = None,
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
) -> Array:
    """Hilbert-Schmidt independence criterion between paired samples x (n, dx) and y (n, dy); a scalar.

    kernel_*: "gaussian" | "linear" | "inverse_multiquadric" | "laplacian" | "multiscale".
    bandwidth_*: a positive number or "median" (median pair distance; for "multiscale" a sequence of
      bandwidths, or "median" meaning median x (0.5, 1, 2)). Ignored by "linear".
    estimator: "biased" (tr(KHLH)/(n-1)^2) or "unbiased" (Song et al. 2012, n >= 4, may be negative).
    block_size: None picks dense (n <= 1024) or blocked; an int forces blocked tiles of that many rows.
    precision: "exact" or "fast" (see the module docstring).
    median_subsample: rows used by the median heuristic (exact when n <= median_subsample).
    """
    validation.check_features("x", x)
    validation.check_features("y", y)
    validation.check_same_n("x", x, "y", y)
    return batched_hsic(
        x[None],
        y,
        kernel_x=kernel_x,
        kernel_y=kernel_y,
        bandwidth_x=bandwidth_x,
        bandwidth_y=bandwidth_y,
        estimator=estimator,
        block_size=block_size,
        precision=precision,
        median_subsample=median_subsample,
    )[0]


def normalized_hsic(
    x: Array,
    y: Array,
    *,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | str = "median",
    bandwidth_y: float | str = "median",
    estimator: str = "biased",
    block_size: int | None = None,
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
) -> Array:
    """HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)) in one pass; in [0, 1] for the biased estimator.

    Same keywords as `hsic`. With linear kernels this is linear CKA. With estimator="unbiased" the self
    terms are clamped at 0 before the square root and the result is clipped to [-1, 1]; it returns 0
    when a self term is not positive (e.g. a constant x).
    """
    validation.check_features("x", x)
    validation.check_features("y", y)
    validation.check_same_n("x", x, "y", y)
    return batched_hsic(
        x[None],
        y,
        kernel_x=kernel_x,
        kernel_y=kernel_y,
        bandwidth_x=bandwidth_x,
        bandwidth_y=bandwidth_y,
        estimator=estimator,
        block_size=block_size,
        precision=precision,
        median_subsample=median_subsample,
        normalized=True,
    )[0]


def linear_hsic(x: Array, y: Array, *, precision: str = "exact") -> Array:
    """Biased linear-kernel HSIC in feature space: ||Yc^T Xc||_F^2 / (n-1)^2, O(n dx dy), no n x n matrix."""
    validation.check_features("x", x)
    validation.check_features("y", y)
    n = validation.check_same_n("x", x, "y", y)
    xc, yc = kernels_lib.center_features(x), kernels_lib.center_features(y)
    cross = lax.dot_general(
        yc, xc, (((0,), (0,)), ((), ())), precision=kernels_lib.matmul_precision(precision)
    )
    return jnp.sum(cross * cross) / ((n - 1.0) * (n - 1.0))


def linear_cka(x: Array, y: Array, *, precision: str = "exact") -> Array:
    """Linear CKA in feature space: linear_hsic(x, y) / sqrt(linear_hsic(x, x) linear_hsic(y, y))."""
    h_xy = linear_hsic(x, y, precision=precision)
    h_xx = linear_hsic(x, x, precision=precision)
    h_yy = linear_hsic(y, y, precision=precision)
    return _normalize(h_xy, h_xx, h_yy, unbiased=False)
