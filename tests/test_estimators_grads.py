"""Gradients of the HSIC estimators: numerical checks, blocked == dense, degenerate inputs stay finite.

Jitted helpers live at module level with static keywords so that tests with equal shapes share compiles.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from infotok_jax import estimators as est
from tests import estimator_references as ref

KERNELS = ["gaussian", "laplacian", "inverse_multiquadric", "linear", "multiscale"]
FNS = {"hsic": est.hsic, "normalized_hsic": est.normalized_hsic}


def _call(x, y, fn, kernel="gaussian", estimator="biased", block_size=None, bandwidth="median"):
    return FNS[fn](
        x,
        y,
        kernel_x=kernel,
        kernel_y=kernel,
        estimator=estimator,
        block_size=block_size,
        bandwidth_x=bandwidth,
        bandwidth_y=bandwidth,
    )


_STATIC = ("fn", "kernel", "estimator", "block_size", "bandwidth")
value_and_grads = jax.jit(jax.value_and_grad(_call, argnums=(0, 1)), static_argnames=_STATIC)


@pytest.mark.parametrize(
    "kernel,estimator,block_size,fns",
    [
        ("gaussian", "biased", None, ("hsic", "normalized_hsic")),
        ("gaussian", "unbiased", 4, ("hsic", "normalized_hsic")),
        ("laplacian", "unbiased", None, ("hsic",)),
        ("inverse_multiquadric", "biased", 4, ("hsic",)),
        ("linear", "unbiased", 4, ("hsic",)),
        ("multiscale", "biased", None, ("hsic",)),
    ],
)
def test_check_grads_float64(kernel, estimator, block_size, fns):
    bw = (0.8, 2.0) if kernel == "multiscale" else 1.7
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((9, 3)))
        y = jnp.asarray(rng.standard_normal((9, 2)))
        for fn in fns:
            f = jax.jit(
                functools.partial(
                    _call, fn=fn, kernel=kernel, estimator=estimator, block_size=block_size, bandwidth=bw
                )
            )
            assert f(x, y).dtype == jnp.float64
            check_grads(f, (x, y), order=1, modes=("rev",), atol=1e-6, rtol=1e-5)


def test_check_grads_forward_mode_blocked():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x, y = jnp.asarray(rng.standard_normal((7, 2))), jnp.asarray(rng.standard_normal((7, 2)))
        f = jax.jit(lambda a, b: est.hsic(a, b, bandwidth_x=1.0, bandwidth_y=1.5, block_size=3))
        check_grads(f, (x, y), order=1, modes=("fwd",), atol=1e-6, rtol=1e-5)


def test_median_bandwidth_is_not_differentiated():
    x, y = ref.dependent_pair(30, seed=1)
    bw_x, bw_y = float(est.median_bandwidth(x)), float(est.median_bandwidth(y))
    g_median = jax.jit(jax.grad(est.hsic))(x, y)
    g_fixed = jax.jit(jax.grad(lambda a, b: est.hsic(a, b, bandwidth_x=bw_x, bandwidth_y=bw_y)))(x, y)
    np.testing.assert_allclose(g_median, g_fixed, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(jax.grad(lambda a: est.median_bandwidth(a))(x), 0.0)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("fn", ["hsic", "normalized_hsic"])
def test_blocked_equals_dense_value_and_gradient(fn, estimator):
    x, y = ref.dependent_pair(30, seed=2)
    vd, (gxd, gyd) = value_and_grads(x, y, fn=fn, estimator=estimator)
    vb, (gxb, gyb) = value_and_grads(x, y, fn=fn, estimator=estimator, block_size=8)
    np.testing.assert_allclose(vb, vd, rtol=1e-5)
    np.testing.assert_allclose(gxb, gxd, rtol=1e-4, atol=1e-4 * np.abs(gxd).max())
    np.testing.assert_allclose(gyb, gyd, rtol=1e-4, atol=1e-4 * np.abs(gyd).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_identical_points_give_finite_values_and_gradients(kernel):
    x = jnp.full((30, 8), 0.5, jnp.float32)
    _, y = ref.dependent_pair(30, seed=3)
    for estimator, block_size in [("biased", None), ("unbiased", 8)]:
        value, (gx, gy) = value_and_grads(
            x, y, fn="normalized_hsic", kernel=kernel, estimator=estimator, block_size=block_size
        )
        assert np.isfinite(value) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
        assert abs(float(value)) < 1e-6  # a constant x carries no information about y
    assert float(jax.jit(est.median_bandwidth)(x)) == 1.0  # zero-median guard


@pytest.mark.parametrize("block_size", [None, 8])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "inverse_multiquadric"])
def test_extreme_feature_scales_are_finite_and_scale_invariant(kernel, block_size):
    x, y = ref.dependent_pair(30, seed=4)
    base, (gx1, _) = value_and_grads(x, y, fn="normalized_hsic", kernel=kernel, block_size=block_size)
    for scale in (1e-6, 1e6):
        value, (gx, gy) = value_and_grads(
            x * np.float32(scale),
            y * np.float32(scale),
            fn="normalized_hsic",
            kernel=kernel,
            block_size=block_size,
        )
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
        np.testing.assert_allclose(value, base, rtol=1e-4)
        np.testing.assert_allclose(gx * scale, gx1, rtol=1e-3, atol=1e-3 * np.abs(gx1).max())


def test_bfloat16_gradients_finite():
    x, y = ref.dependent_pair(30, seed=5)
    xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    gx = jax.jit(jax.grad(est.normalized_hsic))(xb, yb)
    assert gx.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(gx, np.float32)))
