"""Key/value cache for the decoder backbone: in-place slot writes and prompt bookkeeping.

The cache lives in the flax "cache" collection. Every attention layer holds `cached_key` and
`cached_value` (BxSxKxH, S = cache length = `TransformerConfig.max_len`, K = kv heads) and a scalar
`index`: the next slot to write. The first decode call, applied with `mutable=["cache"]` and no cache in
the variables, creates it (zeros, then written), so a fresh cache is never built separately. A decode
call with T tokens writes slots [index, index + T) and advances the index by T, so a prompt is
prefilled in one call and generation continues one (or several) tokens at a time. Which slots a query
may see is decided by the mask (see `attention_masks.decode_mask`), so left-padded prompts work.
With `scan_layers` the cache arrays carry a leading layer axis.
"""

from __future__ import annotations

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


def positions_from_valid(valid_BxT: Array) -> Array:
    """RoPE positions for a (left- or right-) padded sequence: 0, 1, ... over valid tokens only."""
    if valid_BxT.ndim != 2:
        raise ValueError(f"valid_BxT must have shape [batch, length]; got {valid_BxT.shape}")
    return jnp.maximum(jnp.cumsum(valid_BxT.astype(jnp.int32), axis=1) - 1, 0)
