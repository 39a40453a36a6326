"""Masked host (Show-o style): one LM, causal over text and bidirectional over image tokens ("omni" mask).

  understanding  [question | BOI | image | EOI | BOS answer...] -> next-token answer CE (text is causal, so
                 `answer` decodes with an exact KV cache after an omni-masked prefill; see `HostBase.answer`)
  generation     [caption | BOI | image with some slots = [MASK] | EOI] -> at every masked slot the code of
                 that slot (not the next one), cross-entropy on masked slots only, over the code slice.

Masking: per row a ratio r = cos(pi/2 * u), u ~ U(0, 1) (the MaskGIT / Show-o cosine schedule), and the
ceil(r N) slots (at least one) with the lowest uniform scores are masked (`random_token_mask`). [MASK] is
a learned embedding (not a vocabulary id). Image inputs are a linear map of the straight-through quantized
latent z plus a learned per-slot embedding, as in the AR host; LM gradients reach the tokenizer.

`generate` runs MaskGIT parallel decoding (`sampling.maskgit_decode`, cosine schedule) over the code
logits, with classifier-free guidance on the logits; each step recomputes the whole sequence (the image
span is bidirectional, so there is nothing exact to cache beyond the caption prefix).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import sampling
from infotok_jax.mllm.hosts import sequences
from infotok_jax.mllm.hosts.base import HostBase
from infotok_jax.mllm.hosts.losses import masked_cross_entropy
from infotok_jax.tokenizer.layers import dense


def random_token_mask(key: Array, batch: int, n: int) -> Array:
    """bool (batch, n): per row, ceil(cos(pi/2 * u) * n) random slots (clipped to [1, n]), u ~ U(0, 1)."""
    key_ratio, key_order = jax.random.split(key)
    ratio_B = jnp.cos(0.5 * math.pi * jax.random.uniform(key_ratio, (batch,)))
    count_B = jnp.clip(jnp.ceil(ratio_B * n), 1, n).astype(jnp.int32)
    rank_BxN = jnp.argsort(jnp.argsort(jax.random.uniform(key_order, (batch, n)), axis=-1), axis=-1)
    return rank_BxN < count_B[:, None]


class MaskedHost(HostBase):
    """Show-o style masked-token host; see the module docstring."""

    understanding_mask = "omni"

    def setup(self) -> None:
        super().setup()
        e = self.config.lm.embed_dim
        self.image_proj = dense(e, (None, "embed"), name="image_proj")
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",))
        self.mask_embedding = self.param("mask_embedding", init, (e,))

    def image_inputs(self, z_BxNxD: Array) -> Array:
        return self.image_proj(z_BxNxD.astype(jnp.float32)) + self.image_pos[None]

    def masked_code_logits(
        self, caption_BxLc: Array, z_BxNxD: Array, masked_BxN: Array, train: bool = False
    ) -> tuple[Array, Array]:
        """(code logits (B, N, K) at the image slots, full logits (B, T, V)); masked slots see [MASK]."""
        lay = sequences.generation_layout(
            caption_BxLc, self.num_image_tokens, self.vocab, self.config.pad_id, with_eoi=True
        )
        mask_1x1xE = self.mask_embedding[None, None]
        x_BxNxE = jnp.where(masked_BxN[..., None], mask_1x1xE, self.image_inputs(z_BxNxD))
        logits, _ = self.run_lm(lay, x_BxNxE, sequences.attention_mask("omni", lay), train=train)
        s, v = lay["starts"][2], self.vocab
        return logits[:, s : s + self.num_image_tokens, v.code_offset : v.code_offset + v.codes], logits

    def code_logits(self, caption_BxLc: Array, tokens_BxN: Array) -> Array:
        """Code logits (B, N, K) for code indices where `tokens_BxN` == K ([MASK]) marks unknown slots."""
        k = self.vocab.codes
        z_BxNxD = jnp.take(self.tokenizer.codebook(), jnp.clip(tokens_BxN, 0, k - 1), axis=0)
        return self.masked_code_logits(caption_BxLc, z_BxNxD, tokens_BxN == k)[0]

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        caption_BxLc = self.training_captions(batch, train)
        indices_BxN = tok_out["indices"]
        masked_BxN = random_token_mask(self.host_rng(), *indices_BxN.shape)
        logits_BxNxK, _ = self.masked_code_logits(caption_BxLc, tok_out["z"], masked_BxN, train)
        loss, acc = masked_cross_entropy(logits_BxNxK, indices_BxN, masked_BxN)
        return loss, {
            "generation/masked_code_accuracy": acc,
            "generation/mask_ratio": jnp.mean(masked_BxN.astype(jnp.float32)),
        }

    @nn.nowrap
    def generate(
        self,
        variables: dict,
        caption_tokens_BxLc: Array,
        key: Array,
        *,
        num_samples: int = 1,
        num_steps: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        cfg_scale: float | None = None,
        choice_temperature: float | None = None,
    ) -> dict[str, Array]:
        """MaskGIT decoding of all N codes in `num_steps` steps. Deterministic for a fixed key.

        Arguments as `ARHost.generate` (None takes `config.sampling`), plus `num_steps` and the re-masking
        noise scale `choice_temperature`. Returns {"images": (B * num_samples, H, W, 3), "codes": (B', N)}.
        """
        c, s = self.config, self.config.sampling
        k, n = self.vocab.codes, self.num_image_tokens
        rows_RxLc, scale = sequences.sampling_rows(c, caption_tokens_BxLc, num_samples, cfg_scale)
        b = rows_RxLc.shape[0] // (1 if scale is None else 2)

        def logits_fn(tokens_BxN: Array) -> Array:
            tokens = tokens_BxN if scale is None else jnp.concatenate([tokens_BxN, tokens_BxN])
            logits = self.apply(variables, rows_RxLc, tokens, method="code_logits")
            return logits if scale is None else sampling.cfg_combine(logits[:b], logits[b:], scale)

        codes_BxN = sampling.maskgit_decode(
            logits_fn,
            jnp.full((b, n), k, jnp.int32),
            key,
            mask_id=k,
            num_steps=int(s.num_steps if num_steps is None else num_steps),
            temperature=float(s.temperature if temperature is None else temperature),
            top_k=int(s.top_k if top_k is None else top_k),
            choice_temperature=float(
                s.choice_temperature if choice_temperature is None else choice_temperature
            ),
        )
        return {"images": self.apply(variables, codes_BxN, method="decode_codes"), "codes": codes_BxN}
