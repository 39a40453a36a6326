"""The InfoTok regularizer: compression C(X;Z), relevance R(Z;Y) and cross-modal consistency R(Z;T).

    L = L_host + w(step) * (beta * C(X;Z) - lambda_y * R(Z;Y) - lambda_c * R(Z;T))

with w(step) a linear warm-up from 0 to 1. Arms (config.infotok.estimator):
  none        no regularizer (the baseline); the terms are still measured by `dependence_metrics` at eval.
  vib         C = the variational rate: E KL(q(z|x) || N(0, I)) per token for a Gaussian tokenizer, or the
              categorical rate KL(q(c|x) || uniform) of the soft code assignment for VQ. Relevance is the
              variational bound carried by the host's own task losses where they reach the tokenizer (none
              on the AR host, whose lm_grad_to_tokenizer is 0), so lambda_y is unused; consistency is
              nHSIC(Z, T).
  hsic        C = nHSIC(X, Z), R(Z;Y) = nHSIC(Z, Y), R(Z;T) = nHSIC(Z, T), Gaussian kernels with median
              bandwidths under stop-gradient (all settings in config.infotok). Z's side (bandwidth, Gram
              matrix, centring) is built once and the three dependences are one batched reduction
              (`estimators.hsic_one_to_many`).
  supervised  the control: no compression; w * (lambda_y * probe + lambda_c * alignment), the losses of the
              heads in controls.py, computed by the task and passed in as `control_losses`.
A term whose weight is 0 is not computed at all (per-term ablations are weight overrides), so it adds no
gradient and its metric is absent from the training metrics (evaluation still measures every term).
"""

from __future__ import annotations

import math

import chex
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


def _dependences(
    config: ml_collections.ConfigDict, z_view: Array, others: dict[str, tuple[Array, str]]
) -> dict:
    """{name: (n)HSIC(Z, other)} for each (array, kernel) in `others`, sharing Z's Gram work."""
    if not others:
        return {}
    bandwidth = config_lib.bandwidth(config)
    values = estimators.hsic_one_to_many(
        z_view,
        [a for a, _ in others.values()],
        kernel_z=config.kernel_z,
        kernels=[k for _, k in others.values()],
        bandwidth_z=bandwidth,
        bandwidths=[bandwidth] * len(others),
        estimator=config.hsic_estimator,
        normalized=config.normalized,
    )
    return {name: values[i] for i, name in enumerate(others)}


def rate_nats_per_token(tokenizer_out: dict[str, Array]) -> Array:
    """Variational rate of the tokens, in nats per token (Gaussian KL or VQ categorical rate)."""
    if "log_var" in tokenizer_out:
        return estimators.gaussian_kl(tokenizer_out["mean"], tokenizer_out["log_var"]).mean()
    if "code_logits" in tokenizer_out:
        return estimators.categorical_rate(tokenizer_out["code_logits"]).mean()
    raise ValueError("the VIB rate needs a 'gaussian' or 'vq' tokenizer (no mean/log_var or code_logits)")


def _check_views(x_view_BxF: Array, z_BxNxD: Array, y_BxE: Array, t_BxE: Array) -> None:
    """Trace-time check that every view is one row per example of the same batch."""
    chex.assert_rank([x_view_BxF, z_BxNxD, y_BxE, t_BxE], [2, 3, 2, 2])
    chex.assert_equal_shape_prefix([x_view_BxF, z_BxNxD, y_BxE, t_BxE], prefix_len=1)


def regularizer(
    config: ml_collections.ConfigDict,
    *,
    x_view_BxF: Array,
    z_BxNxD: Array,
    y_BxE: Array,
    t_BxE: Array,
    tokenizer_out: dict[str, Array],
    step: Array,
    control_losses: dict[str, Array] | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Returns (weighted regularizer to add to the loss, its unweighted terms as metrics).

    `control_losses` ({"probe", "alignment"} from `controls.SupervisedControls`) is required by the
    "supervised" arm and ignored by the others.
    """
    if config.estimator == "none":
        return jnp.zeros((), jnp.float32), {}
    _check_views(x_view_BxF, z_BxNxD, y_BxE, t_BxE)
    weight = warmup_factor(step, config.warmup_steps)
    metrics = {"infotok/weight": weight}
    loss = jnp.zeros((), jnp.float32)
    if config.estimator == "supervised":
        if control_losses is None:
            raise ValueError("config.infotok.estimator='supervised' needs the control heads' losses")
        for name, w in (("probe", config.lambda_y), ("alignment", config.lambda_c)):
            if w > 0:
                metrics[f"infotok/{name}_loss"] = control_losses[name]
                loss = loss + w * control_losses[name]
        metrics["infotok/regularizer"] = loss
        return weight * loss, metrics
    z_view = views.token_view(z_BxNxD.astype(jnp.float32), config.z_view)
    if config.estimator == "vib":
        terms = {"consistency": (t_BxE, config.kernel_t, -config.lambda_c)}
    else:
        terms = {
            "compression": (x_view_BxF, config.kernel_x, config.beta),
            "relevance": (y_BxE, config.kernel_y, -config.lambda_y),
            "consistency": (t_BxE, config.kernel_t, -config.lambda_c),
        }
    terms = {name: term for name, term in terms.items() if term[2] != 0}
    values = _dependences(config, z_view, {name: (a, k) for name, (a, k, _) in terms.items()})
    for name, (_, _, w) in terms.items():
        metrics[f"infotok/{name}"] = values[name]
        loss = loss + w * values[name]
    if config.estimator == "vib" and config.beta > 0:
        rate = rate_nats_per_token(tokenizer_out)
        metrics["infotok/rate_bits_per_token"] = rate / math.log(2.0)
        loss = loss + config.beta * rate
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
    _check_views(x_view_BxF, z_BxNxD, y_BxE, t_BxE)
    z_view = views.token_view(z_BxNxD.astype(jnp.float32), config.z_view)
    xz, zy, zt = estimators.hsic_one_to_many(z_view, [x_view_BxF, y_BxE, t_BxE], normalized=True)
    metrics = {
        "nhsic_xz": xz,
        "nhsic_zy": zy,
        "nhsic_zt": zt,
        "bandwidth_x": estimators.median_bandwidth(x_view_BxF),
        "bandwidth_z": estimators.median_bandwidth(z_view),
    }
    if "log_var" in tokenizer_out or "code_logits" in tokenizer_out:
        metrics["rate_bits_per_token"] = rate_nats_per_token(tokenizer_out) / math.log(2.0)
    return metrics
