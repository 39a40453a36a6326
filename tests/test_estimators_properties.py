"""Statistical and structural properties of the HSIC estimators (no reference implementation needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import estimators as est
from tests import estimator_references as ref


def _independent(seeds: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((seeds, n, 3)).astype(np.float32),
        rng.standard_normal((seeds, n, 2)).astype(np.float32),
    )


def test_unbiased_hsic_averages_to_zero_on_independent_samples():
    xs, ys = _independent(400, 24)
    vals = np.asarray(jax.jit(jax.vmap(lambda a, b: est.hsic(a, b, estimator="unbiased")))(xs, ys))
    stderr = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean()) <= 3.0 * stderr
    biased = np.asarray(jax.jit(jax.vmap(est.hsic))(xs, ys))
    assert biased.mean() > 10.0 * stderr  # the biased estimator is visibly positive at this n


@pytest.mark.parametrize("block_size", [None, 8])
def test_biased_hsic_nonnegative(block_size):
    xs, ys = _independent(64, 20, seed=1)
    vals = np.asarray(jax.jit(jax.vmap(lambda a, b: est.hsic(a, b, block_size=block_size)))(xs, ys))
    assert vals.min() >= -1e-9


@pytest.mark.parametrize("kernel", ["gaussian", "linear", "laplacian"])
@pytest.mark.parametrize("block_size", [None, 16])
def test_normalized_hsic_of_x_with_itself_is_one(kernel, block_size):
    x = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    got = jax.jit(
        lambda a: est.normalized_hsic(a, a, kernel_x=kernel, kernel_y=kernel, block_size=block_size)
    )(x)
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)


def test_normalized_hsic_in_unit_interval_and_orders_dependence():
    x, y_weak = ref.dependent_pair(200, seed=3, noise=3.0)
    _, y_strong = ref.dependent_pair(200, seed=3, noise=0.05)
    f = jax.jit(est.normalized_hsic)
    weak, strong = float(f(x, y_weak)), float(f(x, y_strong))
    assert 0.0 <= weak < strong <= 1.0


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("block_size", [None, 16])
def test_invariances(estimator, block_size):
    x, y = ref.dependent_pair(60, dx=5, dy=3, seed=4)
    f = jax.jit(lambda a, b: est.hsic(a, b, estimator=estimator, block_size=block_size))
    base = float(f(x, y))
    rng = np.random.default_rng(5)
    perm = rng.permutation(60)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    np.testing.assert_allclose(f(x[perm], y[perm]), base, rtol=1e-5)  # common permutation of the pairs
    np.testing.assert_allclose(f((x @ q).astype(np.float32), y), base, rtol=1e-5)  # rotation
    np.testing.assert_allclose(f(3.7 * x, y), base, rtol=1e-5)  # isotropic scaling (median bandwidth)
    np.testing.assert_allclose(f(x + 100.0, y), base, rtol=1e-5)  # translation


def test_permutation_test_detects_dependence_and_is_calibrated_under_independence():
    x, y = ref.dependent_pair(60, seed=6, noise=0.3)
    stat, p = jax.jit(
        lambda a, b: est.hsic_permutation_test(a, b, key=jax.random.PRNGKey(0), num_permutations=99)
    )(x, y)
    np.testing.assert_allclose(stat, ref.hsic(x, y), rtol=1e-5)
    assert float(p) == pytest.approx(0.01)  # smallest possible p-value with 99 permutations
    xs, ys = _independent(40, 40, seed=7)
    keys = jax.random.split(jax.random.PRNGKey(1), 40)
    test = jax.vmap(lambda a, b, k: est.hsic_permutation_test(a, b, key=k, num_permutations=99)[1])
    ps = np.asarray(jax.jit(test)(xs, ys, keys))
    assert 0.3 < ps.mean() < 0.7  # uniform null p-values have mean 0.5 (std of the mean ~0.046)
    assert (ps <= 0.05).mean() <= 0.2


def test_unbiased_permutation_statistic_matches_hsic():
    x, y = ref.dependent_pair(30, seed=8)
    kw = dict(num_permutations=9, estimator="unbiased", kernel_y="laplacian")
    stat, _ = jax.jit(lambda a, b: est.hsic_permutation_test(a, b, key=jax.random.PRNGKey(0), **kw))(x, y)
    np.testing.assert_allclose(stat, ref.hsic(x, y, estimator="unbiased", kernel_y="laplacian"), rtol=1e-5)


def test_kernel_matrices_match_reference():
    x = np.random.default_rng(9).standard_normal((12, 3)).astype(np.float32)
    for name, fn, kw in [
        ("gaussian", est.gaussian_kernel, {"bandwidth": 1.3}),
        ("laplacian", est.laplacian_kernel, {"bandwidth": 0.8}),
        ("inverse_multiquadric", est.inverse_multiquadric_kernel, {"bandwidth": 2.0}),
        ("linear", est.linear_kernel, {}),
    ]:
        np.testing.assert_allclose(
            fn(x, **kw), ref.gram(x, name, kw.get("bandwidth", 1.0)), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(
        est.multiscale_gaussian_kernel(x, bandwidths=(0.5, 2.0)),
        ref.gram(x, "multiscale", (0.5, 2.0)),
        rtol=1e-5,
        atol=1e-6,
    )
    y = np.random.default_rng(10).standard_normal((5, 3)).astype(np.float32)
    cross = est.kernel_matrix(x, y, kernel="gaussian", bandwidth=1.3)
    expected = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * 1.3**2))
    np.testing.assert_allclose(cross, expected, rtol=1e-5, atol=1e-7)


def test_batched_hsic_vmaps_and_matches_hsic_under_vmap():
    xs, ys = _independent(4, 30, seed=11)
    per_pair = jax.jit(jax.vmap(est.hsic))(xs, ys)
    single = jax.jit(est.hsic)
    for s in range(4):
        np.testing.assert_allclose(per_pair[s], single(xs[s], ys[s]), rtol=1e-6)
    batched = jax.jit(est.batched_hsic)(xs, jnp.asarray(ys[0]))
    np.testing.assert_allclose(batched[0], per_pair[0], rtol=1e-6)
