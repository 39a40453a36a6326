"""What the three unified-MLLM hosts share: config defaults and checks, the token vocabulary layout,
sequence packing, the host base module (tokenizer + backbone + understanding path) and cached `answer`.

Vocabulary of the language model (LM): text ids [0, V_t), then K image codes [V_t, V_t + K) (K = 0 for the
continuous host), then BOI and EOI. Image positions never embed a code id: their input is a learned map of
the tokenizer's latent z, so the tokenizer is the only path from pixels to the LM.

Sequences have a fixed layout so one compiled program serves every batch (text is right-padded, BOS ...
EOS then pad 0, as the data pipeline writes it):
  understanding  [question (Lq) | BOI | image (N) | EOI | answer (La)]
  generation     [caption (Lc) | BOI | image (N) (| EOI)]
Padding is masked as keys and RoPE positions count valid tokens only (`kv_cache.positions_from_valid`):
equivalent to packing valid tokens back to back. `modality` marks TEXT (0) / IMAGE (1) (BOI/EOI: text).
Understanding (all hosts): next-token CE on answer words and EOS over the text slice of the logits;
causal (AR) or "omni" mask. Guidance training swaps a caption for the empty text [BOS, EOS] with
probability `cfg_dropout`. Randomness: the "sample" rng stream, or a fixed key without it (eval).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import Array

from infotok_jax import tokenizer as tok
from infotok_jax.mllm import attention_masks, kv_cache, sampling
from infotok_jax.mllm.backbone import Transformer, TransformerConfig

TEXT, IMAGE = 0, 1
KINDS = ("ar", "masked", "continuous")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_QUANTIZERS = {"ar": ("vq", "fsq"), "masked": ("vq", "fsq"), "continuous": ("none", "gaussian")}


def default_host_config(kind: str = "ar") -> ml_collections.ConfigDict:
    """Host defaults, small enough to train on a CPU: 32x32 images -> 64 tokens, a 4-layer 128-wide LM."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is unknown; use one of {KINDS}")
    c = ml_collections.ConfigDict()
    c.kind = kind  # "ar" | "masked" | "continuous"
    c.tokenizer = tok.default_config()  # the shared tokenizer (its quantizer must suit the host)
    if kind == "continuous":
        c.tokenizer.quantizer = "gaussian"  # continuous tokens: "gaussian" (VIB head) or "none"
    c.lm = ml_collections.ConfigDict()
    c.lm.num_layers = 4  # transformer blocks
    c.lm.embed_dim = 128  # residual width
    c.lm.num_heads = 4  # query heads
    c.lm.num_kv_heads = 4  # key/value heads (GQA when fewer)
    c.lm.head_dim = 32  # per-head width
    c.lm.mlp_dim = 384  # SwiGLU hidden width
    c.lm.dtype = "float32"  # compute dtype: "float32" | "bfloat16"
    c.lm.remat = "none"  # rematerialization policy of the backbone
    c.lm.dropout_rate = 0.0  # residual dropout (needs a "dropout" rng when > 0 and train=True)
    c.text_vocab_size = 64  # V_t: >= the text tokenizer's vocab_size (scenes: 44)
    c.pad_id, c.bos_id, c.eos_id = 0, 1, 2  # text specials (WordTokenizer ids)
    c.max_caption_len = 32  # Lc, BOS and EOS included
    c.max_question_len = 16  # Lq
    c.max_answer_len = 8  # La
    c.understanding_weight = 1.0  # answer cross-entropy
    c.generation_weight = 1.0  # code cross-entropy (ar, masked) or flow-matching loss (continuous)
    c.reconstruction_weight = 1.0  # tokenizer pixel MSE (the tokenizer trains jointly)
    c.lm_grad_to_tokenizer = 1.0  # scale of the LM losses' gradient into the tokenizer (0: LM-only heads)
    c.cfg_dropout = 0.1  # probability of training a generation row on the empty caption
    c.projector_hidden = 256  # continuous: hidden width of the z -> LM MLP projector
    c.flow = ml_collections.ConfigDict()
    c.flow.width = 128  # continuous: flow-head MLP width
    c.flow.depth = 3  # continuous: residual AdaLN blocks
    c.flow.samples_per_token = 2  # continuous: (t, eps) draws per masked token per step (MAR uses 4)
    c.sampling = ml_collections.ConfigDict()
    c.sampling.temperature = 1.0  # code / noise temperature
    c.sampling.top_k = 0  # ar, masked: top-k filter (0 = off)
    c.sampling.cfg_scale = 3.0  # classifier-free guidance scale (1 = conditional only)
    c.sampling.num_steps = 8  # masked, continuous: parallel decoding steps
    c.sampling.flow_steps = 16  # continuous: Euler steps of the flow ODE per decoding step
    c.sampling.choice_temperature = 4.5  # masked: re-masking noise scale (MaskGIT)
    if kind == "ar":  # with the LM gradient the AR losses collapse the VQ codebook (measured: docs/hosts.md)
        c.lm_grad_to_tokenizer, c.sampling.temperature, c.sampling.cfg_scale = 0.0, 0.5, 1.0
    return c


def _fail(field: str, value: Any, need: str) -> None:
    raise ValueError(f"host config: {field}={value!r} is invalid: {need}")


def validate_host_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field and the fix for an inconsistent host config."""
    if c.kind not in KINDS:
        _fail("kind", c.kind, f"choose one of {KINDS}")
    tok.validate_config(c.tokenizer)
    if c.tokenizer.quantizer not in _QUANTIZERS[c.kind]:
        _fail("tokenizer.quantizer", c.tokenizer.quantizer, f"use one of {_QUANTIZERS[c.kind]} for {c.kind}")
    if c.lm.dtype not in _DTYPES:
        _fail("lm.dtype", c.lm.dtype, f"choose one of {tuple(_DTYPES)}")
    if max(c.pad_id, c.bos_id, c.eos_id) >= c.text_vocab_size or len({c.pad_id, c.bos_id, c.eos_id}) < 3:
        _fail("text_vocab_size", c.text_vocab_size, "must exceed distinct pad_id, bos_id and eos_id")
    for f in ("max_caption_len", "max_question_len", "max_answer_len"):
        if c[f] < 2:
            _fail(f, c[f], "must be >= 2 (BOS and EOS)")
    for f in ("understanding_weight", "generation_weight", "reconstruction_weight", "lm_grad_to_tokenizer"):
        if c[f] < 0:
            _fail(f, c[f], "must be >= 0")
    if not 0.0 <= c.cfg_dropout < 1.0:
        _fail("cfg_dropout", c.cfg_dropout, "must be in [0, 1)")
    if c.flow.samples_per_token < 1:
        _fail("flow.samples_per_token", c.flow.samples_per_token, "must be >= 1")


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


def lm_config(c: ml_collections.ConfigDict, max_len: int) -> TransformerConfig:
    """Backbone config of host config `c`; `max_len` is the KV-cache length when decoding."""
    lm = c.lm
    return TransformerConfig(
        vocab_size=vocab_for(c).size, num_layers=lm.num_layers, num_heads=lm.num_heads,
        num_kv_heads=lm.num_kv_heads, head_dim=lm.head_dim, embed_dim=lm.embed_dim, mlp_dim=lm.mlp_dim,
        max_len=max_len, dtype=_DTYPES[lm.dtype], remat=lm.remat, dropout_rate=lm.dropout_rate,
    )


def _check_tokens(name: str, tokens: Array, length: int) -> None:
    if tokens.ndim != 2 or tokens.shape[1] != length:
        raise ValueError(f"{name} must be int (batch, {length}) (config max length); got {tokens.shape}")


def pack(segments: list[tuple[Array | int, int]], batch: int, pad_id: int) -> dict[str, Array]:
    """Lays out ("text", tokens_BxL) | ("id", token_id) | ("image", N) segments back to back.

    Returns "tokens" (image slots hold 0), "valid" (False on text padding), "modality", "positions" (RoPE
    positions over valid tokens) as BxT arrays, and "starts": the static first slot of every segment.
    """
    tokens, valid, modality, starts, at = [], [], [], [], 0
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
    return {"tokens": jnp.concatenate(tokens, axis=1), "valid": valid_BxT,
            "modality": jnp.concatenate(modality, axis=1),
            "positions": kv_cache.positions_from_valid(valid_BxT), "starts": tuple(starts)}


def understanding_layout(question_BxLq: Array, answer_BxLa: Array, n: int, v: Vocab, pad_id: int) -> dict:
    """[question | BOI | image | EOI | answer] with `targets` / `loss_mask` for the answer CE."""
    out = pack([("text", question_BxLq), ("id", v.boi), ("image", n), ("id", v.eoi), ("text", answer_BxLa)],
               question_BxLq.shape[0], pad_id)
    t_T = jnp.arange(out["tokens"].shape[1])
    targets = jnp.pad(out["tokens"][:, 1:], ((0, 0), (0, 1)))
    in_answer_T = (t_T >= out["starts"][-1]) & (t_T < t_T.shape[0] - 1)  # answer BOS is given, not predicted
    out["targets"], out["loss_mask"] = targets, in_answer_T[None, :] & (targets != pad_id)
    return out


def generation_layout(caption_BxLc: Array, n: int, v: Vocab, pad_id: int, with_eoi: bool) -> dict[str, Array]:
    """[caption | BOI | image (| EOI)]; `starts[2]` is the first image slot."""
    segs = [("text", caption_BxLc), ("id", v.boi), ("image", n)] + ([("id", v.eoi)] if with_eoi else [])
    return pack(segs, caption_BxLc.shape[0], pad_id)


def empty_captions(c: ml_collections.ConfigDict, batch: int) -> Array:
    """The unconditional prompt [BOS, EOS, pad...] (the empty text), int32 (batch, max_caption_len)."""
    row = jnp.full((c.max_caption_len,), c.pad_id, jnp.int32).at[0].set(c.bos_id).at[1].set(c.eos_id)
    return jnp.broadcast_to(row[None], (batch, c.max_caption_len))


def attention_mask(kind: str, lay: dict[str, Array]) -> Array:
    """"causal" (causal + padding) or "omni" (plus full attention inside the image span). Bool BxTxT."""
    valid_BxT = lay["valid"]
    b, t = valid_BxT.shape
    if kind == "omni":
        mask = attention_masks.omni_mask(attention_masks.image_span_ids(lay["modality"] == IMAGE), valid_BxT)
    else:
        mask = attention_masks.causal_mask(b, t) & attention_masks.padding_mask(valid_BxT)
    return mask | jnp.eye(t, dtype=bool)[None]  # padding rows see only themselves: unused but well defined


def masked_cross_entropy(logits_BxTxV: Array, targets_BxT: Array, mask_BxT: Array) -> tuple[Array, Array]:
    """Mean CE and accuracy over positions where `mask_BxT` is True (0 when none is)."""
    targets_BxT = jnp.where(mask_BxT, targets_BxT, 0)  # out-of-range labels off the mask would give NaN
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), targets_BxT)
    w_BxT = mask_BxT.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(w_BxT), 1.0)
    acc = jnp.sum((jnp.argmax(logits_BxTxV, -1) == targets_BxT) * w_BxT) / denom
    return jnp.sum(ce_BxT * w_BxT) / denom, acc


def dense(features: int, names: tuple[str | None, str | None], *, zero_init: bool = False,
          name: str | None = None) -> nn.Dense:
    """float32 Dense whose kernel carries logical axis `names` and whose bias carries names[1]."""
    kernel_init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
    return nn.Dense(features, kernel_init=nn.with_logical_partitioning(kernel_init, names),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[1:]),
                    name=name)


class HostBase(nn.Module):
    """Tokenizer + backbone + understanding path; subclasses add `image_inputs` and `generation_loss`."""

    config: ml_collections.ConfigDict
    cache_len: int | None = None  # KV-cache length for decoding (inference clones the host with it)
    understanding_mask: ClassVar[str] = "causal"

    @property
    def vocab(self) -> Vocab:
        return vocab_for(self.config)

    @property
    def num_image_tokens(self) -> int:
        return tok.num_tokens(self.config.tokenizer)

    def setup(self) -> None:
        validate_host_config(self.config)
        c = self.config
        train_len = c.max_caption_len + c.max_question_len + c.max_answer_len + self.num_image_tokens + 2
        self.tokenizer = tok.SharedTokenizer(c.tokenizer)
        self.lm = Transformer(lm_config(c, self.cache_len or train_len))
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
        self.image_pos = self.param("image_pos", init, (self.num_image_tokens, c.lm.embed_dim))

    def image_inputs(self, z_BxNxD: Array) -> Array:
        """Tokenizer latents -> LM input embeddings of the image positions (BxNxE)."""
        raise NotImplementedError

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        """The host's generation objective and its metrics."""
        raise NotImplementedError

    def host_rng(self) -> Array:
        """A key from the "sample" stream, or a fixed key when it is absent (deterministic eval)."""
        return self.make_rng("sample") if self.has_rng("sample") else jax.random.PRNGKey(0)

    def training_captions(self, batch: dict, train: bool) -> Array:
        """Captions with each row replaced by the empty caption with prob. cfg_dropout (train only)."""
        c = self.config
        caption_BxLc = batch["caption_tokens"]
        _check_tokens("batch['caption_tokens']", caption_BxLc, c.max_caption_len)
        if not train or c.cfg_dropout == 0:
            return caption_BxLc
        drop_B = jax.random.bernoulli(self.host_rng(), c.cfg_dropout, (caption_BxLc.shape[0],))
        return jnp.where(drop_B[:, None], empty_captions(c, caption_BxLc.shape[0]), caption_BxLc)

    def run_lm(self, lay: dict, image_BxNxE: Array | None, mask: Array, *, decode: bool = False,
               train: bool = False) -> tuple[Array, Array]:
        """Embeds `lay["tokens"]`, writes `image_BxNxE` into the image span, runs the LM: (logits, hidden)."""
        x_BxTxE = self.lm.embed(lay["tokens"])
        if image_BxNxE is not None:
            s = lay["starts"][2]
            x_BxTxE = x_BxTxE.at[:, s:s + image_BxNxE.shape[1]].set(image_BxNxE.astype(x_BxTxE.dtype))
        return self.lm(embeddings_BxTxD=x_BxTxE, positions_BxT=lay["positions"], mask_BxTxT=mask,
                       decode=decode, deterministic=not train, return_hidden=True)

    def _understanding(self, z_BxNxD: Array, question: Array, answer: Array, train: bool) -> tuple:
        c = self.config
        _check_tokens("question_tokens", question, c.max_question_len)
        _check_tokens("answer_tokens", answer, c.max_answer_len)
        lay = understanding_layout(question, answer, self.num_image_tokens, self.vocab, c.pad_id)
        mask = attention_mask(self.understanding_mask, lay)
        return self.run_lm(lay, self.image_inputs(z_BxNxD), mask, train=train)[0], lay

    def understanding_logits(self, images: Array, question_BxLq: Array, answer_BxLa: Array) -> Array:
        """Teacher-forced logits (B, T, V) of the understanding sequence (eval tokenizer)."""
        z = self.tokenizer.encode(images, train=False)["z"]
        return self._understanding(z, question_BxLq, answer_BxLa, False)[0]

    def understanding_loss(self, z_BxNxD: Array, batch: dict, train: bool) -> tuple[Array, dict]:
        """Answer cross-entropy over the text slice, and the token accuracy."""
        logits, lay = self._understanding(z_BxNxD, batch["question_tokens"], batch["answer_tokens"], train)
        loss, acc = masked_cross_entropy(logits[..., :self.config.text_vocab_size], lay["targets"],
                                         lay["loss_mask"])
        return loss, {"understanding/token_accuracy": acc}

    def losses(self, batch: dict, *, train: bool) -> tuple[Array, dict, dict]:
        """(total loss, metrics, tokenizer output dict). Apply with mutable=["state"] when training VQ."""
        c, images = self.config, batch["image"]
        tok_out = self.tokenizer(images, train=train)
        s = c.lm_grad_to_tokenizer  # forward value unchanged; the LM losses' gradient into z scaled by s
        z_lm = tok_out["z"] if s == 1 else s * tok_out["z"] + (1 - s) * jax.lax.stop_gradient(tok_out["z"])
        und, und_metrics = self.understanding_loss(z_lm, batch, train)
        gen, gen_metrics = self.generation_loss({**tok_out, "z": z_lm}, batch, train)
        recon = jnp.mean(jnp.square(tok_out["recon"] - images.astype(jnp.float32)))
        tok_losses = {f"loss/tokenizer_{k}": v for k, v in tok_out["losses"].items()}
        total = (c.understanding_weight * und + c.generation_weight * gen + c.reconstruction_weight * recon
                 + sum(tok_losses.values(), jnp.zeros((), jnp.float32)))
        metrics = {"loss/total": total, "loss/understanding": und, "loss/generation": gen,
                   "loss/reconstruction": recon, **tok_losses, **und_metrics, **gen_metrics,
                   **{f"tokenizer/{k}": v for k, v in tok_out["metrics"].items()}}
        return total, metrics, tok_out

    def __call__(self, batch: dict, *, train: bool = False) -> tuple[Array, dict, dict]:
        return self.losses(batch, train=train)

    def prefill_understanding(self, images: Array, question_BxLq: Array) -> tuple[Array, Array, Array]:
        """Writes [question | BOI | image | EOI | BOS] to the KV cache: (last logits, last position, valid)"""
        c = self.config
        _check_tokens("question_tokens", question_BxLq, c.max_question_len)
        z = self.tokenizer.encode(images, train=False)["z"]
        lay = pack([("text", question_BxLq), ("id", self.vocab.boi), ("image", self.num_image_tokens),
                    ("id", self.vocab.eoi), ("id", c.bos_id)], question_BxLq.shape[0], c.pad_id)
        logits, _ = self.run_lm(lay, self.image_inputs(z), self.prefill_mask(self.understanding_mask, lay),
                                decode=True)
        return logits[:, -1], lay["positions"][:, -1], lay["valid"]

    def prefill_mask(self, kind: str, lay: dict) -> Array:
        """`attention_mask` of a prompt (P slots) widened with False columns to the cache length S."""
        mask_BxPxP = attention_mask(kind, lay)
        return jnp.pad(mask_BxPxP, ((0, 0), (0, 0), (0, self.lm.config.max_len - mask_BxPxP.shape[-1])))

    def decode_text(self, tokens_BxT: Array, positions_BxT: Array, mask_BxTxS: Array) -> Array:
        """One cached decoding call on text/special token ids: logits (B, T, V)."""
        return self.lm(tokens_BxT, positions_BxT=positions_BxT, mask_BxTxT=mask_BxTxS, decode=True)

    def decode_codes(self, codes_BxN: Array) -> Array:
        """Code indices (B, N) -> images clipped to [0, 1] (discrete tokenizers)."""
        return jnp.clip(self.tokenizer.decode_from_indices(codes_BxN), 0.0, 1.0)

    def decode_latents(self, z_BxNxD: Array) -> Array:
        """Tokenizer decoder, clipped to [0, 1]."""
        return jnp.clip(self.tokenizer.decode(z_BxNxD), 0.0, 1.0)


def sampling_rows(c: ml_collections.ConfigDict, caption_BxLc: Array, num_samples: int,
                  cfg_scale: float | None) -> tuple[Array, float | None]:
    """(captions repeated `num_samples` times, then as many empty captions under guidance; guidance scale).
    `cfg_scale` None takes `c.sampling.cfg_scale`; scale 1 is the conditional model: no rows added, None."""
    _check_tokens("caption_tokens", caption_BxLc, c.max_caption_len)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    scale = float(c.sampling.cfg_scale if cfg_scale is None else cfg_scale)
    rows = jnp.repeat(caption_BxLc.astype(jnp.int32), num_samples, axis=0)
    if scale == 1.0:
        return rows, None
    return jnp.concatenate([rows, empty_captions(c, rows.shape[0])]), scale


def init_lm_cache(model: HostBase, rows: int, cache_len: int) -> dict:
    """A zero "cache" collection for `model.clone(cache_len=cache_len)`."""
    return {"lm": kv_cache.init_cache(Transformer(lm_config(model.config, cache_len)), rows, cache_len)}


def answer(model: HostBase, variables: dict, images: Array, question_tokens_BxLq: Array,
           max_answer_len: int) -> Array:
    """Greedy KV-cached answers, int32 (B, max_answer_len): BOS, words, EOS, then pad (data format).

    The prompt [question | BOI | image | EOI | BOS] is prefilled with the host's understanding mask
    (omni hosts: image tokens see each other); answer tokens are causal text, so cached decoding is exact.
    Only text ids other than pad and BOS can be produced; everything after the first EOS becomes pad.
    """
    if max_answer_len < 2:
        raise ValueError(f"max_answer_len must be >= 2 (BOS and EOS); got {max_answer_len}")
    c, b, steps = model.config, question_tokens_BxLq.shape[0], max_answer_len - 1
    p = c.max_question_len + tok.num_tokens(c.tokenizer) + 3
    m, params = model.clone(cache_len=p + steps), {k: v for k, v in variables.items() if k != "cache"}
    (first_BxV, last_pos_B, valid_BxP), mut = m.apply(
        {**params, "cache": init_lm_cache(model, b, p + steps)}, images, question_tokens_BxLq,
        method="prefill_understanding", mutable=["cache"])
    key_valid_BxS = jnp.concatenate([valid_BxP, jnp.ones((b, steps), bool)], axis=1)

    def step_fn(cache: Any, tokens_Bx1: Array, step: Array) -> tuple[Array, Any]:
        mask = attention_masks.decode_mask(jnp.full((b, 1), p + step), key_valid_BxS)
        logits, new = m.apply({**params, "cache": cache}, tokens_Bx1, last_pos_B[:, None] + 1 + step, mask,
                              method="decode_text", mutable=["cache"])
        return logits[:, 0], new["cache"]

    ids_V = jnp.arange(vocab_for(c).size)
    allowed_V = (ids_V < c.text_vocab_size) & (ids_V != c.pad_id) & (ids_V != c.bos_id)
    out_BxS = sampling.sample_autoregressive(step_fn, mut["cache"], first_BxV, jax.random.PRNGKey(0), steps,
                                             sampling.SamplerConfig(temperature=0.0), allowed_V)
    is_eos = out_BxS == c.eos_id
    after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
    out_BxS = jnp.where(after_eos, c.pad_id, out_BxS)
    return jnp.concatenate([jnp.full((b, 1), c.bos_id, jnp.int32), out_BxS], axis=1)
