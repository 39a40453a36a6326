"""Key/value cache for the decoder backbone: creation, in-place slot writes and prompt bookkeeping.

The cache lives in the flax "cache" collection. Every attention layer holds `cached_key` and
`cached_value` (BxSxKxH, S = cache length, K = kv heads) and a scalar `index`: the next slot to write.
A decode call with T tokens writes slots [index, index + T) and advances the index by T, so a prompt is
prefilled in one call and generation continues one (or several) tokens at a time. Which slots a query
may see is decided by the mask (see `attention_masks.decode_mask`), so left-padded prompts work.
With `scan_layers` the cache arrays carry a leading layer axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array


def write(cached_BxSxKxH: Array, new_BxTxKxH: Array, index: Array) -> Array:
    """Writes `new` into the cache at slots [index, index + T). `index` is a scalar int."""
    if new_BxTxKxH.shape[1] > cached_BxSxKxH.shape[1]:
        raise ValueError(
            f"decode step of {new_BxTxKxH.shape[1]} tokens does not fit a cache of length "
            f"{cached_BxSxKxH.shape[1]}; raise cache_len (or config.max_len)"
        )
    zero = jnp.zeros((), jnp.int32)
    start = (zero, index.astype(jnp.int32), zero, zero)
    return jax.lax.dynamic_update_slice(cached_BxSxKxH, new_BxTxKxH.astype(cached_BxSxKxH.dtype), start)


def init_cache(model: Any, batch_size: int, cache_len: int | None = None) -> dict[str, Any]:
    """Returns an all-zero "cache" collection for `model` (a backbone Transformer).

    Args:
      model: the `Transformer` module; parameters do not depend on the cache length.
      batch_size: number of sequences decoded together (with classifier-free guidance: 2x the prompts).
      cache_len: slots per sequence (prompt + generated tokens); defaults to `model.config.max_len`.
        A shorter cache makes every decode step cheaper.

    Returns:
      the "cache" collection, to pass as `{"params": ..., "cache": cache}` with `mutable=["cache"]`.
    """
    if cache_len is not None:
        if cache_len < 1:
            raise ValueError(f"cache_len must be >= 1; got {cache_len}")
        model = model.clone(config=dataclasses.replace(model.config, max_len=int(cache_len)))
    tokens_Bx1 = jnp.zeros((batch_size, 1), jnp.int32)

    def _init() -> Any:
        return model.init(jax.random.PRNGKey(0), tokens_Bx1, positions_BxT=tokens_Bx1, decode=True)["cache"]

    abstract = jax.eval_shape(_init)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)


def positions_from_valid(valid_BxT: Array) -> Array:
    """RoPE positions for a (left- or right-) padded sequence: 0, 1, ... over valid tokens only."""
    if valid_BxT.ndim != 2:
        raise ValueError(f"valid_BxT must have shape [batch, length]; got {valid_BxT.shape}")
    return jnp.maximum(jnp.cumsum(valid_BxT.astype(jnp.int32), axis=1) - 1, 0)


def cache_index(cache: dict[str, Any]) -> Array:
    """The next slot to be written (read from the first layer's index)."""
    indices = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache) if _is_index(path)]
    if not indices:
        raise ValueError("cache has no 'index' entries; build it with kv_cache.init_cache")
    return jnp.ravel(indices[0])[0]


def _is_index(path: tuple[Any, ...]) -> bool:
    last = path[-1]
    return getattr(last, "key", None) == "index"
