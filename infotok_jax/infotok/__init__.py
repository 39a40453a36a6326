"""The InfoTok objective: an Information Bottleneck regularizer for a shared visual tokenizer."""

from infotok_jax.infotok.config import default_config, validate
from infotok_jax.infotok.objective import dependence_metrics, rate_nats_per_token, regularizer, warmup_factor
from infotok_jax.infotok.views import (
    caption_embedding,
    label_embedding,
    pixel_view,
    scene_attribute_embedding,
    target_embedding,
    token_view,
)

__all__ = [
    "caption_embedding",
    "default_config",
    "dependence_metrics",
    "label_embedding",
    "pixel_view",
    "rate_nats_per_token",
    "regularizer",
    "scene_attribute_embedding",
    "target_embedding",
    "token_view",
    "validate",
    "warmup_factor",
]
