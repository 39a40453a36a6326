"""Variational Information-Bottleneck rates (upper bounds on I(X; Z)) and unit helpers, in nats.

A VIB encoder q(z|x) pays the rate E_x KL(q(z|x) || r(z)) >= I(X; Z) for any prior r. This module gives
the closed forms for a diagonal Gaussian encoder against N(0, I) (`gaussian_kl`), for soft categorical
code assignments (VQ codebooks) against a categorical prior (`categorical_rate`), a reparameterised
Monte-Carlo estimate for priors without a closed form (`monte_carlo_rate`), and the batch-level Gaussian
channel bound (`gaussian_channel_rate_bound`). All return nats; `nats_to_bits` converts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from infotok_jax.estimators import validation

Array = jax.Array

LOG2 = math.log(2.0)


def _float(a: Array) -> Array:
    a = jnp.asarray(a)
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _check_same_shape(name_a: str, a: Array, name_b: str, b: Array) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}"
        )
    if jnp.ndim(a) < 1:
        raise ValueError(f"{name_a} must have at least one axis (the latent dimension); got a scalar")


def gaussian_kl(mean: Array, log_var: Array) -> Array:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) summed over the last axis, in nats.

    0.5 * sum(mean^2 + exp(log_var) - 1 - log_var); exp(t) - 1 - t uses its Taylor series for small t
    (float32 would otherwise lose it to cancellation near the prior). Shape: mean.shape[:-1], float32+.
    """
    _check_same_shape("mean", mean, "log_var", log_var)
    mean, log_var = _float(mean), _float(log_var)
    t = log_var
    series = 0.5 * t * t * (1.0 + t / 3.0 * (1.0 + t / 4.0 * (1.0 + t / 5.0)))
    excess = jnp.where(jnp.abs(t) < 1e-2, series, jnp.expm1(t) - t)  # exp(t) - 1 - t >= 0
    return 0.5 * jnp.sum(mean * mean + excess, axis=-1)


def categorical_rate(logits: Array, prior_logits: Array | None = None) -> Array:
    """KL(softmax(logits) || softmax(prior_logits)) over the last (code) axis, in nats per position.

    `logits`: (..., K) soft code assignments q(c|x). `prior_logits`: (K,) or broadcastable to `logits`;
    None means the uniform prior, where the rate is log K - H(q). Shape: logits.shape[:-1].
    """
    logits = _float(logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have a last (code) axis of size >= 2; got shape {logits.shape}")
    log_q = jax.nn.log_softmax(logits, axis=-1)
    if prior_logits is None:
        log_p = -jnp.log(float(logits.shape[-1]))
    else:
        prior_logits = _float(prior_logits)
        if prior_logits.shape[-1] != logits.shape[-1]:
            raise ValueError(
                f"prior_logits must have {logits.shape[-1]} codes on its last axis like logits; "
                f"got shape {prior_logits.shape}"
            )
        log_p = jax.nn.log_softmax(prior_logits, axis=-1)
        log_p = jnp.broadcast_to(log_p.reshape((1,) * (logits.ndim - log_p.ndim) + log_p.shape), logits.shape)
    q = jnp.exp(log_q)
    return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)


def standard_normal_log_prob(z: Array) -> Array:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * jnp.sum(z * z + math.log(2.0 * math.pi), axis=-1)


def monte_carlo_rate(
    key: Array,
    mean: Array,
    log_var: Array,
    *,
    num_samples: int = 1,
    log_prior: Callable[[Array], Array] | None = None,
) -> Array:
    """Reparameterised Monte-Carlo estimate of KL(q(z|x) || p(z)) for a diagonal Gaussian q, in nats.

    Averages log q(z|x) - log p(z) over `num_samples` draws z = mean + exp(log_var / 2) * eps.
    `log_prior` maps z (..., D) to log p(z) (...); default N(0, I) (then it is unbiased for gaussian_kl).
    Differentiable in mean and log_var. Shape: mean.shape[:-1].
    """
    _check_same_shape("mean", mean, "log_var", log_var)
    num_samples = validation.check_positive_int("num_samples", num_samples)
    mean, log_var = _float(mean), _float(log_var)
    log_prior = standard_normal_log_prob if log_prior is None else log_prior
    eps = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
    z = mean[None] + jnp.exp(0.5 * log_var)[None] * eps
    log_q = -0.5 * jnp.sum(eps * eps + log_var[None] + math.log(2.0 * math.pi), axis=-1)
    return jnp.mean(log_q - log_prior(z), axis=0)


def gaussian_channel_rate_bound(mean: Array, log_var: Array, *, prior: str = "standard") -> Array:
    """Upper bound on I(X; Z) for the channel z ~ N(mean(x), diag(exp(log_var(x)))), from a batch.

    mean, log_var: (B, D) encoder outputs for B samples of x.
    prior="standard": E_x KL(q(z|x) || N(0, I)), the usual VIB rate (an upper bound for any data).
    prior="moment_matched": E_x KL(q(z|x) || N(m, C)) with m, C the batch mean and covariance of z
      (C = Cov(mean) + E diag(exp(log_var))) = 0.5 (log det C - E sum log_var). The Gaussian maximises
      entropy at fixed covariance, so this bounds I(X; Z) in population and is tight for jointly
      Gaussian (x, z); from a finite batch it is a plug-in estimate.
    Returns a scalar in nats.
    """
    validation.check_choice("prior", prior, ("standard", "moment_matched"))
    _check_same_shape("mean", mean, "log_var", log_var)
    if jnp.ndim(mean) != 2:
        raise ValueError(f"mean must have shape (batch, latent_dim); got {jnp.shape(mean)}")
    mean, log_var = _float(mean), _float(log_var)
    if prior == "standard":
        return jnp.mean(gaussian_kl(mean, log_var))
    centered = mean - jnp.mean(mean, axis=0, keepdims=True)
    cov = centered.T @ centered / mean.shape[0] + jnp.diag(jnp.mean(jnp.exp(log_var), axis=0))
    _, logdet = jnp.linalg.slogdet(cov)
    return 0.5 * (logdet - jnp.mean(jnp.sum(log_var, axis=-1)))


def nats_to_bits(nats: Array) -> Array:
    """Converts nats to bits (divides by ln 2)."""
    return jnp.asarray(nats) / LOG2


def bits_to_nats(bits: Array) -> Array:
    """Converts bits to nats (multiplies by ln 2)."""
    return jnp.asarray(bits) * LOG2
