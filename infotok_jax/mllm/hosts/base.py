"""HostBase: what every host is made of (shared tokenizer + backbone LM) and what they all do the same way.

Shared behaviour: the joint objective (`losses`: understanding CE + the host's generation loss + tokenizer
reconstruction and its own losses), the understanding path (next-token CE on the answer words and EOS over
the text slice of the logits, under the host's "causal" or "omni" mask) and greedy KV-cached `answer`.
Subclasses add `image_inputs` (latents -> LM inputs), `generation_loss` and `generate`.

`answer` and `generate` are plain Python methods of the unbound module (`nn.nowrap`): they take the
variables and run `apply` on the per-step methods (`prefill_understanding`, `decode_text`, ...), so they
jit like functions with the module static. Randomness: the "sample" rng stream, or a fixed key without it
(eval). Guidance training swaps a caption for the empty text with probability `cfg_dropout`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import Array

from infotok_jax import tokenizer as tok
from infotok_jax.mllm import decoding, sampling
from infotok_jax.mllm.backbone import Transformer
from infotok_jax.mllm.hosts import sequences
from infotok_jax.mllm.hosts.config import lm_config
from infotok_jax.mllm.hosts.losses import masked_cross_entropy


class HostBase(nn.Module):
    """Tokenizer + backbone + understanding path; see the module docstring."""

    config: ml_collections.ConfigDict
    cache_len: int | None = None  # KV-cache length for decoding (inference clones the host with it)
    understanding_mask: ClassVar[str] = "causal"

    @property
    def vocab(self) -> sequences.Vocab:
        return sequences.vocab_for(self.config)

    @property
    def num_image_tokens(self) -> int:
        return tok.num_tokens(self.config.tokenizer)

    def setup(self) -> None:  # the config was validated once, by `hosts.build_host`
        c = self.config
        train_len = c.max_caption_len + c.max_question_len + c.max_answer_len + self.num_image_tokens + 2
        self.tokenizer = tok.SharedTokenizer(c.tokenizer)
        self.lm = Transformer(lm_config(c, self.cache_len or train_len))
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
        self.image_pos = self.param("image_pos", init, (self.num_image_tokens, c.lm.embed_dim))

    # --- what each host defines ---------------------------------------------------------------------

    def image_inputs(self, z_BxNxD: Array) -> Array:
        """Tokenizer latents -> LM input embeddings of the image positions (BxNxE)."""
        raise NotImplementedError

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        """The host's generation objective and its metrics."""
        raise NotImplementedError

    @nn.nowrap
    def generate(self, variables: dict, caption_tokens_BxLc: Array, key: Array, **options: Any) -> dict:
        """Images for captions: {"images": (B * num_samples, H, W, 3) in [0, 1], "codes" | "latents"}."""
        raise NotImplementedError

    # --- training --------------------------------------------------------------------------------------

    def host_rng(self) -> Array:
        """A key from the "sample" stream, or a fixed key when it is absent (deterministic eval)."""
        return self.make_rng("sample") if self.has_rng("sample") else jax.random.PRNGKey(0)

    def training_captions(self, batch: dict, train: bool) -> Array:
        """Captions with each row replaced by the empty caption with prob. cfg_dropout (train only)."""
        c = self.config
        caption_BxLc = batch["caption_tokens"]
        sequences.check_tokens("batch['caption_tokens']", caption_BxLc, c.max_caption_len)
        if not train or c.cfg_dropout == 0:
            return caption_BxLc
        drop_B = jax.random.bernoulli(self.host_rng(), c.cfg_dropout, (caption_BxLc.shape[0],))
        empty_BxLc = sequences.empty_captions(c, caption_BxLc.shape[0])
        return jnp.where(drop_B[:, None], empty_BxLc, caption_BxLc)

    def run_lm(
        self, lay: dict, image_BxNxE: Array | None, mask: Array, *, decode: bool = False, train: bool = False
    ) -> tuple[Array, Array]:
        """Embeds `lay["tokens"]`, writes `image_BxNxE` into the image span, runs the LM: (logits, hidden)."""
        x_BxTxE = self.lm.embed(lay["tokens"])
        if image_BxNxE is not None:
            s = lay["starts"][2]
            x_BxTxE = x_BxTxE.at[:, s : s + image_BxNxE.shape[1]].set(image_BxNxE.astype(x_BxTxE.dtype))
        return self.lm(
            embeddings_BxTxD=x_BxTxE,
            positions_BxT=lay["positions"],
            mask_BxTxT=mask,
            decode=decode,
            deterministic=not train,
            return_hidden=True,
        )

    def _understanding(self, z_BxNxD: Array, question: Array, answer: Array, train: bool) -> tuple:
        c = self.config
        sequences.check_tokens("question_tokens", question, c.max_question_len)
        sequences.check_tokens("answer_tokens", answer, c.max_answer_len)
        lay = sequences.understanding_layout(question, answer, self.num_image_tokens, self.vocab, c.pad_id)
        mask = sequences.attention_mask(self.understanding_mask, lay)
        return self.run_lm(lay, self.image_inputs(z_BxNxD), mask, train=train)[0], lay

    def understanding_logits(self, images: Array, question_BxLq: Array, answer_BxLa: Array) -> Array:
        """Teacher-forced logits (B, T, V) of the understanding sequence (eval tokenizer)."""
        z = self.tokenizer.encode(images, train=False)["z"]
        return self._understanding(z, question_BxLq, answer_BxLa, False)[0]

    def understanding_loss(self, z_BxNxD: Array, batch: dict, train: bool) -> tuple[Array, dict]:
        """Answer cross-entropy over the text slice, and the token accuracy."""
        logits, lay = self._understanding(z_BxNxD, batch["question_tokens"], batch["answer_tokens"], train)
        text_logits = logits[..., : self.config.text_vocab_size]
        loss, acc = masked_cross_entropy(text_logits, lay["targets"], lay["loss_mask"])
        return loss, {"understanding/token_accuracy": acc}

    def losses(self, batch: dict, *, train: bool) -> tuple[Array, dict, dict]:
        """(the host's loss, metrics, tokenizer output dict). Apply with mutable=["state"] when training VQ.

        The host's loss (metric `loss/host`) has no InfoTok term: the task adds the regularizer, and the
        sum is what the trainer logs as `loss`."""
        c, images = self.config, batch["image"]
        tok_out = self.tokenizer(images, train=train)
        s = c.lm_grad_to_tokenizer  # forward value unchanged; the LM losses' gradient into z scaled by s
        z_lm = tok_out["z"] if s == 1 else s * tok_out["z"] + (1 - s) * jax.lax.stop_gradient(tok_out["z"])
        und, und_metrics = self.understanding_loss(z_lm, batch, train)
        gen, gen_metrics = self.generation_loss({**tok_out, "z": z_lm}, batch, train)
        recon = jnp.mean(jnp.square(tok_out["recon"] - images.astype(jnp.float32)))
        tok_losses = {f"loss/tokenizer_{k}": v for k, v in tok_out["losses"].items()}
        total = (
            c.understanding_weight * und
            + c.generation_weight * gen
            + c.reconstruction_weight * recon
            + sum(tok_losses.values(), jnp.zeros((), jnp.float32))
        )
        metrics = {
            "loss/host": total,  # without InfoTok: the trainer's `loss` is this plus the regularizer
            "loss/understanding": und,
            "loss/generation": gen,
            "loss/reconstruction": recon,
            **tok_losses,
            **und_metrics,
            **gen_metrics,
            **{f"tokenizer/{k}": v for k, v in tok_out["metrics"].items()},
        }
        return total, metrics, tok_out

    def __call__(self, batch: dict, *, train: bool = False) -> tuple[Array, dict, dict]:
        return self.losses(batch, train=train)

    # --- decoding: per-step methods (used through `apply`) and `answer` --------------------------------

    def prefill_mask(self, kind: str, lay: dict) -> Array:
        """`attention_mask` of a prompt (P slots) widened with False columns to the cache length S."""
        mask_BxPxP = sequences.attention_mask(kind, lay)
        return jnp.pad(mask_BxPxP, ((0, 0), (0, 0), (0, self.lm.config.max_len - mask_BxPxP.shape[-1])))

    def prefill_understanding(self, images: Array, question_BxLq: Array) -> tuple[Array, Array, Array]:
        """Writes [question | BOI | image | EOI | BOS] to the KV cache: (last logits, position, valid)."""
        c, v = self.config, self.vocab
        sequences.check_tokens("question_tokens", question_BxLq, c.max_question_len)
        z = self.tokenizer.encode(images, train=False)["z"]
        segments = [("text", question_BxLq), ("id", v.boi), ("image", self.num_image_tokens), ("id", v.eoi)]
        lay = sequences.pack(segments + [("id", c.bos_id)], question_BxLq.shape[0], c.pad_id)
        mask = self.prefill_mask(self.understanding_mask, lay)
        logits, _ = self.run_lm(lay, self.image_inputs(z), mask, decode=True)
        return logits[:, -1], lay["positions"][:, -1], lay["valid"]

    def decode_text(self, tokens_Bx1: Array, step: Array, positions_Bx1: Array, mask_Bx1xS: Array) -> Array:
        """One cached decoding step on text/special token ids (`step` is unused): logits (B, V)."""
        del step
        logits = self.lm(tokens_Bx1, positions_BxT=positions_Bx1, mask_BxTxT=mask_Bx1xS, decode=True)
        return logits[:, 0]

    def decode_codes(self, codes_BxN: Array) -> Array:
        """Code indices (B, N) -> images clipped to [0, 1] (discrete tokenizers)."""
        return jnp.clip(self.tokenizer.decode_from_indices(codes_BxN), 0.0, 1.0)

    def decode_latents(self, z_BxNxD: Array) -> Array:
        """Tokenizer decoder, clipped to [0, 1]."""
        return jnp.clip(self.tokenizer.decode(z_BxNxD), 0.0, 1.0)

    @nn.nowrap
    def answer(
        self, variables: dict, images: Array, question_tokens_BxLq: Array, max_answer_len: int
    ) -> Array:
        """Greedy KV-cached answers, int32 (B, max_answer_len): BOS, words, EOS, then pad (data format).

        The prompt [question | BOI | image | EOI | BOS] is prefilled with the host's understanding mask
        (omni hosts: image tokens see each other); answer tokens are causal text, so cached decoding is
        exact. Only text ids other than pad and BOS can be produced; everything after the first EOS is pad.
        """
        if max_answer_len < 2:
            raise ValueError(f"max_answer_len must be >= 2 (BOS and EOS); got {max_answer_len}")
        c, b, steps = self.config, question_tokens_BxLq.shape[0], max_answer_len - 1
        prompt_len = c.max_question_len + self.num_image_tokens + 3
        cache_len = prompt_len + steps  # one slot spare (the last token is not fed back); kept: same bits
        ids_V = jnp.arange(self.vocab.size)
        allowed_V = (ids_V < c.text_vocab_size) & (ids_V != c.pad_id) & (ids_V != c.bos_id)
        out_BxS = decoding.cached_decode(
            self.clone(cache_len=cache_len),
            variables,
            prefill="prefill_understanding",
            prefill_args=(images, question_tokens_BxLq),
            step="decode_text",
            num_steps=steps,
            cache_len=cache_len,
            key=jax.random.PRNGKey(0),
            sampler=sampling.SamplerConfig(temperature=0.0),
            allowed_V=allowed_V,
        )
        is_eos = out_BxS == c.eos_id
        after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
        out_BxS = jnp.where(after_eos, c.pad_id, out_BxS)
        return jnp.concatenate([jnp.full((b, 1), c.bos_id, jnp.int32), out_BxS], axis=1)
