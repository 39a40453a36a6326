"""Sampling for the unified-MLLM hosts: how a token is chosen from logits (greedy, temperature, top-k,
top-p, classifier-free guidance) and MaskGIT-style parallel iterative decoding. The KV-cached
autoregressive loop that uses these choices is `decoding.py`.

Everything is a pure function of its inputs and a PRNG key: step i of a loop uses `fold_in(key, i)`, so
the same key gives the same tokens whether or not the loop is jitted or batched differently.
Classifier-free guidance (CFG) runs the conditional and unconditional sequences as one batch [cond;
uncond] and combines logits as `uncond + scale * (cond - uncond)`: scale 1 is the conditional model,
scale 0 the unconditional one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

NEG_INF = -1e30


def greedy(logits_xV: Array) -> Array:
    """Most likely token along the last axis (int32)."""
    return jnp.argmax(logits_xV, axis=-1).astype(jnp.int32)


def top_k_filter(logits_xV: Array, k: int) -> Array:
    """Keeps the k largest logits (ties with the k-th are kept); k <= 0 or k >= V keeps all."""
    if k <= 0 or k >= logits_xV.shape[-1]:
        return logits_xV
    kth_x1 = jax.lax.top_k(logits_xV, k)[0][..., -1:]
    return jnp.where(logits_xV >= kth_x1, logits_xV, NEG_INF)


def top_p_filter(logits_xV: Array, p: float) -> Array:
    """Nucleus filter: keeps the smallest set of top tokens whose probability reaches p (>= 1 token)."""
    if p >= 1.0:
        return logits_xV
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1]; got {p}")
    sorted_xV = -jnp.sort(-logits_xV, axis=-1)
    probs_xV = jax.nn.softmax(sorted_xV.astype(jnp.float32), axis=-1)
    keep_xV = (jnp.cumsum(probs_xV, axis=-1) - probs_xV) < p
    cutoff_x1 = jnp.min(jnp.where(keep_xV, sorted_xV, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits_xV >= cutoff_x1, logits_xV, NEG_INF)


def sample_logits(
    key: Array, logits_xV: Array, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> Array:
    """Samples token ids along the last axis. temperature 0 is greedy (filters are then irrelevant)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return greedy(logits_xV)
    logits_xV = logits_xV.astype(jnp.float32) / temperature
    logits_xV = top_p_filter(top_k_filter(logits_xV, top_k), top_p)
    return jax.random.categorical(key, logits_xV, axis=-1).astype(jnp.int32)


def cfg_combine(cond_xV: Array, uncond_xV: Array, scale: float | Array) -> Array:
    """Classifier-free guidance: uncond + scale * (cond - uncond)."""
    return uncond_xV + scale * (cond_xV - uncond_xV)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How the next token is chosen from logits."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    cfg_scale: float | None = None  # None = no guidance; else logits rows are [cond; uncond]


def cosine_schedule(progress: Array | float) -> Array:
    """MaskGIT cosine schedule: fraction of tokens still masked after `progress` in [0, 1] of the steps."""
    return jnp.cos(0.5 * math.pi * jnp.asarray(progress, jnp.float32))


def maskgit_decode(
    logits_fn: Callable[[Array], Array],
    tokens_BxN: Array,
    key: Array,
    *,
    mask_id: int,
    num_steps: int,
    temperature: float = 1.0,
    top_k: int = 0,
    choice_temperature: float = 4.5,
    schedule: Callable[[Array], Array] = cosine_schedule,
    return_history: bool = False,
) -> Array | tuple[Array, Array]:
    """Parallel iterative decoding (MaskGIT): fill every `mask_id` position in `num_steps` steps.

    Each step predicts all masked positions, samples them, and re-masks the least confident ones so that
    floor(schedule((i + 1) / num_steps) * initially_masked) stay masked (at least one fewer each step,
    none after the last). Confidence = log p(sampled) + choice_temperature * (1 - progress) * Gumbel noise.
    Known (unmasked) input tokens are never changed.

    Args:
      logits_fn: tokens_BxN -> logits_BxNxV (e.g. the masked host's bidirectional image-token logits).
      tokens_BxN: int tokens with `mask_id` at the positions to generate.
      key: PRNG key; step i uses fold_in(key, i).
      mask_id: the mask token; it is never sampled.
      num_steps: decoding steps (>= 1).
      temperature / top_k: token sampling (temperature 0 = greedy).
      choice_temperature: scale of the noise on the re-masking confidence.
      schedule: progress in [0, 1] -> fraction still masked; decreasing, schedule(0) = 1, schedule(1) = 0.
      return_history: also return the tokens after every step (num_steps x B x N).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    num_unknown_B = jnp.sum(tokens_BxN == mask_id, axis=-1)

    def body(tokens_BxN: Array, step: Array) -> tuple[Array, Array]:
        logits_BxNxV = logits_fn(tokens_BxN).astype(jnp.float32)
        if mask_id < logits_BxNxV.shape[-1]:
            logits_BxNxV = logits_BxNxV.at[..., mask_id].set(NEG_INF)
        key_sample, key_choice = jax.random.split(jax.random.fold_in(key, step))
        unknown_BxN = tokens_BxN == mask_id
        sampled_BxN = sample_logits(key_sample, logits_BxNxV, temperature=temperature, top_k=top_k)
        sampled_BxN = jnp.where(unknown_BxN, sampled_BxN, tokens_BxN)
        logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
        logp_BxN = jnp.take_along_axis(logp_BxNxV, sampled_BxN[..., None], axis=-1)[..., 0]
        progress = (step + 1).astype(jnp.float32) / num_steps
        gumbel_BxN = jax.random.gumbel(key_choice, logp_BxN.shape)
        confidence_BxN = logp_BxN + choice_temperature * (1.0 - progress) * gumbel_BxN
        confidence_BxN = jnp.where(unknown_BxN, confidence_BxN, jnp.inf)
        mask_len_B = jnp.floor(num_unknown_B * schedule(progress)).astype(jnp.int32)
        mask_len_B = jnp.maximum(1, jnp.minimum(jnp.sum(unknown_BxN, axis=-1) - 1, mask_len_B))
        mask_len_B = jnp.where(step == num_steps - 1, 0, mask_len_B)
        cutoff_Bx1 = jnp.take_along_axis(jnp.sort(confidence_BxN, axis=-1), mask_len_B[:, None], axis=-1)
        new_BxN = jnp.where(confidence_BxN < cutoff_Bx1, mask_id, sampled_BxN).astype(tokens_BxN.dtype)
        return new_BxN, new_BxN

    final_BxN, history_SxBxN = jax.lax.scan(body, tokens_BxN, jnp.arange(num_steps))
    return (final_BxN, history_SxBxN) if return_history else final_BxN
