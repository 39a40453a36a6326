"""InfoTok objective settings: which estimator, the weights, and every reconstructed modelling choice.

The paper (arXiv 2602.01554) states the objective only in words: an Information Bottleneck on
image X -> shared tokens Z -> outputs Y, plus cross-modal consistency with the paired text T, estimated
with a variational IB or with HSIC. Everything below that the abstract does not fix is this project's
reconstruction, exposed as a field with a documented default (see docs/infotok.md).
"""

from __future__ import annotations

import ml_collections

from infotok_jax.estimators.validation import ESTIMATORS as HSIC_ESTIMATORS
from infotok_jax.estimators.validation import KERNELS
from infotok_jax.infotok import bottleneck
from infotok_jax.infotok.views import Z_VIEWS

ESTIMATORS = ("none", *bottleneck.IB_ESTIMATORS, "supervised")
RELEVANCE_TARGETS = ("text", "attributes", "label")


def default_config() -> ml_collections.ConfigDict:
    """Defaults for `config.infotok` (weights from prior art: HBaR, Wang et al. 2021; VIB, Alemi 2016)."""
    c = ml_collections.ConfigDict()
    c.estimator = (
        "hsic"  # "none" | "vib" (variational rate) | "hsic" (normalized HSIC) | "supervised" (control)
    )
    c.relevance_target = "text"  # Y: "text" (question+answer words) | "attributes" / "label" (privileged)
    c.beta = bottleneck.DEFAULT_BETA  # compression weight: nHSIC(X,Z) (hsic) or the rate, nats/token (vib)
    c.lambda_y = bottleneck.DEFAULT_LAMBDA_Y  # relevance: nHSIC(Z,Y) (hsic; unused by vib) or Y-probe
    c.lambda_c = bottleneck.DEFAULT_LAMBDA_C  # consistency: nHSIC(Z,T) or caption InfoNCE (supervised)
    c.warmup_steps = 200  # IB weights ramp linearly from 0 over these steps
    c.z_view = bottleneck.DEFAULT_Z_VIEW  # Z per image: "pooled" (mean over tokens) | "flat" (N*D)
    c.z_source = "z_pre"  # which tokenizer output is Z: "z_pre" (pre-quantization) | "z" (what the LLM eats)
    # X view: image average-pooled to x_view_size^2 x 3 and flattened; None: derived from the image size
    # (the largest divisor of its side up to 8: 8 for 32 or 64 pixels, 7 for 28)
    c.x_view_size = ml_collections.config_dict.placeholder(int)
    c.kernel_x = "gaussian"  # kernel on the X view
    c.kernel_z = "gaussian"  # kernel on Z
    c.kernel_y = "gaussian"  # kernel on the relevance target Y
    c.kernel_t = "gaussian"  # kernel on the caption embedding T
    c.bandwidth = "median"  # "median" (subsampled median heuristic, stop-gradient) or a number, e.g. "0.5"
    c.hsic_estimator = "biased"  # "biased" (in [0, 1] normalized) | "unbiased" (Song et al. 2012)
    c.normalized = True  # normalized HSIC (CKA-style), so the weights are scale-free
    c.vib_prior = "uniform"  # vq categorical rate prior: "uniform" over the K codes
    c.control_proj_dim = 64  # supervised: width of the Z and T projections of the caption InfoNCE loss
    c.control_temperature = 0.1  # supervised: InfoNCE temperature
    return c


def bandwidth(config: ml_collections.ConfigDict) -> str | float:
    """The kernel bandwidth setting: "median" or a positive float (the config stores a string)."""
    if config.bandwidth == "median":
        return "median"
    value = float(config.bandwidth)
    if not value > 0:
        raise ValueError(f"bandwidth must be positive, got {value}")
    return value


def validate(config: ml_collections.ConfigDict, quantizer: str) -> None:
    """Raises ValueError naming the `infotok.*` field for any unusable setting."""
    c = config

    def fail(field: str, message: str) -> None:
        raise ValueError(f"config.infotok.{field}: {message}")

    if c.estimator not in ESTIMATORS:
        fail("estimator", f"unknown estimator {c.estimator!r}; choose one of {ESTIMATORS}")
    if c.relevance_target not in RELEVANCE_TARGETS:
        fail("relevance_target", f"unknown target {c.relevance_target!r}; choose one of {RELEVANCE_TARGETS}")
    for field in ("beta", "lambda_y", "lambda_c"):
        if not c[field] >= 0:
            fail(
                field,
                f"weights must be >= 0 (0 drops the term; the sign is part of the objective), got {c[field]}",
            )
    if c.control_proj_dim <= 0:
        fail("control_proj_dim", f"must be positive, got {c.control_proj_dim}")
    if not c.control_temperature > 0:
        fail("control_temperature", f"must be positive, got {c.control_temperature}")
    if c.warmup_steps < 0:
        fail("warmup_steps", f"must be >= 0, got {c.warmup_steps}")
    if c.z_view not in Z_VIEWS:
        fail("z_view", f"choose one of {Z_VIEWS}")
    if c.z_source not in ("z_pre", "z"):
        fail("z_source", "choose 'z_pre' or 'z'")
    for field in ("kernel_x", "kernel_z", "kernel_y", "kernel_t"):
        if c[field] not in KERNELS:
            fail(field, f"unknown kernel {c[field]!r}; choose one of {KERNELS}")
    if c.hsic_estimator not in HSIC_ESTIMATORS:
        fail("hsic_estimator", f"choose one of {HSIC_ESTIMATORS}")
    try:
        bandwidth(c)
    except ValueError:
        fail("bandwidth", f"must be 'median' or a positive number such as '0.5', got {c.bandwidth!r}")
    if c.x_view_size is not None and c.x_view_size <= 0:
        fail("x_view_size", "must be positive (or None: derived from the image size)")
    if c.estimator == "vib" and quantizer not in ("gaussian", "vq"):
        fail(
            "estimator",
            f"'vib' needs a rate: use tokenizer quantizer 'gaussian' (Gaussian KL) or 'vq' (categorical "
            f"rate), not {quantizer!r}",
        )
