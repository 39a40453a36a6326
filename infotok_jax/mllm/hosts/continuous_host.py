"""Continuous host (Harmon style): continuous tokenizer latents, masked autoregressive generation (MAR).

The tokenizer's quantizer is "gaussian" (VIB head; z is the reparameterized sample in training and the
mean at eval) or "none". An MLP projector (D -> hidden -> E, GELU) plus a learned per-slot embedding maps
z into the LM; gradients of every LM loss flow through it into the tokenizer.

  understanding  [question | BOI | image | EOI | BOS answer...], omni mask, next-token answer CE.
  generation     [caption | BOI | image with masked slots = learned [MASK] embedding | EOI], omni mask
                 (MAR needs every masked slot to see every known one). The LM hidden state at each masked
                 slot conditions the flow-matching head (`flow_head`), trained on that slot's latent:
                 x_t = (1 - t) eps + t z, target velocity z - eps, `flow.samples_per_token` (t, eps) draws
                 per slot. Slots are masked with the cosine ratio of `masked_host.random_token_mask`.
The regression target z is under stop_gradient: the flow loss must not move the latents it fits (it
could shrink them toward a trivially predictable point); the tokenizer learns from reconstruction,
understanding and the known-slot inputs of the generation sequence instead. As in MAR the target is the
latent the LM consumes (the training-time sample for a Gaussian tokenizer).

`generate`: all slots start masked and a random order per sample decides which are revealed; step i of
S reveals slots so that floor(N cos(pi/2 (i + 1) / S)) stay masked (at least one new slot per step, none
left after the last). Each step runs the LM once and samples the newly revealed slots by Euler
integration of the flow ODE from temperature-scaled noise, with classifier-free guidance on the velocity.
The latents are decoded by the tokenizer decoder.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import sampling
from infotok_jax.mllm.hosts import flow_head, sequences
from infotok_jax.mllm.hosts.base import HostBase
from infotok_jax.mllm.hosts.masked_host import random_token_mask
from infotok_jax.tokenizer.layers import dense


def reveal_counts(n: int, num_steps: int) -> Array:
    """Slots known after each step, int32 (S,): n - floor(n cos(pi/2 (i+1)/S)), at least i + 1, last n."""
    if not 1 <= num_steps <= n:
        raise ValueError(f"num_steps must be in [1, N={n}] (one new slot per step at least); got {num_steps}")
    i_S = jnp.arange(num_steps)
    masked_S = jnp.floor(n * jnp.cos(0.5 * math.pi * (i_S + 1) / num_steps)).astype(jnp.int32)
    return jnp.maximum(n - jnp.clip(masked_S, 0, n), i_S + 1).at[-1].set(n)


class ContinuousHost(HostBase):
    """MAR / Harmon style host over continuous token latents; see the module docstring."""

    understanding_mask = "omni"

    def setup(self) -> None:
        super().setup()
        c = self.config
        e = c.lm.embed_dim
        self.proj_in = dense(c.projector_hidden, (None, "mlp"), name="projector_in")
        self.proj_out = dense(e, ("mlp", "embed"), name="projector_out")
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",))
        self.mask_embedding = self.param("mask_embedding", init, (e,))
        self.flow = flow_head.FlowHead(c.tokenizer.token_dim, c.flow.width, c.flow.depth)

    def image_inputs(self, z_BxNxD: Array) -> Array:
        return self.proj_out(nn.gelu(self.proj_in(z_BxNxD.astype(jnp.float32)))) + self.image_pos[None]

    def image_hidden(
        self, caption_BxLc: Array, z_BxNxD: Array, masked_BxN: Array, train: bool = False
    ) -> Array:
        """LM hidden states (B, N, E) at the image slots; masked slots see the [MASK] embedding."""
        lay = sequences.generation_layout(
            caption_BxLc, self.num_image_tokens, self.vocab, self.config.pad_id, with_eoi=True
        )
        mask_1x1xE = self.mask_embedding[None, None]
        x_BxNxE = jnp.where(masked_BxN[..., None], mask_1x1xE, self.image_inputs(z_BxNxD))
        _, hidden = self.run_lm(lay, x_BxNxE, sequences.attention_mask("omni", lay), train=train)
        s = lay["starts"][2]
        return hidden[:, s : s + self.num_image_tokens].astype(jnp.float32)

    def flow_velocity(self, x_BxNxD: Array, t_BxN: Array, cond_BxNxE: Array) -> Array:
        """The flow head's velocity."""
        return self.flow(x_BxNxD, t_BxN, cond_BxNxE)

    def mar_loss(self, caption_BxLc: Array, z_BxNxD: Array, masked_BxN: Array, train: bool = False) -> Array:
        """Flow-matching loss on the masked slots; the LM sees z elsewhere, the target is sg(z)."""
        key_t, key_eps = jax.random.split(self.host_rng())
        cond_BxNxE = self.image_hidden(caption_BxLc, z_BxNxD, masked_BxN, train)
        reps = self.config.flow.samples_per_token
        target = jnp.tile(jax.lax.stop_gradient(z_BxNxD), (reps, 1, 1))
        t = jax.random.uniform(key_t, target.shape[:2])
        eps = jax.random.normal(key_eps, target.shape)
        v = self.flow(flow_head.interpolate(target, eps, t), t, jnp.tile(cond_BxNxE, (reps, 1, 1)))
        return flow_head.flow_matching_loss(v, target, eps, jnp.tile(masked_BxN, (reps, 1)))

    def generation_loss(self, tok_out: dict, batch: dict, train: bool) -> tuple[Array, dict]:
        caption_BxLc = self.training_captions(batch, train)
        masked_BxN = random_token_mask(self.host_rng(), *tok_out["z"].shape[:2])
        loss = self.mar_loss(caption_BxLc, tok_out["z"], masked_BxN, train)
        return loss, {"generation/mask_ratio": jnp.mean(masked_BxN.astype(jnp.float32))}

    @nn.nowrap
    def generate(
        self,
        variables: dict,
        caption_tokens_BxLc: Array,
        key: Array,
        *,
        num_samples: int = 1,
        num_steps: int | None = None,
        flow_steps: int | None = None,
        temperature: float | None = None,
        cfg_scale: float | None = None,
    ) -> dict[str, Array]:
        """MAR decoding of N continuous latents in `num_steps` steps. Deterministic for a fixed key.

        Args: as `ARHost.generate` (None takes `config.sampling`), plus `flow_steps` Euler steps per
          decoding step; `temperature` scales the flow's starting noise.
        Returns: {"images": (B * num_samples, H, W, 3) in [0, 1], "latents": float32 (B * num_samples, N, D)}.
        """
        c, s = self.config, self.config.sampling
        n, d = self.num_image_tokens, c.tokenizer.token_dim
        rows_RxLc, scale = sequences.sampling_rows(c, caption_tokens_BxLc, num_samples, cfg_scale)
        b = rows_RxLc.shape[0] // (1 if scale is None else 2)
        temp = float(s.temperature if temperature is None else temperature)
        known_after_S = reveal_counts(n, int(s.num_steps if num_steps is None else num_steps))
        flow_steps = int(s.flow_steps if flow_steps is None else flow_steps)
        key_order, key_steps = jax.random.split(key)
        rank_BxN = jnp.argsort(jnp.argsort(jax.random.uniform(key_order, (b, n)), axis=-1), axis=-1)

        def dup(x: Array) -> Array:
            return x if scale is None else jnp.concatenate([x, x])

        def step(carry: tuple[Array, Array], inputs: tuple[Array, Array]) -> tuple[tuple[Array, Array], None]:
            z_BxNxD, known_BxN = carry
            i, known_after = inputs
            cond = self.apply(variables, rows_RxLc, dup(z_BxNxD), dup(~known_BxN), method="image_hidden")

            def velocity(x_BxNxD: Array, t_BxN: Array) -> Array:
                v = self.apply(variables, dup(x_BxNxD), dup(t_BxN), cond, method="flow_velocity")
                return v if scale is None else sampling.cfg_combine(v[:b], v[b:], scale)

            noise = temp * jax.random.normal(jax.random.fold_in(key_steps, i), (b, n, d))
            sampled_BxNxD = flow_head.euler_sample(velocity, noise, flow_steps)
            reveal_BxN = (rank_BxN < known_after) & ~known_BxN
            z_BxNxD = jnp.where(reveal_BxN[..., None], sampled_BxNxD, z_BxNxD)
            return (z_BxNxD, known_BxN | reveal_BxN), None

        init = (jnp.zeros((b, n, d), jnp.float32), jnp.zeros((b, n), bool))
        (z_BxNxD, _), _ = jax.lax.scan(step, init, (jnp.arange(known_after_S.shape[0]), known_after_S))
        return {"images": self.apply(variables, z_BxNxD, method="decode_latents"), "latents": z_BxNxD}
