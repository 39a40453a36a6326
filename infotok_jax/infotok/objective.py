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
              bandwidths under stop-gradient (all settings in config.infotok).
  supervised  the control: no compression; w * (lambda_y * probe + lambda_c * alignment), the losses of the
              heads in controls.py, computed by the task and passed in as `control_losses`.
A term whose weight is 0 is not computed at all (per-term ablations are weight overrides), so it adds no
gradient and its metric is absent from the training metrics (evaluation still measures every term).
The vib and hsic arms are one implementation, `bottleneck.ib_loss` (the plain function other projects
import); `regularizer` only maps `config.infotok` onto its keywords and applies the warm-up.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections

from infotok_jax import estimators
from infotok_jax.infotok import bottleneck, views
from infotok_jax.infotok import config as config_lib

Array = jax.Array
_HSIC_TERMS = ("compression", "relevance", "consistency")


def warmup_factor(step: Array | int, warmup_steps: int) -> Array:
    """Linear ramp 0 -> 1 over `warmup_steps` (1 from the start when warmup_steps == 0)."""
    if warmup_steps <= 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(jnp.asarray(step).astype(jnp.float32) / warmup_steps, 0.0, 1.0)


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


def ib_keywords(config: ml_collections.ConfigDict) -> dict:
    """`config.infotok` as the hyperparameter keywords of `bottleneck.ib_loss` (the ConfigDict stops here)."""
    return dict(
        beta=config.beta,
        lambda_y=config.lambda_y,
        lambda_c=config.lambda_c,
        estimator=config.estimator,
        z_view=config.z_view,
        kernel_x=config.kernel_x,
        kernel_z=config.kernel_z,
        kernel_y=config.kernel_y,
        kernel_t=config.kernel_t,
        bandwidth=config_lib.bandwidth(config),
        hsic_estimator=config.hsic_estimator,
        normalized=config.normalized,
    )


def _supervised(
    config: ml_collections.ConfigDict, control_losses: dict[str, Array] | None
) -> tuple[Array, dict[str, Array]]:
    """The control arm: no compression; lambda_y * probe + lambda_c * alignment (unweighted by warm-up)."""
    if control_losses is None:
        raise ValueError("config.infotok.estimator='supervised' needs the control heads' losses")
    metrics, loss = {}, jnp.zeros((), jnp.float32)
    for name, w in (("probe", config.lambda_y), ("alignment", config.lambda_c)):
        if w > 0:
            metrics[f"infotok/{name}_loss"] = control_losses[name]
            loss = loss + w * control_losses[name]
    return loss, metrics


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

    The project's tasks call this thin adapter; the vib and hsic arms are `bottleneck.ib_loss` with the
    config's keywords, times the warm-up. `control_losses` ({"probe", "alignment"} from
    `controls.SupervisedControls`) is required by the "supervised" arm and ignored by the others.
    """
    if config.estimator == "none":
        return jnp.zeros((), jnp.float32), {}
    if config.estimator not in config_lib.ESTIMATORS:
        raise ValueError(
            f"config.infotok.estimator: unknown estimator {config.estimator!r}; choose one of "
            f"{config_lib.ESTIMATORS}"
        )
    weight = warmup_factor(step, config.warmup_steps)
    if config.estimator == "supervised":
        loss, metrics = _supervised(config, control_losses)
    else:
        vib = config.estimator == "vib"
        loss, terms = bottleneck.ib_loss(
            z_BxNxD,
            x=None if vib else x_view_BxF,
            y=None if vib else y_BxE,  # VIB's relevance is the host's own task losses
            t=t_BxE,
            rate=rate_nats_per_token(tokenizer_out) if vib and config.beta > 0 else None,
            **ib_keywords(config),
        )
        metrics = {f"infotok/{name}": terms[name] for name in _HSIC_TERMS if name in terms}
        if "rate" in terms:
            metrics["infotok/rate_bits_per_token"] = terms["rate"] / math.log(2.0)
    metrics = {"infotok/weight": weight, **metrics, "infotok/regularizer": loss}
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
