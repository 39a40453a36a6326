"""The InfoTok regularizer: compression C(X;Z), relevance R(Z;Y) and cross-modal consistency R(Z;T).

    L = L_host + w(step) * (beta * C(X;Z) - lambda_y * R(Z;Y) - lambda_c * R(Z;T))

with w(step) a linear warm-up from 0 to 1. Arms (config.infotok.estimator):
  none  no regularizer (the baseline); the terms are still measured by `dependence_metrics` at eval.
  vib   C = the variational rate: E KL(q(z|x) || N(0, I)) per token for a Gaussian tokenizer, or the
        categorical rate KL(q(c|x) || uniform) of the soft code assignment for VQ. Relevance is the
        variational bound carried by the host's own task losses (so lambda_y is unused); consistency is
        nHSIC(Z, T).
  hsic  C = nHSIC(X, Z), R(Z;Y) = nHSIC(Z, Y), R(Z;T) = nHSIC(Z, T), Gaussian kernels with median
        bandwidths under stop-gradient (all settings in config.infotok).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from infotok_jax import estimators
from infotok_jax.infotok import config as config_lib
from infotok_jax.infotok import views

Array = jax.Array


def warmup_factor(step: Array, warmup_steps: int) -> Array:
    """Linear ramp 0 -> 1 over `warmup_steps` (1 from the start when warmup_steps == 0)."""
    if warmup_steps <= 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(step.astype(jnp.float32) / warmup_steps, 0.0, 1.0)


def _nhsic(config: ml_collections.ConfigDict, a: Array, b: Array, kernel_a: str, kernel_b: str) -> Array:
    kwargs = dict(
        kernel_x=kernel_a,
        kernel_y=kernel_b,
        bandwidth_x=config_lib.bandwidth(config),
        bandwidth_y=config_lib.bandwidth(config),
        estimator=config.hsic_estimator,
    )
    if config.normalized:
        return estimators.normalized_hsic(a, b, **kwargs)
    return estimators.hsic(a, b, **kwargs)


def rate_nats_per_token(tokenizer_out: dict[str, Array]) -> Array:
    """Variational rate of the tokens, in nats per token (Gaussian KL or VQ categorical rate)."""
    if "log_var" in tokenizer_out:
        return estimators.gaussian_kl(tokenizer_out["mean"], tokenizer_out["log_var"]).mean()
    if "code_logits" in tokenizer_out:
        return estimators.categorical_rate(tokenizer_out["code_logits"]).mean()
    raise ValueError("the VIB rate needs a 'gaussian' or 'vq' tokenizer (no mean/log_var or code_logits)")


def regularizer(
    config: ml_collections.ConfigDict,
    *,
    x_view_BxF: Array,
    z_BxNxD: Array,
    y_BxE: Array,
    t_BxE: Array,
    tokenizer_out: dict[str, Array],
    step: Array,
) -> tuple[Array, dict[str, Array]]:
    """Returns (weighted regularizer to add to the loss, its unweighted terms as metrics)."""
    if config.estimator == "none":
        return jnp.zeros((), jnp.float32), {}
    weight = warmup_factor(step, config.warmup_steps)
    z_view = views.token_view(z_BxNxD.astype(jnp.float32), config.z_view)
    consistency = _nhsic(config, z_view, t_BxE, config.kernel_z, config.kernel_t)
    metrics = {"infotok/weight": weight, "infotok/consistency": consistency}
    if config.estimator == "vib":
        rate = rate_nats_per_token(tokenizer_out)
        metrics["infotok/rate_bits_per_token"] = rate / math.log(2.0)
        loss = config.beta * rate - config.lambda_c * consistency
    else:
        compression = _nhsic(config, x_view_BxF, z_view, config.kernel_x, config.kernel_z)
        relevance = _nhsic(config, z_view, y_BxE, config.kernel_z, config.kernel_y)
        metrics.update({"infotok/compression": compression, "infotok/relevance": relevance})
        loss = config.beta * compression - config.lambda_y * relevance - config.lambda_c * consistency
    metrics["infotok/regularizer"] = loss
    return weight * loss, metrics


def dependence_metrics(
    config: ml_collections.ConfigDict,
    *,
    x_view_BxF: Array,
    z_BxNxD: Array,
    y_BxE: Array,
    t_BxE: Array,
    tokenizer_out: dict[str, Array],
) -> dict[str, Array]:
    """Every arm's measurements, for evaluation and the information plane (no gradients needed).

    Always the biased normalized HSIC with Gaussian kernels and median bandwidths, whatever the arm
    trains with, so that arms are compared on one scale.
    """
    z_view = views.token_view(z_BxNxD.astype(jnp.float32), config.z_view)
    metrics = {
        "nhsic_xz": estimators.normalized_hsic(x_view_BxF, z_view),
        "nhsic_zy": estimators.normalized_hsic(z_view, y_BxE),
        "nhsic_zt": estimators.normalized_hsic(z_view, t_BxE),
        "bandwidth_x": estimators.median_bandwidth(x_view_BxF),
        "bandwidth_z": estimators.median_bandwidth(z_view),
    }
    if "log_var" in tokenizer_out or "code_logits" in tokenizer_out:
        metrics["rate_bits_per_token"] = rate_nats_per_token(tokenizer_out) / math.log(2.0)
    return metrics
