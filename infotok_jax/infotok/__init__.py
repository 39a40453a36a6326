"""The InfoTok objective: an Information Bottleneck regularizer for a shared visual tokenizer.

`ib_loss` is the plain function for any JAX tokenizer (docs/infotok.md); `regularizer` is the
config-driven adapter the project's tasks call.
"""

from infotok_jax.infotok.bottleneck import IB_ESTIMATORS, ib_loss
from infotok_jax.infotok.config import ESTIMATORS, RELEVANCE_TARGETS, default_config, validate
from infotok_jax.infotok.controls import SupervisedControls
from infotok_jax.infotok.objective import dependence_metrics, rate_nats_per_token, regularizer, warmup_factor
from infotok_jax.infotok.views import (
    Z_VIEWS,
    answer_embedding,
    caption_embedding,
    label_embedding,
    pixel_view,
    relevance_embedding,
    scene_attribute_embedding,
    token_view,
)

__all__ = [
    "ESTIMATORS",
    "IB_ESTIMATORS",
    "RELEVANCE_TARGETS",
    "Z_VIEWS",
    "SupervisedControls",
    "answer_embedding",
    "caption_embedding",
    "default_config",
    "dependence_metrics",
    "ib_loss",
    "label_embedding",
    "pixel_view",
    "rate_nats_per_token",
    "regularizer",
    "relevance_embedding",
    "scene_attribute_embedding",
    "token_view",
    "validate",
    "warmup_factor",
]
