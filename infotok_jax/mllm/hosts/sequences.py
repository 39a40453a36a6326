"""The hosts' token vocabulary and fixed sequence layouts, with their attention masks.

Vocabulary of the language model (LM): text ids [0, V_t), then K image codes [V_t, V_t + K) (K = 0 for the
continuous host), then BOI and EOI. Image positions never embed a code id: their input is a learned map of
the tokenizer's latent z, so the tokenizer is the only path from pixels to the LM.

Sequences have a fixed layout so one compiled program serves every batch (text is right-padded, BOS ...
EOS then pad 0, as the data pipeline writes it):
  understanding  [question (Lq) | BOI | image (N) | EOI | answer (La)]
  generation     [caption (Lc) | BOI | image (N) (| EOI)]
Padding is masked as keys and RoPE positions count valid tokens only (`kv_cache.positions_from_valid`):
equivalent to packing valid tokens back to back. `modality` marks TEXT (0) / IMAGE (1) (BOI/EOI: text).
Guidance uses the empty text [BOS, EOS] as the unconditional caption.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
from jax import Array

from infotok_jax import tokenizer as tok
from infotok_jax.mllm import attention_masks, kv_cache

TEXT, IMAGE = 0, 1


@dataclasses.dataclass(frozen=True)
class Vocab:
    """LM vocabulary layout: text ids [0, text), codes [code_offset = text, + codes), then BOI, EOI."""

    text: int  # V_t
    codes: int  # K (0 for continuous tokens)
    code_offset: int
    boi: int
    eoi: int
    size: int  # V_t + K + 2


def vocab_for(c: ml_collections.ConfigDict) -> Vocab:
    """The LM vocabulary of host config `c`."""
    t, k = int(c.text_vocab_size), tok.num_codes(c.tokenizer)
    return Vocab(text=t, codes=k, code_offset=t, boi=t + k, eoi=t + k + 1, size=t + k + 2)


def check_tokens(name: str, tokens: Array, length: int) -> None:
    """Raises ValueError unless `tokens` is (batch, length)."""
    if tokens.ndim != 2 or tokens.shape[1] != length:
        raise ValueError(f"{name} must be int (batch, {length}) (config max length); got {tokens.shape}")


def pack(segments: list[tuple[str, Array | int]], batch: int, pad_id: int) -> dict[str, Array]:
    """Lays out ("text", tokens_BxL) | ("id", token_id) | ("image", N) segments back to back.

    Returns "tokens" (image slots hold 0), "valid" (False on text padding), "modality", "positions" (RoPE
    positions over valid tokens) as BxT arrays, and "starts": the static first slot of every segment.
    """
    tokens, valid, modality, starts = [], [], [], []
    at = 0
    for kind, value in segments:
        if kind == "text":
            tokens.append(value.astype(jnp.int32))
            valid.append(value != pad_id)
        else:
            length = value if kind == "image" else 1
            fill = 0 if kind == "image" else value
            tokens.append(jnp.full((batch, length), fill, jnp.int32))
            valid.append(jnp.ones((batch, length), bool))
        modality.append(jnp.full(tokens[-1].shape, IMAGE if kind == "image" else TEXT, jnp.int32))
        starts.append(at)
        at += tokens[-1].shape[1]
    valid_BxT = jnp.concatenate(valid, axis=1)
    return {
        "tokens": jnp.concatenate(tokens, axis=1),
        "valid": valid_BxT,
        "modality": jnp.concatenate(modality, axis=1),
        "positions": kv_cache.positions_from_valid(valid_BxT),
        "starts": tuple(starts),
    }


def understanding_layout(question_BxLq: Array, answer_BxLa: Array, n: int, v: Vocab, pad_id: int) -> dict:
    """[question | BOI | image | EOI | answer] with `targets` / `loss_mask` for the answer CE."""
    segments = [("text", question_BxLq), ("id", v.boi), ("image", n), ("id", v.eoi), ("text", answer_BxLa)]
    out = pack(segments, question_BxLq.shape[0], pad_id)
    t_T = jnp.arange(out["tokens"].shape[1])
    targets = jnp.pad(out["tokens"][:, 1:], ((0, 0), (0, 1)))
    in_answer_T = (t_T >= out["starts"][-1]) & (t_T < t_T.shape[0] - 1)  # answer BOS is given, not predicted
    out["targets"] = targets
    out["loss_mask"] = in_answer_T[None, :] & (targets != pad_id)
    return out


def generation_layout(caption_BxLc: Array, n: int, v: Vocab, pad_id: int, with_eoi: bool) -> dict[str, Array]:
    """[caption | BOI | image (| EOI)]; `starts[2]` is the first image slot."""
    segments = [("text", caption_BxLc), ("id", v.boi), ("image", n)]
    if with_eoi:
        segments.append(("id", v.eoi))
    return pack(segments, caption_BxLc.shape[0], pad_id)


def attention_mask(kind: str, lay: dict[str, Array]) -> Array:
    """ "causal" (causal + padding) or "omni" (plus full attention inside the image span). Bool BxTxT."""
    valid_BxT = lay["valid"]
    b, t = valid_BxT.shape
    if kind == "omni":
        mask = attention_masks.omni_mask(attention_masks.image_span_ids(lay["modality"] == IMAGE), valid_BxT)
    else:
        mask = attention_masks.causal_mask(b, t) & attention_masks.padding_mask(valid_BxT)
    return mask | jnp.eye(t, dtype=bool)[None]  # padding rows see only themselves: unused but well defined


def empty_captions(c: ml_collections.ConfigDict, batch: int) -> Array:
    """The unconditional prompt [BOS, EOS, pad...] (the empty text), int32 (batch, max_caption_len)."""
    row = jnp.full((c.max_caption_len,), c.pad_id, jnp.int32).at[0].set(c.bos_id).at[1].set(c.eos_id)
    return jnp.broadcast_to(row[None], (batch, c.max_caption_len))


def sampling_rows(
    c: ml_collections.ConfigDict, caption_BxLc: Array, num_samples: int, cfg_scale: float | None
) -> tuple[Array, float | None]:
    """Prompt rows for generation and the guidance scale.

    Rows are the captions repeated `num_samples` times (caption-major), then as many empty captions under
    guidance. `cfg_scale` None takes `c.sampling.cfg_scale`; scale 1 is the conditional model: no rows are
    added and the returned scale is None.
    """
    check_tokens("caption_tokens", caption_BxLc, c.max_caption_len)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    scale = float(c.sampling.cfg_scale if cfg_scale is None else cfg_scale)
    rows = jnp.repeat(caption_BxLc.astype(jnp.int32), num_samples, axis=0)
    if scale == 1.0:
        return rows, None
    return jnp.concatenate([rows, empty_captions(c, rows.shape[0])]), scale
