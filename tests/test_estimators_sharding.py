"""Sharded inputs give the global-batch HSIC: no per-shard approximation.

conftest.py simulates 8 CPU devices; x and y are sharded over the mesh axis "data" inside jax.jit.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from infotok_jax import estimators as est
from infotok_jax.sharding import make_mesh
from tests import estimator_references as ref


@pytest.mark.parametrize(
    "fn,estimator,block_size",
    [
        ("hsic", "biased", None),
        ("normalized_hsic", "biased", 24),
        ("hsic", "unbiased", 16),
    ],
)
def test_sharded_equals_unsharded(fn, estimator, block_size):
    assert jax.device_count() == 8
    mesh = make_mesh((8, 1, 1))
    rows = NamedSharding(mesh, PartitionSpec("data", None))
    x, y = ref.dependent_pair(64, seed=12)
    f = getattr(est, fn)
    call = lambda a, b: f(a, b, estimator=estimator, block_size=block_size)
    single = jax.jit(call)(x, y)
    xs, ys = jax.device_put(x, rows), jax.device_put(y, rows)
    assert len(xs.sharding.device_set) == 8
    sharded = jax.jit(call, in_shardings=(rows, rows))(xs, ys)
    np.testing.assert_allclose(sharded, single, rtol=1e-6)
    expected = ref.hsic(x, y, estimator=estimator) if fn == "hsic" else ref.normalized_hsic(x, y)
    np.testing.assert_allclose(sharded, expected, rtol=1e-5)
    grad_single = jax.jit(jax.grad(call))(x, y)
    grad_sharded = jax.jit(jax.grad(call), in_shardings=(rows, rows))(xs, ys)
    np.testing.assert_allclose(grad_sharded, grad_single, rtol=1e-5, atol=1e-6 * np.abs(grad_single).max())
