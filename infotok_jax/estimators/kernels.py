"""Positive-definite kernels on feature vectors and the precision policy of their Gram matmuls.

Kernels (all on rows of (n, d) arrays, returning (n, m) Gram blocks, computed in float32 or wider):
  gaussian              k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2))
  laplacian             k(a, b) = exp(-||a - b|| / bandwidth)
  inverse_multiquadric  k(a, b) = (1 + ||a - b||^2 / bandwidth^2) ** -1/2
  linear                k(a, b) = a . b                 (bandwidth ignored)
  multiscale            mean over bandwidths s of the gaussian kernel with bandwidth s (vmapped)

Squared distances use ||a||^2 + ||b||^2 - 2 a.b (one matmul, no (n, m, d) tensor). Callers centre the
features first (distances are shift invariant) so that the norms are as small as the data allow and the
subtraction cancels as little as possible; the result is clamped at 0.

Precision policy ("exact" | "fast"): "exact" runs the Gram matmul at `lax.Precision.HIGHEST` on float32
(or wider) operands; "fast" uses `lax.Precision.DEFAULT` (TF32 on NVIDIA Ampere/Hopper, bf16 passes on
TPU, plain float32 on CPU). Both accumulate in float32 and evaluate the kernel function in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from infotok_jax.estimators import validation

Array = jax.Array

MULTISCALE_MEDIAN_FACTORS = (0.5, 1.0, 2.0)


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for float16/bfloat16/float32/integer input; float64 stays float64 (when x64 is enabled)."""
    return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def matmul_precision(precision: str) -> lax.Precision:
    """Maps the policy name to the `lax.Precision` of the Gram matmuls."""
    validation.check_choice("precision", precision, validation.PRECISIONS)
    return lax.Precision.HIGHEST if precision == "exact" else lax.Precision.DEFAULT


def center_features(x_NxD: Array) -> Array:
    """Casts to the compute dtype and centres each column (distances are unchanged).

    First the first row is subtracted, which makes a constant column exactly zero (a plain mean is not
    exact: sum / n rounds), then the column means of the result. Both are common shifts of all rows:
    distances are unchanged, and for the linear kernel the Gram matrix changes by u_i + u_j + c terms,
    which HSIC ignores.
    """
    x_NxD = x_NxD.astype(compute_dtype(x_NxD.dtype))
    x_NxD = x_NxD - x_NxD[:1]
    return x_NxD - jnp.mean(x_NxD, axis=0, keepdims=True)


def gram_dot(a_BxD: Array, b_NxD: Array, precision: str) -> Array:
    """a @ b.T at the policy's precision with float32 (or wider) accumulation."""
    out_dtype = jnp.promote_types(a_BxD.dtype, b_NxD.dtype)
    return lax.dot_general(
        a_BxD,
        b_NxD,
        (((1,), (1,)), ((), ())),
        precision=matmul_precision(precision),
        preferred_element_type=out_dtype,
    )


def squared_distances(
    a_BxD: Array, b_NxD: Array, sqn_a_B: Array, sqn_b_N: Array, precision: str = "exact"
) -> Array:
    """||a_i - b_j||^2 from precomputed squared norms, clamped at 0."""
    cross_BxN = gram_dot(a_BxD, b_NxD, precision)
    return jnp.maximum(sqn_a_B[:, None] + sqn_b_N[None, :] - 2.0 * cross_BxN, 0.0)


def _safe_sqrt(sq: Array) -> Array:
    """sqrt with a zero (not infinite) derivative at 0, so identical points keep finite gradients."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def kernel_from_sq(kernel: str, sq_BxN: Array, bandwidth: Array) -> Array:
    """Applies a distance-based kernel to squared distances; `bandwidth` is a scalar (a vector for
    "multiscale")."""
    bandwidth = jnp.asarray(bandwidth, sq_BxN.dtype)
    if kernel == "gaussian":
        return jnp.exp(sq_BxN * (-0.5 / (bandwidth * bandwidth)))
    if kernel == "laplacian":
        return jnp.exp(_safe_sqrt(sq_BxN) * (-1.0 / bandwidth))
    if kernel == "inverse_multiquadric":
        return lax.rsqrt(1.0 + sq_BxN / (bandwidth * bandwidth))
    if kernel == "multiscale":
        per_scale = jax.vmap(lambda s: jnp.exp(sq_BxN * (-0.5 / (s * s))))(jnp.reshape(bandwidth, (-1,)))
        return jnp.mean(per_scale, axis=0)
    raise ValueError(f"kernel {kernel!r} is not distance based; expected one of {validation.KERNELS}")


def kernel_block(
    kernel: str,
    a_BxD: Array,
    b_NxD: Array,
    sqn_a_B: Array,
    sqn_b_N: Array,
    bandwidth: Array,
    precision: str,
    same_point_BxN: Array | None = None,
) -> Array:
    """Gram block k(a_i, b_j) for centred features and their precomputed squared norms.

    `same_point_BxN` marks pairs known to be the same point (the diagonal of a self-Gram block): their
    squared distance is set to exactly 0 instead of the expansion's rounding residue, which matters for
    the laplacian kernel (sqrt amplifies it).
    """
    if kernel == "linear":
        return gram_dot(a_BxD, b_NxD, precision)
    sq_BxN = squared_distances(a_BxD, b_NxD, sqn_a_B, sqn_b_N, precision)
    if same_point_BxN is not None:
        sq_BxN = jnp.where(same_point_BxN, 0.0, sq_BxN)
    return kernel_from_sq(kernel, sq_BxN, bandwidth)


def kernel_matrix(
    x: Array,
    y: Array | None = None,
    *,
    kernel: str = "gaussian",
    bandwidth: float | Array | Sequence[float] = 1.0,
    precision: str = "exact",
) -> Array:
    """Gram matrix K[i, j] = k(x_i, y_j) of shape (n, m); `y=None` means y = x.

    `bandwidth` must be numeric here (use `median_bandwidth` to pick one); it is ignored by "linear".
    """
    validation.check_choice("kernel", kernel, validation.KERNELS)
    validation.check_features("x", x)
    y = x if y is None else y
    validation.check_features("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension; got {x.shape} and {y.shape}")
    if isinstance(bandwidth, str):
        raise ValueError("bandwidth must be numeric in kernel_matrix; compute it with median_bandwidth(x)")
    validation.check_bandwidth("bandwidth", bandwidth, kernel)
    dtype = jnp.promote_types(compute_dtype(x.dtype), compute_dtype(y.dtype))
    x, y = x.astype(dtype), y.astype(dtype)
    if kernel != "linear":  # shift both by x's mean: distances unchanged, smaller norms
        shift_1xD = jnp.mean(x, axis=0, keepdims=True)
        x, y = x - shift_1xD, y - shift_1xD
    bw = jnp.asarray(bandwidth, dtype)
    same = jnp.eye(x.shape[0], dtype=bool) if y is x else None
    return kernel_block(kernel, x, y, jnp.sum(x * x, axis=1), jnp.sum(y * y, axis=1), bw, precision, same)


def gaussian_kernel(x: Array, y: Array | None = None, bandwidth: float | Array = 1.0) -> Array:
    """exp(-||x_i - y_j||^2 / (2 bandwidth^2)), shape (n, m)."""
    return kernel_matrix(x, y, kernel="gaussian", bandwidth=bandwidth)


def laplacian_kernel(x: Array, y: Array | None = None, bandwidth: float | Array = 1.0) -> Array:
    """exp(-||x_i - y_j|| / bandwidth), shape (n, m)."""
    return kernel_matrix(x, y, kernel="laplacian", bandwidth=bandwidth)


def inverse_multiquadric_kernel(x: Array, y: Array | None = None, bandwidth: float | Array = 1.0) -> Array:
    """(1 + ||x_i - y_j||^2 / bandwidth^2) ** -1/2, shape (n, m)."""
    return kernel_matrix(x, y, kernel="inverse_multiquadric", bandwidth=bandwidth)


def linear_kernel(x: Array, y: Array | None = None) -> Array:
    """x_i . y_j, shape (n, m)."""
    return kernel_matrix(x, y, kernel="linear")


def multiscale_gaussian_kernel(
    x: Array, y: Array | None = None, bandwidths: Sequence[float] | Array = (0.5, 1.0, 2.0)
) -> Array:
    """Mean of gaussian kernels over several bandwidths (vmapped over the bandwidth axis)."""
    if isinstance(bandwidths, list):
        bandwidths = tuple(bandwidths)
    return kernel_matrix(x, y, kernel="multiscale", bandwidth=bandwidths)
