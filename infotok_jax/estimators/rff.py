"""HSIC from random Fourier features: O(n D^2) approximate Gaussian-kernel HSIC for very large n.

Bochner's theorem: for w ~ N(0, I / bandwidth^2), E[cos(w.(a - b))] = exp(-||a - b||^2 / (2 bandwidth^2)).
With D/2 frequencies and phi(a) = [cos(W a), sin(W a)] / sqrt(D/2), phi(a).phi(b) is an unbiased Monte-
Carlo estimate of the Gaussian kernel, and biased HSIC becomes the feature-space form
||phi(Y)_c^T phi(X)_c||_F^2 / (n - 1)^2: no n x n matrix, memory O(n D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from infotok_jax.estimators import bandwidth as bandwidth_lib
from infotok_jax.estimators import hsic_estimators as hsic_lib
from infotok_jax.estimators import kernels, validation

Array = jax.Array


def random_fourier_features(key: Array, x: Array, bandwidth: float | Array, num_features: int) -> Array:
    """phi(x) of shape (n, num_features) with phi(a).phi(b) ~ exp(-||a - b||^2 / (2 bandwidth^2)).

    `num_features` must be even (half cosines, half sines). Features are centred first (the kernel is
    shift invariant) so the projections stay small.
    """
    validation.check_features("x", x)
    num_features = validation.check_positive_int("num_features", num_features, minimum=2)
    if num_features % 2:
        raise ValueError(f"num_features must be even (cos and sin pairs); got {num_features}")
    xc = kernels.center_features(x)
    freqs = jax.random.normal(key, (x.shape[1], num_features // 2), xc.dtype)
    proj = jnp.matmul(xc, freqs, precision=jax.lax.Precision.HIGHEST) / jnp.asarray(bandwidth, xc.dtype)
    scale = jnp.sqrt(2.0 / num_features)
    return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=1) * scale


def rff_hsic(
    x: Array,
    y: Array,
    *,
    key: Array,
    num_features: int = 512,
    bandwidth_x: float | str = "median",
    bandwidth_y: float | str = "median",
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
) -> Array:
    """Approximate biased Gaussian-kernel HSIC(x, y) from `num_features` random Fourier features per side.

    Converges to `hsic(x, y)` (gaussian kernels, same bandwidths) as num_features grows; error
    O(1 / sqrt(num_features)). `key` seeds the frequencies (split for x and y).
    """
    validation.check_features("x", x)
    validation.check_features("y", y)
    validation.check_same_n("x", x, "y", y)
    bw_x = bandwidth_lib.resolve_bandwidth(
        "bandwidth_x", bandwidth_x, x, "gaussian", median_subsample, kernels.compute_dtype(x.dtype)
    )
    bw_y = bandwidth_lib.resolve_bandwidth(
        "bandwidth_y", bandwidth_y, y, "gaussian", median_subsample, kernels.compute_dtype(y.dtype)
    )
    key_x, key_y = jax.random.split(key)
    phi_x = random_fourier_features(key_x, x, bw_x, num_features)
    phi_y = random_fourier_features(key_y, y, bw_y, num_features)
    return hsic_lib.linear_hsic(phi_x, phi_y, precision=precision)
