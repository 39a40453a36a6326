"""KV-cached autoregressive decoding: prefill a prompt into the cache, then sample one token at a time.

`cached_decode` is the one prefill-and-decode recipe of the project: the hosts' greedy `answer`, the AR
host's code sampling and the backbone tests all run it, each with its own two methods of a linen module:

  prefill(*prefill_args) -> (logits_BxV of the last prompt slot, its RoPE position_B, valid_BxP)
      writes the P prompt slots to the "cache" collection (created by this call: zeros, then written);
  step(tokens_Bx1, step, positions_Bx1, mask_Bx1xS) -> logits_BxV
      feeds the token sampled at `step` (0-based) through the cached model.

The loop (`sample_autoregressive`) is generic: step i samples with `fold_in(key, i)`, so the same key gives
the same tokens whether or not the loop is cached, jitted or batched differently. With classifier-free
guidance the prompt rows are [cond; uncond] and each sampled token is fed to both halves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import attention_masks, sampling

# (cache, tokens_Bx1, step) -> (logits_BxV for the next token, new cache)
StepFn = Callable[[Any, Array, Array], tuple[Array, Any]]
# a linen method name, or a function (module, *args) as `Module.apply(method=...)` accepts
Method = str | Callable[..., Any]


def _choose(
    key: Array, logits_BxV: Array, step: Array, sampler: sampling.SamplerConfig, allowed_V: Array | None
) -> Array:
    if sampler.cfg_scale is not None:
        half = logits_BxV.shape[0] // 2
        logits_BxV = sampling.cfg_combine(logits_BxV[:half], logits_BxV[half:], sampler.cfg_scale)
    if allowed_V is not None:
        logits_BxV = jnp.where(allowed_V[None, :], logits_BxV, sampling.NEG_INF)
    return sampling.sample_logits(
        jax.random.fold_in(key, step),
        logits_BxV,
        temperature=sampler.temperature,
        top_k=sampler.top_k,
        top_p=sampler.top_p,
    )


def sample_autoregressive(
    step_fn: StepFn,
    cache: Any,
    first_logits_BxV: Array,
    key: Array,
    num_steps: int,
    sampler: sampling.SamplerConfig,
    allowed_V: Array | None = None,
) -> Array:
    """Generic AR loop (lax.scan): sample a token, feed it through `step_fn`, repeat.

    Args:
      step_fn: (cache, tokens_Bx1, step) -> (next logits BxV, cache); closes over params, positions, masks.
      cache: the decoding state after the prompt (e.g. the KV cache).
      first_logits_BxV: logits for the first generated token (last prompt position).
      key: PRNG key; step i samples with fold_in(key, i).
      num_steps: number of tokens to generate (>= 1); the last one is never fed back.
      sampler: temperature / top-k / top-p / CFG. With CFG the logits have 2B rows [cond; uncond].
      allowed_V: optional bool mask of tokens that may be generated (e.g. the image-code range).

    Returns:
      int32 tokens BxN (B = prompts, i.e. half the rows under CFG).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")

    def body(carry: tuple[Any, Array], step: Array) -> tuple[tuple[Any, Array], Array]:
        cache, logits_BxV = carry
        tokens_B = _choose(key, logits_BxV, step, sampler, allowed_V)
        feed_B = tokens_B if sampler.cfg_scale is None else jnp.concatenate([tokens_B, tokens_B])
        logits_BxV, cache = step_fn(cache, feed_B[:, None], step)
        return (cache, logits_BxV), tokens_B

    (_, last_logits_BxV), tokens_NxB = jax.lax.scan(
        body, (cache, first_logits_BxV), jnp.arange(num_steps - 1)
    )
    last_B = _choose(key, last_logits_BxV, jnp.asarray(num_steps - 1), sampler, allowed_V)
    return jnp.concatenate([tokens_NxB.T, last_B[:, None]], axis=1)


def cached_decode(
    model: nn.Module,
    variables: dict[str, Any],
    *,
    prefill: Method,
    prefill_args: tuple[Any, ...],
    step: Method,
    num_steps: int,
    cache_len: int,
    key: Array,
    sampler: sampling.SamplerConfig,
    allowed_V: Array | None = None,
) -> Array:
    """Prefills a prompt of P slots into a fresh KV cache, then samples `num_steps` tokens.

    Args:
      model: a module whose KV cache has `cache_len` slots (e.g. `host.clone(cache_len=...)`).
      variables: its variables; a "cache" collection in them is ignored (decoding starts empty).
      prefill / prefill_args / step: the two methods described in the module docstring.
      num_steps: tokens to generate. cache_len: >= P + num_steps - 1 (the last token is not fed back).
      key: PRNG key (step i uses fold_in(key, i)). sampler: see `sampling.SamplerConfig`.
      allowed_V: optional bool mask of the token ids that may be generated.

    Returns:
      int32 tokens (B, num_steps); B is half the prompt rows under guidance.
    """
    params = {k: v for k, v in variables.items() if k != "cache"}
    (first_BxV, last_pos_B, valid_BxP), mutated = model.apply(
        params, *prefill_args, method=prefill, mutable=["cache"]
    )
    rows, prompt_len = valid_BxP.shape
    if cache_len < prompt_len + num_steps - 1:
        raise ValueError(
            f"cache_len={cache_len} cannot hold {prompt_len} prompt slots + {num_steps - 1} steps"
        )
    key_valid_BxS = jnp.concatenate([valid_BxP, jnp.ones((rows, cache_len - prompt_len), bool)], axis=1)

    def step_fn(cache: Any, tokens_Bx1: Array, i: Array) -> tuple[Array, Any]:
        mask_Bx1xS = attention_masks.decode_mask(jnp.full((rows, 1), prompt_len + i), key_valid_BxS)
        positions_Bx1 = last_pos_B[:, None] + 1 + i
        logits_BxV, new = model.apply(
            {**params, "cache": cache},
            tokens_Bx1,
            i,
            positions_Bx1,
            mask_Bx1xS,
            method=step,
            mutable=["cache"],
        )
        return logits_BxV, new["cache"]

    return sample_autoregressive(step_fn, mutated["cache"], first_BxV, key, num_steps, sampler, allowed_V)
