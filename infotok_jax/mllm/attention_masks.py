"""Attention masks as data for the shared decoder backbone.

Every mask is a boolean array where True means "this query may attend to this key". Masks are built from
per-position arrays (validity, image-span ids, cache slots) so one compiled model serves causal LM,
prefix-LM, Show-o style "omni" attention and cached decoding: the host chooses the mask, not the model.

Shapes: a full-sequence mask is BxTxT (query x key); a cached-decoding mask is BxTxS with S the cache
length. The backbone also accepts the same masks with a singleton head axis (Bx1xTxT). Combine masks
with `&` (`combine`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def _check_rank(name: str, x: Array, rank: int, shape_hint: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have shape {shape_hint} (rank {rank}); got shape {x.shape}")


def causal_mask(batch_size: int, length: int) -> Array:
    """Lower-triangular mask: query t attends to keys <= t. Returns bool BxTxT."""
    tri_TxT = jnp.tril(jnp.ones((length, length), dtype=bool))
    return jnp.broadcast_to(tri_TxT[None], (batch_size, length, length))


def padding_mask(valid_BxT: Array) -> Array:
    """Mask that allows attention only between valid (non-padding) positions. Returns bool BxTxT."""
    _check_rank("valid_BxT", valid_BxT, 2, "[batch, length]")
    valid_BxT = valid_BxT.astype(bool)
    return valid_BxT[:, :, None] & valid_BxT[:, None, :]


def prefix_lm_mask(prefix_len_B: Array, length: int) -> Array:
    """Full attention inside the first `prefix_len` positions, causal after. Returns bool BxTxT."""
    _check_rank("prefix_len_B", jnp.asarray(prefix_len_B), 1, "[batch]")
    prefix_len_B = jnp.asarray(prefix_len_B)
    pos_T = jnp.arange(length)
    causal_BxTxT = causal_mask(prefix_len_B.shape[0], length)
    key_in_prefix_BxT = pos_T[None, :] < prefix_len_B[:, None]
    return causal_BxTxT | key_in_prefix_BxT[:, None, :]


def image_span_ids(is_image_BxT: Array) -> Array:
    """Numbers each contiguous run of image positions 1, 2, ...; text positions get 0. Returns int32 BxT."""
    _check_rank("is_image_BxT", is_image_BxT, 2, "[batch, length]")
    is_image_BxT = is_image_BxT.astype(bool)
    prev_BxT = jnp.pad(is_image_BxT[:, :-1], ((0, 0), (1, 0)))
    starts_BxT = is_image_BxT & ~prev_BxT
    run_id_BxT = jnp.cumsum(starts_BxT.astype(jnp.int32), axis=1)
    return jnp.where(is_image_BxT, run_id_BxT, 0)


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
    same_image_BxTxT = (image_span_BxT[:, :, None] == image_span_BxT[:, None, :]) & (
        image_span_BxT[:, :, None] > 0
    )
    mask_BxTxT = causal_mask(batch_size, length) | same_image_BxTxT
    if valid_BxT is not None:
        mask_BxTxT = mask_BxTxT & padding_mask(valid_BxT)
    return mask_BxTxT


def decode_mask(query_slot_BxT: Array, key_valid_BxS: Array) -> Array:
    """Mask for cached decoding: a query in cache slot i sees valid cache slots <= i. Returns bool BxTxS.

    Args:
      query_slot_BxT: int cache slot written by each query token (the cache index at the call, plus t).
      key_valid_BxS: bool validity of every cache slot (False for left padding and unwritten slots;
        unwritten slots after the query are excluded by causality anyway).
    """
    _check_rank("query_slot_BxT", query_slot_BxT, 2, "[batch, length]")
    _check_rank("key_valid_BxS", key_valid_BxS, 2, "[batch, cache_length]")
    slot_S = jnp.arange(key_valid_BxS.shape[1])
    causal_BxTxS = slot_S[None, None, :] <= query_slot_BxT[:, :, None]
    return causal_BxTxS & key_valid_BxS.astype(bool)[:, None, :]


def combine(*masks: Array) -> Array:
    """Logical AND of masks of the same shape."""
    if not masks:
        raise ValueError("combine needs at least one mask")
    out = masks[0].astype(bool)
    for m in masks[1:]:
        if m.shape != out.shape:
            raise ValueError(f"combine: mask shapes differ: {out.shape} vs {m.shape}")
        out = out & m.astype(bool)
    return out
