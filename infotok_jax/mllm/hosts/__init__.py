"""The three unified-MLLM hosts on the shared visual tokenizer, behind one interface.

  ar          ARHost          image codes as extra vocabulary, causal next-token prediction (Chameleon style)
  masked      MaskedHost      omni mask, masked code prediction, MaskGIT decoding (Show-o style)
  continuous  ContinuousHost  continuous latents, masked autoregression with a flow head (Harmon / MAR style)

Every host is a linen module `Host(config)` whose only path from pixels to the LM is its `tokenizer`
submodule, with:
  model.apply(variables, batch, train=..., method="losses" (or __call__), mutable=["state"], rngs=...)
      -> (total_loss, metrics, tokenizer_output)
  model.answer(variables, images, question_tokens, max_answer_len) -> int32 answers (BOS .. EOS pad)
  model.generate(variables, caption_tokens, key, num_samples=..., ...) -> {"images", "codes" | "latents"}
`answer` and `generate` below are the same calls as functions of the model. rngs for training: "sample"
(caption dropout, masking, flow noise, Gaussian tokens), optional "revive" (VQ dead codes) and "dropout".
Init with `init_variables(model, key)`.

Modules: `config` (defaults, checks), `sequences` (vocabulary, layouts, masks), `losses`, `base` (HostBase:
objective, understanding, cached answers), one module per host, `flow_head`; the KV-cached decoding loop
is `infotok_jax.mllm.decoding`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import Array

from infotok_jax.mllm.hosts.ar_host import ARHost
from infotok_jax.mllm.hosts.base import HostBase
from infotok_jax.mllm.hosts.config import default_host_config, validate_host_config
from infotok_jax.mllm.hosts.continuous_host import ContinuousHost
from infotok_jax.mllm.hosts.masked_host import MaskedHost

HOSTS: dict[str, type[HostBase]] = {"ar": ARHost, "masked": MaskedHost, "continuous": ContinuousHost}


def build_host(config: ml_collections.ConfigDict) -> HostBase:
    """Validates `config` (see `default_host_config`) and returns the host module of `config.kind`."""
    validate_host_config(config)
    return HOSTS[config.kind](config)


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 1) -> dict[str, Array]:
    """A zero batch of the configured shapes (for init and eval_shape)."""
    s, i32 = config.tokenizer.image_size, jnp.int32
    return {
        "image": jnp.zeros((batch_size, s, s, 3), jnp.float32),
        "caption_tokens": jnp.zeros((batch_size, config.max_caption_len), i32),
        "question_tokens": jnp.zeros((batch_size, config.max_question_len), i32),
        "answer_tokens": jnp.zeros((batch_size, config.max_answer_len), i32),
    }


def init_variables(model: HostBase, rng: Array, batch_size: int = 1) -> dict[str, Any]:
    """{"params", "state" (VQ)} with logical-axis boxes, from a zero batch with train=False."""
    return model.init({"params": rng}, dummy_batch(model.config, batch_size), train=False)


def answer(
    model: HostBase, variables: dict, images: Array, question_tokens: Array, max_answer_len: int
) -> Array:
    """Greedy cached answers of any host (`HostBase.answer`)."""
    return model.answer(variables, images, question_tokens, max_answer_len)


def generate(model: HostBase, variables: dict, caption_tokens: Array, key: jax.Array, **kwargs: Any) -> dict:
    """Images for captions from any host (keyword options as the host's `generate` method)."""
    return model.generate(variables, caption_tokens, key, **kwargs)


__all__ = [
    "ARHost",
    "ContinuousHost",
    "HOSTS",
    "HostBase",
    "MaskedHost",
    "answer",
    "build_host",
    "default_host_config",
    "dummy_batch",
    "generate",
    "init_variables",
    "validate_host_config",
]
