"""Attention masks as data for the shared decoder backbone.

Every mask is a boolean array where True means "this query may attend to this key". Masks are built from
per-position arrays (validity, image-span ids, cache slots) so one compiled model serves causal LM,
Show-o style "omni" attention and cached decoding: the host chooses the mask, not the model.

Shapes: a full-sequence mask is BxTxT (query x key); a cached-decoding mask is BxTxS with S the cache
length. The backbone also accepts the same masks with a singleton head axis (Bx1xTxT), which is what
flax's `nn.make_attention_mask` / `nn.make_causal_mask` return; the builders here call those and drop
that axis. Combine masks with `&` or `nn.combine_masks`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import Array


def _check_rank(name: str, x: Array, rank: int, shape_hint: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have shape {shape_hint} (rank {rank}); got shape {x.shape}")


def causal_mask(batch_size: int, length: int) -> Array:
    """Lower-triangular mask: query t attends to keys <= t. Returns bool BxTxT."""
    return nn.make_causal_mask(jnp.zeros((batch_size, length), bool), dtype=bool)[:, 0]


def padding_mask(valid_BxT: Array) -> Array:
    """Mask that allows attention only between valid (non-padding) positions. Returns bool BxTxT."""
    _check_rank("valid_BxT", valid_BxT, 2, "[batch, length]")
    valid_BxT = valid_BxT.astype(bool)
    return nn.make_attention_mask(valid_BxT, valid_BxT, jnp.logical_and, dtype=bool)[:, 0]


def image_span_ids(is_image_BxT: Array) -> Array:
    """Numbers each contiguous run of image positions 1, 2, ...; text positions get 0. Returns int32 BxT."""
    _check_rank("is_image_BxT", is_image_BxT, 2, "[batch, length]")
    is_image_BxT = is_image_BxT.astype(bool)
    prev_BxT = jnp.pad(is_image_BxT[:, :-1], ((0, 0), (1, 0)))
    starts_BxT = is_image_BxT & ~prev_BxT
    run_id_BxT = jnp.cumsum(starts_BxT.astype(jnp.int32), axis=1)
    return jnp.where(is_image_BxT, run_id_BxT, 0)


def _same_image(query_span: Array, key_span: Array) -> Array:
    return (query_span == key_span) & (query_span > 0)


def omni_mask(image_span_BxT: Array, valid_BxT: Array | None = None) -> Array:
    """Show-o "omni" mask: causal over the sequence, plus full attention among the tokens of one image.

    Args:
      image_span_BxT: int array, 0 for text positions and k > 0 for positions of the k-th image span
        (see `image_span_ids`). Tokens of the same span see each other in both directions; text stays
        causal and sees earlier image tokens.
      valid_BxT: optional bool array; padding positions neither attend nor are attended.

    Returns:
      bool BxTxT mask.
    """
    _check_rank("image_span_BxT", image_span_BxT, 2, "[batch, length]")
    batch_size, length = image_span_BxT.shape
    same_image_BxTxT = nn.make_attention_mask(image_span_BxT, image_span_BxT, _same_image, dtype=bool)[:, 0]
    mask_BxTxT = causal_mask(batch_size, length) | same_image_BxTxT
    padding_BxTxT = None if valid_BxT is None else padding_mask(valid_BxT)
    return nn.combine_masks(mask_BxTxT, padding_BxTxT, dtype=bool)


def decode_mask(query_slot_BxT: Array, key_valid_BxS: Array) -> Array:
    """Mask for cached decoding: a query in cache slot i sees valid cache slots <= i. Returns bool BxTxS.

    Args:
      query_slot_BxT: int cache slot written by each query token (the cache index at the call, plus t).
      key_valid_BxS: bool validity of every cache slot (False for left padding and unwritten slots;
        unwritten slots after the query are excluded by causality anyway).
    """
    _check_rank("query_slot_BxT", query_slot_BxT, 2, "[batch, length]")
    _check_rank("key_valid_BxS", key_valid_BxS, 2, "[batch, cache_length]")
    slot_BxS = jnp.broadcast_to(jnp.arange(key_valid_BxS.shape[1]), key_valid_BxS.shape)
    causal_BxTxS = nn.make_attention_mask(query_slot_BxT, slot_BxS, jnp.greater_equal, dtype=bool)[:, 0]
    return causal_BxTxS & key_valid_BxS.astype(bool)[:, None, :]
