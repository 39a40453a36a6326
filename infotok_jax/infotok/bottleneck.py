"""`ib_loss`: the InfoTok regularizer as one plain function, for any JAX tokenizer.

    loss = beta * C(X;Z) - lambda_y * R(Z;Y) - lambda_c * R(Z;T)

Arrays in, hyperparameters as keywords with defaults (the estimators' and optax's way). A term is on
when its input is given and its weight is > 0; otherwise it is not computed at all (no gradient, no
entry in the returned terms, and a NaN in an unused input cannot leak). The compression C(X;Z) is
  estimator="hsic"  nHSIC(x, z): pass `x`, a fixed view of the input (e.g. the image pooled and flattened);
  estimator="vib"   the variational rate, computed by the caller with `estimators.gaussian_kl` (Gaussian
                    tokenizer) or `estimators.categorical_rate` (VQ code logits) and passed as `rate`.
R(Z;Y) = nHSIC(z, y) and R(Z;T) = nHSIC(z, t) in both. Z's side (bandwidth, Gram matrix, centring) is
built once and the dependences are one batched reduction (`estimators.hsic_one_to_many`). A warm-up of
the weights is the caller's: multiply the returned loss. Under jit with sharded inputs every value is the
global-batch one (the estimators see the whole batch). docs/infotok.md shows it in three frameworks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax import estimators
from infotok_jax.estimators import validation
from infotok_jax.infotok import views

Array = jax.Array

IB_ESTIMATORS = ("vib", "hsic")
# Defaults of `ib_loss` and of `config.infotok` (config.py reads them here: one source). Weights from
# prior art (HBaR, Wang et al. 2021; VIB, Alemi et al. 2016); docs/infotok.md says why.
DEFAULT_BETA = 0.006
DEFAULT_LAMBDA_Y = 0.05
DEFAULT_LAMBDA_C = 0.05
DEFAULT_Z_VIEW = "pooled"


def _weight(name: str, value: Any) -> float:
    """A weight is a concrete number >= 0 (0 drops its term, which must be known while tracing)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete number >= 0 (0 drops the term); got {value!r}")
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0 (0 drops the term); got {value!r}") from None
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(
            f"{name} must be >= 0 (0 drops the term; the sign is part of the objective); got {weight}"
        )
    return weight


def _check_view(name: str, a: Array, z_BxV: Array) -> None:
    validation.check_features(name, a)
    validation.check_same_n("z", z_BxV, name, a)


def _check_inputs(estimator: str, x: Array | None, rate: Array | None) -> None:
    """Each estimator takes its compression from one input; the other one given is a mistake."""
    if estimator == "hsic" and rate is not None:
        raise ValueError(
            "rate= is the compression of estimator='vib'; estimator='hsic' measures nHSIC(x, z): pass x= "
            "instead, or estimator='vib'"
        )
    if estimator == "vib" and x is not None:
        raise ValueError(
            "estimator='vib' takes its compression from rate= (e.g. estimators.gaussian_kl(mean, "
            "log_var).mean()), not x=; drop x, or use estimator='hsic'"
        )
    if rate is not None and jnp.ndim(rate) != 0:
        raise ValueError(
            f"rate must be a scalar in nats per token, e.g. estimators.gaussian_kl(mean, log_var).mean(); "
            f"got shape {jnp.shape(rate)}"
        )


def _dependences(
    z_BxV: Array,
    others: dict[str, tuple[Array, str]],
    *,
    kernel_z: str,
    bandwidth: float | str,
    hsic_estimator: str,
    normalized: bool,
) -> dict[str, Array]:
    """{name: (n)HSIC(z, other)} for each (array, kernel) in `others`, sharing Z's Gram work."""
    values = estimators.hsic_one_to_many(
        z_BxV,
        [a for a, _ in others.values()],
        kernel_z=kernel_z,
        kernels=[k for _, k in others.values()],
        bandwidth_z=bandwidth,
        bandwidths=[bandwidth] * len(others),
        estimator=hsic_estimator,
        normalized=normalized,
    )
    return {name: values[i] for i, name in enumerate(others)}


def ib_loss(
    z: Array,
    *,
    x: Array | None = None,
    y: Array | None = None,
    t: Array | None = None,
    rate: Array | float | None = None,
    beta: float = DEFAULT_BETA,
    lambda_y: float = DEFAULT_LAMBDA_Y,
    lambda_c: float = DEFAULT_LAMBDA_C,
    estimator: str = "hsic",
    z_view: str = DEFAULT_Z_VIEW,
    kernel: str = "gaussian",
    kernel_x: str | None = None,
    kernel_z: str | None = None,
    kernel_y: str | None = None,
    kernel_t: str | None = None,
    bandwidth: float | str = "median",
    hsic_estimator: str = "biased",
    normalized: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """The InfoTok loss to add to a tokenizer's own loss, and its unweighted terms (module docstring).

    z: the tokens, (B, D) or (B, N, D) (N tokens per example; reduced by `z_view`: "pooled" = mean over
      tokens, "flat" = all N*D values). x (B, F), y (B, E), t (B, E'): paired views, one row per example.
    rate: a scalar in nats per token (estimator="vib" only).
    beta, lambda_y, lambda_c: weights >= 0 of compression, relevance, consistency (0 drops a term).
    kernel: the kernel of every side ("gaussian" | "linear" | "inverse_multiquadric" | "laplacian" |
      "multiscale"); kernel_x / kernel_z / kernel_y / kernel_t override it per side.
    bandwidth: "median" (the median heuristic, under stop-gradient) or a positive number, every side.
    hsic_estimator: "biased" | "unbiased"; normalized: nHSIC (scale-free, in [0, 1] when biased) or HSIC.
    Returns (loss, terms) with terms a subset of {"compression", "rate", "relevance", "consistency"}.
    """
    validation.check_choice("estimator", estimator, IB_ESTIMATORS)
    validation.check_choice("z_view", z_view, views.Z_VIEWS)
    kernels = {"x": kernel_x, "z": kernel_z, "y": kernel_y, "t": kernel_t}
    kernels = {side: kernel if k is None else k for side, k in kernels.items()}
    for side, k in kernels.items():
        validation.check_choice(f"kernel_{side}", k, validation.KERNELS)
        validation.check_bandwidth("bandwidth", bandwidth, k)
    validation.check_choice("hsic_estimator", hsic_estimator, validation.ESTIMATORS)
    weights = {"beta": beta, "lambda_y": lambda_y, "lambda_c": lambda_c}
    weights = {name: _weight(name, w) for name, w in weights.items()}
    _check_inputs(estimator, x, rate)
    if jnp.ndim(z) not in (2, 3):
        raise ValueError(f"z must have shape (B, D) or (B, N, D); got shape {jnp.shape(z)}")
    z = jnp.asarray(z)
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    z_BxV = z if z.ndim == 2 else views.token_view(z, z_view)
    # name: (input, kernel, signed weight), in the order the loss adds them
    candidates = {
        "compression": (x, kernels["x"], weights["beta"]),
        "relevance": (y, kernels["y"], -weights["lambda_y"]),
        "consistency": (t, kernels["t"], -weights["lambda_c"]),
    }
    on = {name: term for name, term in candidates.items() if term[0] is not None and term[2] != 0}
    for name, (a, _, _) in on.items():
        _check_view({"compression": "x", "relevance": "y", "consistency": "t"}[name], a, z_BxV)
    terms: dict[str, Array] = {}
    if on:
        terms = _dependences(
            z_BxV,
            {name: (a, k) for name, (a, k, _) in on.items()},
            kernel_z=kernels["z"],
            bandwidth=bandwidth,
            hsic_estimator=hsic_estimator,
            normalized=normalized,
        )
    loss = jnp.zeros((), jnp.float32)
    for name, (_, _, w) in on.items():
        loss = loss + w * terms[name]
    if rate is not None and weights["beta"] != 0:
        terms["rate"] = jnp.asarray(rate)
        loss = loss + weights["beta"] * terms["rate"]
    return loss, terms
