"""The InfoTok objective: an Information Bottleneck regularizer for a shared visual tokenizer."""

from infotok_jax.infotok.config import ESTIMATORS, RELEVANCE_TARGETS, default_config, validate
from infotok_jax.infotok.controls import SupervisedControls
from infotok_jax.infotok.objective import dependence_metrics, rate_nats_per_token, regularizer, warmup_factor
from infotok_jax.infotok.views import (
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
    "RELEVANCE_TARGETS",
    "SupervisedControls",
    "answer_embedding",
    "caption_embedding",
    "default_config",
    "dependence_metrics",
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
