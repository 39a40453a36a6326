"""The hosts' token cross-entropy: mean over a mask, with its accuracy (answers, image codes)."""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jax import Array


def masked_cross_entropy(logits_BxTxV: Array, targets_BxT: Array, mask_BxT: Array) -> tuple[Array, Array]:
    """Mean CE and accuracy over positions where `mask_BxT` is True (0 when none is)."""
    targets_BxT = jnp.where(mask_BxT, targets_BxT, 0)  # out-of-range labels off the mask would give NaN
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), targets_BxT)
    w_BxT = mask_BxT.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(w_BxT), 1.0)
    acc = jnp.sum((jnp.argmax(logits_BxTxV, -1) == targets_BxT) * w_BxT) / denom
    return jnp.sum(ce_BxT * w_BxT) / denom, acc
