"""AR host (Chameleon / Liquid / UniTok style): image codes are extra vocabulary of a causal LM.

Both directions are next-token prediction under a causal mask:
  understanding  [question | BOI | image | EOI | BOS answer...]  -> answer words and EOS
  generation     [caption | BOI | image]                         -> code i predicted at image slot i - 1
The LM's output vocabulary holds the K codes (`common.Vocab`); the code cross-entropy and the sampler both
use only the code slice of the logits at image slots, so training and sampling agree.

Input side: an image position is not embedded by a lookup of its code id but by a learned linear map of
the tokenizer's straight-through quantized latent z (plus a learned per-slot embedding). Its forward value
is the code vector, so it is a function of the code like a lookup, and it can pass the LM losses'
gradient to the tokenizer encoder. The AR default turns that gradient off (`lm_grad_to_tokenizer = 0`,
see `common.default_host_config`): measured on scenes, the next-code loss otherwise keeps the VQ codebook
collapsed and the host generates at chance. At sampling time a drawn code is embedded the same way,
through `tokenizer.codebook()`.

`generate` samples the N codes with a KV cache (`sampling.sample_autoregressive`: temperature, top-k,
classifier-free guidance) and decodes them with the tokenizer decoder; `answer` is `common.answer`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import attention_masks, sampling
from infotok_jax.mllm.hosts import common


class ARHost(common.HostBase):
    """Autoregressive host over discrete codes; see the module docstring."""

    understanding_mask = "causal"

    def setup(self) -> None:
        super().setup()
        self.image_proj = common.dense(self.config.lm.embed_dim, (None, "embed"), name="image_proj")

    def image_inputs(self, z_BxNxD: Array) -> Array:
        return self.image_proj(z_BxNxD.astype(jnp.float32)) + self.image_pos[None]

    def _code_slice(self, logits_BxTxV: Array, lay: dict) -> Array:
        s, v, n = lay["starts"][2], self.vocab, self.num_image_tokens
        return logits_BxTxV[:, s - 1:s - 1 + n, v.code_offset:v.code_offset + v.codes]

    def generation_logits(self, caption_BxLc: Array, z_BxNxD: Array, train: bool = False) -> Array:
        """Teacher-forced code logits (B, N, K): row i predicts code i from the caption and z[:i]."""
        lay = common.generation_layout(caption_BxLc, self.num_image_tokens, self.vocab, self.config.pad_id,
                                       with_eoi=False)
        logits, _ = self.run_lm(lay, self.image_inputs(z_BxNxD), common.attention_mask("causal", lay),
                                train=train)
        return self._code_slice(logits, lay)

    def code_generation_logits(self, caption_BxLc: Array, codes_BxN: Array) -> Array:
        """`generation_logits` with the image given as code indices (B, N) in [0, K)."""
        return self.generation_logits(caption_BxLc, jnp.take(self.tokenizer.codebook(), codes_BxN, axis=0))

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        caption_BxLc = self.training_captions(batch, train)
        logits_BxNxK = self.generation_logits(caption_BxLc, tok_out["z"], train)
        indices_BxN = tok_out["indices"]
        loss, acc = common.masked_cross_entropy(logits_BxNxK, indices_BxN, jnp.ones(indices_BxN.shape, bool))
        return loss, {"generation/code_accuracy": acc}

    def prefill_caption(self, caption_BxLc: Array) -> tuple[Array, Array, Array]:
        """Writes [caption | BOI] to the KV cache: (next logits, last position, valid)."""
        lay = common.pack([("text", caption_BxLc), ("id", self.vocab.boi)], caption_BxLc.shape[0],
                          self.config.pad_id)
        logits, _ = self.run_lm(lay, None, self.prefill_mask("causal", lay), decode=True)
        return logits[:, -1], lay["positions"][:, -1], lay["valid"]

    def decode_code(self, tokens_Bx1: Array, slot: Array, positions_Bx1: Array, mask_Bx1xS: Array) -> Array:
        """Feeds sampled code tokens (LM ids) for image slot `slot` through the cached LM: logits (B, V)."""
        v = self.vocab
        codes_Bx1 = jnp.clip(tokens_Bx1 - v.code_offset, 0, v.codes - 1)
        z_Bx1xD = jnp.take(self.tokenizer.codebook(), codes_Bx1, axis=0)
        pos_1xE = jax.lax.dynamic_slice_in_dim(self.image_pos, slot, 1, axis=0)
        x_Bx1xE = self.image_proj(z_Bx1xD) + pos_1xE[None]
        logits = self.lm(embeddings_BxTxD=x_Bx1xE, positions_BxT=positions_Bx1, mask_BxTxT=mask_Bx1xS,
                         decode=True)
        return logits[:, 0]


def generate(model: ARHost, variables: dict, caption_tokens_BxLc: Array, key: Array, *, num_samples: int = 1,
             temperature: float | None = None, top_k: int | None = None,
             cfg_scale: float | None = None) -> dict[str, Array]:
    """Samples images for captions with a KV cache. Deterministic for a fixed key.

    Args:
      model / variables: the host and its {"params", "state"} variables.
      caption_tokens_BxLc: int captions (data format). key: PRNG key (code i uses fold_in(key, i)).
      num_samples: images per caption (rows are caption-major).
      temperature / top_k / cfg_scale: None takes `config.sampling`; temperature 0 is greedy; a guidance
        scale of 1 disables guidance.

    Returns:
      {"images": (B * num_samples, H, W, 3) in [0, 1], "codes": int32 (B * num_samples, N) in [0, K)}.
    """
    c, v, n = model.config, model.vocab, model.num_image_tokens
    s = c.sampling
    rows_RxLc, scale = common.sampling_rows(c, caption_tokens_BxLc, num_samples, cfg_scale)
    sampler = sampling.SamplerConfig(temperature=float(s.temperature if temperature is None else temperature),
                                     top_k=int(s.top_k if top_k is None else top_k), cfg_scale=scale)
    r, p = rows_RxLc.shape[0], c.max_caption_len + 1
    m = model.clone(cache_len=p + n - 1)
    params = {k: val for k, val in variables.items() if k != "cache"}
    (first_RxV, last_pos_R, valid_RxP), mut = m.apply(
        {**params, "cache": common.init_lm_cache(model, r, p + n - 1)}, rows_RxLc, method="prefill_caption",
        mutable=["cache"])
    key_valid_RxS = jnp.concatenate([valid_RxP, jnp.ones((r, n - 1), bool)], axis=1)

    def step_fn(cache: Any, tokens_Rx1: Array, step: Array) -> tuple[Array, Any]:
        mask = attention_masks.decode_mask(jnp.full((r, 1), p + step), key_valid_RxS)
        positions_Rx1 = last_pos_R[:, None] + 1 + step
        logits_RxV, new = m.apply({**params, "cache": cache}, tokens_Rx1, step, positions_Rx1, mask,
                                  method="decode_code", mutable=["cache"])
        return logits_RxV, new["cache"]

    ids_V = jnp.arange(v.size)
    allowed_V = (ids_V >= v.code_offset) & (ids_V < v.code_offset + v.codes)
    tokens_BxN = sampling.sample_autoregressive(step_fn, mut["cache"], first_RxV, key, n, sampler, allowed_V)
    codes_BxN = tokens_BxN - v.code_offset
    images = model.apply(params, codes_BxN, method="decode_codes")
    return {"images": images, "codes": codes_BxN}


answer = common.answer
