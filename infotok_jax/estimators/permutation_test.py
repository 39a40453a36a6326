"""Permutation independence test with HSIC as the statistic, returning a p-value.

Under H0 (x independent of y) the pairing of rows carries no information, so the statistic recomputed
after shuffling y's rows is a draw from the null distribution. The centred Gram matrices are built once;
a permutation p only re-indexes Lc (centring commutes with a common row/column permutation), so each
null draw costs one O(n^2) product-sum. p-value = (1 + #{null >= observed}) / (1 + num_permutations),
which is a valid (never zero) p-value. Dense: intended for n up to a few thousand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from infotok_jax.estimators import bandwidth as bandwidth_lib
from infotok_jax.estimators import gram_sums, kernels, validation

Array = jax.Array


def _centred_gram(
    name: str, x: Array, kernel: str, bandwidth: object, unbiased: bool, precision: str, median_subsample: int
) -> Array:
    xc = kernels.center_features(x)
    bw = bandwidth_lib.resolve_bandwidth(name, bandwidth, xc, kernel, median_subsample, xc.dtype)
    sqn = jnp.sum(xc * xc, axis=1)
    same = jnp.eye(x.shape[0], dtype=bool)
    gram = kernels.kernel_block(kernel, xc, xc, sqn, sqn, bw, precision, same)
    return gram_sums.center_gram(gram, unbiased)


def hsic_permutation_test(
    x: Array,
    y: Array,
    *,
    key: Array,
    num_permutations: int = 200,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | str = "median",
    bandwidth_y: float | str = "median",
    estimator: str = "biased",
    precision: str = "exact",
    median_subsample: int = bandwidth_lib.DEFAULT_SUBSAMPLE,
) -> tuple[Array, Array]:
    """Tests H0: x and y independent. Returns (hsic statistic, p-value), both scalars.

    The statistic equals `hsic(x, y, ...)` with the same keywords; the null distribution comes from
    `num_permutations` random permutations of y's rows drawn from `key`. Reject H0 at level alpha when
    p-value <= alpha.
    """
    validation.check_features("x", x)
    validation.check_features("y", y)
    validation.check_choice("kernel_x", kernel_x, validation.KERNELS)
    validation.check_choice("kernel_y", kernel_y, validation.KERNELS)
    validation.check_choice("estimator", estimator, validation.ESTIMATORS)
    n = validation.check_same_n("x", x, "y", y)
    validation.check_estimator_n(estimator, n)
    num_permutations = validation.check_positive_int("num_permutations", num_permutations)
    unbiased = estimator == "unbiased"
    kc = _centred_gram("bandwidth_x", x, kernel_x, bandwidth_x, unbiased, precision, median_subsample)
    lc = _centred_gram("bandwidth_y", y, kernel_y, bandwidth_y, unbiased, precision, median_subsample)
    norm = n * (n - 3.0) if unbiased else (n - 1.0) * (n - 1.0)

    def statistic(perm: Array) -> Array:
        lp = jnp.take(jnp.take(lc, perm, axis=0), perm, axis=1)
        return jnp.sum(kc * lp) / norm

    observed = jnp.sum(kc * lc) / norm
    keys = jax.random.split(key, num_permutations)
    null = lax.map(lambda k: statistic(jax.random.permutation(k, n)), keys)
    p_value = (1.0 + jnp.sum(null >= observed)) / (1.0 + num_permutations)
    return observed, p_value
