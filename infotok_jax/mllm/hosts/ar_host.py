"""AR host (Chameleon / Liquid / UniTok style): image codes are extra vocabulary of a causal LM.

Both directions are next-token prediction under a causal mask:
  understanding  [question | BOI | image | EOI | BOS answer...]  -> answer words and EOS
  generation     [caption | BOI | image]                         -> code i predicted at image slot i - 1
The LM's output vocabulary holds the K codes (`sequences.Vocab`); the code cross-entropy and the sampler both
use only the code slice of the logits at image slots, so training and sampling agree.

Input side: an image position is not embedded by a lookup of its code id but by a learned linear map of
the tokenizer's straight-through quantized latent z (plus a learned per-slot embedding). Its forward value
is the code vector, so it is a function of the code like a lookup, and it can pass the LM losses'
gradient to the tokenizer encoder. The AR default turns that gradient off (`lm_grad_to_tokenizer = 0`,
see `config.default_host_config`): measured on scenes, the next-code loss otherwise keeps the VQ codebook
collapsed and the host generates at chance. At sampling time a drawn code is embedded the same way,
through `tokenizer.codebook()`.

`generate` samples the N codes with the KV-cached decoder shared with `answer` (`decoding.cached_decode`:
temperature, top-k, classifier-free guidance) and decodes them with the tokenizer decoder.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import decoding, sampling
from infotok_jax.mllm.hosts import sequences
from infotok_jax.mllm.hosts.base import HostBase
from infotok_jax.mllm.hosts.losses import masked_cross_entropy
from infotok_jax.tokenizer.layers import dense


class ARHost(HostBase):
    """Autoregressive host over discrete codes; see the module docstring."""

    understanding_mask = "causal"

    def setup(self) -> None:
        super().setup()
        self.image_proj = dense(self.config.lm.embed_dim, (None, "embed"), name="image_proj")

    def image_inputs(self, z_BxNxD: Array) -> Array:
        return self.image_proj(z_BxNxD.astype(jnp.float32)) + self.image_pos[None]

    def _code_slice(self, logits_BxTxV: Array, lay: dict) -> Array:
        s, v, n = lay["starts"][2], self.vocab, self.num_image_tokens
        return logits_BxTxV[:, s - 1 : s - 1 + n, v.code_offset : v.code_offset + v.codes]

    def generation_logits(self, caption_BxLc: Array, z_BxNxD: Array, train: bool = False) -> Array:
        """Teacher-forced code logits (B, N, K): row i predicts code i from the caption and z[:i]."""
        lay = sequences.generation_layout(
            caption_BxLc, self.num_image_tokens, self.vocab, self.config.pad_id, with_eoi=False
        )
        logits, _ = self.run_lm(
            lay, self.image_inputs(z_BxNxD), sequences.attention_mask("causal", lay), train=train
        )
        return self._code_slice(logits, lay)

    def code_generation_logits(self, caption_BxLc: Array, codes_BxN: Array) -> Array:
        """`generation_logits` with the image given as code indices (B, N) in [0, K)."""
        return self.generation_logits(caption_BxLc, jnp.take(self.tokenizer.codebook(), codes_BxN, axis=0))

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        caption_BxLc = self.training_captions(batch, train)
        logits_BxNxK = self.generation_logits(caption_BxLc, tok_out["z"], train)
        indices_BxN = tok_out["indices"]
        loss, acc = masked_cross_entropy(logits_BxNxK, indices_BxN, jnp.ones(indices_BxN.shape, bool))
        return loss, {"generation/code_accuracy": acc}

    def prefill_caption(self, caption_BxLc: Array) -> tuple[Array, Array, Array]:
        """Writes [caption | BOI] to the KV cache: (next logits, last position, valid)."""
        lay = sequences.pack(
            [("text", caption_BxLc), ("id", self.vocab.boi)], caption_BxLc.shape[0], self.config.pad_id
        )
        logits, _ = self.run_lm(lay, None, self.prefill_mask("causal", lay), decode=True)
        return logits[:, -1], lay["positions"][:, -1], lay["valid"]

    def decode_code(self, tokens_Bx1: Array, slot: Array, positions_Bx1: Array, mask_Bx1xS: Array) -> Array:
        """Feeds sampled code tokens (LM ids) for image slot `slot` through the cached LM: logits (B, V)."""
        v = self.vocab
        codes_Bx1 = jnp.clip(tokens_Bx1 - v.code_offset, 0, v.codes - 1)
        z_Bx1xD = jnp.take(self.tokenizer.codebook(), codes_Bx1, axis=0)
        pos_1xE = jax.lax.dynamic_slice_in_dim(self.image_pos, slot, 1, axis=0)
        x_Bx1xE = self.image_proj(z_Bx1xD) + pos_1xE[None]
        logits = self.lm(
            embeddings_BxTxD=x_Bx1xE, positions_BxT=positions_Bx1, mask_BxTxT=mask_Bx1xS, decode=True
        )
        return logits[:, 0]

    @nn.nowrap
    def generate(
        self,
        variables: dict,
        caption_tokens_BxLc: Array,
        key: Array,
        *,
        num_samples: int = 1,
        temperature: float | None = None,
        top_k: int | None = None,
        cfg_scale: float | None = None,
    ) -> dict[str, Array]:
        """Samples images for captions with a KV cache. Deterministic for a fixed key.

        Args:
          variables: the host's {"params", "state"} variables.
          caption_tokens_BxLc: int captions (data format). key: PRNG key (code i uses fold_in(key, i)).
          num_samples: images per caption (rows are caption-major).
          temperature / top_k / cfg_scale: None takes `config.sampling`; temperature 0 is greedy; a guidance
            scale of 1 disables guidance.

        Returns:
          {"images": (B * num_samples, H, W, 3) in [0, 1], "codes": int32 (B * num_samples, N) in [0, K)}.
        """
        c, v, n = self.config, self.vocab, self.num_image_tokens
        s = c.sampling
        rows_RxLc, scale = sequences.sampling_rows(c, caption_tokens_BxLc, num_samples, cfg_scale)
        sampler = sampling.SamplerConfig(
            temperature=float(s.temperature if temperature is None else temperature),
            top_k=int(s.top_k if top_k is None else top_k),
            cfg_scale=scale,
        )
        cache_len = c.max_caption_len + 1 + n - 1  # [caption | BOI], then every code but the last
        ids_V = jnp.arange(v.size)
        allowed_V = (ids_V >= v.code_offset) & (ids_V < v.code_offset + v.codes)
        tokens_BxN = decoding.cached_decode(
            self.clone(cache_len=cache_len),
            variables,
            prefill="prefill_caption",
            prefill_args=(rows_RxLc,),
            step="decode_code",
            num_steps=n,
            cache_len=cache_len,
            key=key,
            sampler=sampler,
            allowed_V=allowed_V,
        )
        codes_BxN = tokens_BxN - v.code_offset
        params = {k: val for k, val in variables.items() if k != "cache"}
        return {"images": self.apply(params, codes_BxN, method="decode_codes"), "codes": codes_BxN}
