"""Variational-IB rates against closed forms, Monte Carlo, and the Gaussian-channel mutual information."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import estimators as est
from tests import estimator_references as ref


def test_gaussian_kl_matches_closed_form_and_is_zero_at_prior():
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((4, 3, 6)).astype(np.float32)
    log_var = rng.uniform(-3, 2, (4, 3, 6)).astype(np.float32)
    got = jax.jit(est.gaussian_kl)(mean, log_var)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, ref.gaussian_kl(mean, log_var), rtol=1e-5)
    np.testing.assert_array_equal(est.gaussian_kl(jnp.zeros((2, 5)), jnp.zeros((2, 5))), 0.0)
    tiny = est.gaussian_kl(jnp.zeros((1, 1)), jnp.full((1, 1), 1e-4))  # expm1 keeps precision near 0
    np.testing.assert_allclose(tiny, 0.5 * (math.expm1(1e-4) - 1e-4), rtol=1e-5)


def test_gaussian_kl_equals_monte_carlo_estimate():
    mean = jnp.array([[0.3, -1.2, 0.7], [1.5, 0.0, -0.4]], jnp.float32)
    log_var = jnp.array([[-0.5, 0.3, -1.0], [0.2, -2.0, 0.5]], jnp.float32)
    samples = jax.jit(jax.vmap(lambda k: est.monte_carlo_rate(k, mean, log_var)))(
        jax.random.split(jax.random.PRNGKey(0), 20000)
    )
    mc_mean = samples.mean(0)
    stderr = samples.std(0) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(mc_mean - est.gaussian_kl(mean, log_var)) <= 3.0 * stderr)


def test_monte_carlo_rate_with_custom_prior_and_gradients():
    mean, log_var = jnp.full((2, 3), 0.4), jnp.full((2, 3), -0.3)
    prior_scale = 2.0

    def log_prior(z):  # N(0, 4 I): closed-form KL to compare with
        log_norm = math.log(prior_scale) + 0.5 * math.log(2 * math.pi)
        return jnp.sum(-0.5 * (z / prior_scale) ** 2 - log_norm, -1)

    mc = jax.jit(lambda k: est.monte_carlo_rate(k, mean, log_var, num_samples=200000, log_prior=log_prior))
    var = np.exp(-0.3)
    closed = 3 * (math.log(prior_scale) + (var + 0.16) / (2 * prior_scale**2) - 0.5 + 0.15)
    np.testing.assert_allclose(mc(jax.random.PRNGKey(1)), closed, rtol=1e-2)
    rate = lambda m: est.monte_carlo_rate(jax.random.PRNGKey(2), m, log_var, num_samples=8).sum()
    grad = jax.grad(rate)(mean)
    assert np.all(np.isfinite(grad))


def test_categorical_rate_matches_reference_with_and_without_prior():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4, 16)).astype(np.float32) * 3
    prior = rng.standard_normal(16).astype(np.float32)
    got_uniform = jax.jit(est.categorical_rate)(logits)
    got_prior = jax.jit(est.categorical_rate)(logits, prior)
    assert got_uniform.shape == (3, 4)
    np.testing.assert_allclose(got_uniform, ref.categorical_kl(logits, None), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_prior, ref.categorical_kl(logits, prior), rtol=1e-5, atol=1e-6)
    one_hot = np.where(np.arange(16) == 3, 50.0, -50.0).astype(np.float32)  # hard assignment: log K nats
    np.testing.assert_allclose(est.categorical_rate(one_hot), math.log(16), rtol=1e-6)
    np.testing.assert_allclose(est.categorical_rate(np.zeros(16, np.float32)), 0.0, atol=1e-7)
    assert np.all(np.isfinite(jax.grad(lambda lg: est.categorical_rate(lg).sum())(one_hot)))


def test_gaussian_channel_rate_bound_is_at_least_the_mutual_information():
    # x ~ N(0, I_3), z = A x + N(0, s^2 I_2): I(X; Z) = 0.5 log det(I + A A^T / s^2).
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    s2 = 0.3
    x = rng.standard_normal((20000, 3)).astype(np.float32)
    mean = x @ a.T
    log_var = np.full_like(mean, np.log(s2))
    mi = 0.5 * np.linalg.slogdet(np.eye(2) + a @ a.T / s2)[1]
    standard = float(est.gaussian_channel_rate_bound(mean, log_var))
    matched = float(est.gaussian_channel_rate_bound(mean, log_var, prior="moment_matched"))
    assert standard >= mi
    assert matched >= mi - 0.02 and abs(matched - mi) / mi < 0.02  # tight for jointly Gaussian
    assert standard > matched


def test_bits_nats_roundtrip():
    np.testing.assert_allclose(est.nats_to_bits(math.log(8.0)), 3.0, rtol=1e-6)
    np.testing.assert_allclose(est.bits_to_nats(est.nats_to_bits(1.7)), 1.7, rtol=1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: est.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4))), "mean and log_var"),
        (lambda: est.categorical_rate(jnp.zeros((2, 1))), "logits"),
        (lambda: est.categorical_rate(jnp.zeros((2, 4)), jnp.zeros(5)), "prior_logits"),
        (lambda: est.gaussian_channel_rate_bound(jnp.zeros((2, 3)), jnp.zeros((2, 3)), prior="x"), "prior"),
        (
            lambda: est.monte_carlo_rate(jax.random.PRNGKey(0), jnp.zeros(3), jnp.zeros(3), num_samples=0),
            "num_samples",
        ),
    ],
)
def test_rate_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
