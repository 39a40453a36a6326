"""Flow-matching head for continuous image tokens (MAR / Harmon style) and its Euler ODE sampler.

The head models p(z | c) for one token latent z (width D) given the LM hidden state c at that token's
position. Training uses the linear (rectified-flow) path
    x_t = (1 - t) * eps + t * z,   eps ~ N(0, I),  t ~ U(0, 1),
whose velocity is dx_t/dt = z - eps; the head regresses v(x_t, t, c) onto it with a squared error, so its
optimum is the marginal velocity E[z - eps | x_t, c]. Sampling integrates dx/dt = v(x, t, c) from noise
at t = 0 to t = 1 with `euler_sample` (a temperature scales the starting noise).

Flow matching rather than MAR's DDPM head: the same small MLP, no noise schedule to tune, and a
deterministic ODE sampler with few steps. The network is MAR's SimpleMLPAdaLN reduced to `depth` residual
blocks: the condition plus a sinusoidal time embedding modulates every LayerNorm (shift, scale, gate;
zero-initialized, so every block starts as the identity) and the output layer starts at zero (v = 0).
Kernels carry logical axis names: the head's width is "mlp", the LM condition enters on "embed".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.tokenizer.layers import dense


def timestep_embedding(t_BxN: Array, dim: int, max_period: float = 10000.0) -> Array:
    """Sinusoidal embedding of times in [0, 1] (scaled by 1000, as diffusion models do): (B, N, dim)."""
    if dim % 2:
        raise ValueError(f"timestep_embedding: dim must be even; got {dim}")
    half = dim // 2
    freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args_BxNxF = 1000.0 * t_BxN.astype(jnp.float32)[..., None] * freqs_F[None, None, :]
    return jnp.concatenate([jnp.cos(args_BxNxF), jnp.sin(args_BxNxF)], axis=-1)


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
    normed = nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6)(x)
    return normed * (1.0 + scale) + shift


class FlowHead(nn.Module):
    """v(x_t, t, c): velocity of token latents (B, N, D) given times (B, N) and conditions (B, N, E)."""

    token_dim: int
    width: int = 128
    depth: int = 3

    @nn.compact
    def __call__(self, x_BxNxD: Array, t_BxN: Array, cond_BxNxE: Array) -> Array:
        if x_BxNxD.shape[-1] != self.token_dim or t_BxN.shape != x_BxNxD.shape[:2]:
            raise ValueError(
                f"FlowHead: x must be (B, N, {self.token_dim}) and t (B, N); "
                f"got {x_BxNxD.shape}, {t_BxN.shape}"
            )
        w = self.width
        h = dense(w, (None, "mlp"), name="in_proj")(x_BxNxD.astype(jnp.float32))
        temb = dense(w, (None, "mlp"), name="time_0")(timestep_embedding(t_BxN, w))
        temb = dense(w, (None, "mlp"), name="time_1")(nn.silu(temb))
        c = nn.silu(dense(w, ("embed", "mlp"), name="cond_proj")(cond_BxNxE.astype(jnp.float32)) + temb)
        for i in range(self.depth):
            ada = dense(3 * w, ("mlp", None), zero_init=True, name=f"ada_{i}")
            shift, scale, gate = jnp.split(ada(c), 3, -1)
            y = _modulate(h, shift, scale)
            y = dense(w, (None, "mlp"), name=f"mlp_{i}_0")(y)
            y = dense(w, (None, "mlp"), name=f"mlp_{i}_1")(nn.silu(y))
            h = h + gate * y
        shift, scale = jnp.split(dense(2 * w, ("mlp", None), zero_init=True, name="ada_out")(c), 2, -1)
        out = dense(self.token_dim, ("mlp", None), zero_init=True, name="out_proj")
        return out(_modulate(h, shift, scale))


def interpolate(z_BxNxD: Array, eps_BxNxD: Array, t_BxN: Array) -> Array:
    """x_t = (1 - t) eps + t z."""
    t = t_BxN[..., None]
    return (1.0 - t) * eps_BxNxD + t * z_BxNxD


def flow_matching_loss(v_BxNxD: Array, z_BxNxD: Array, eps_BxNxD: Array, weight_BxN: Array) -> Array:
    """Weighted mean over tokens of the per-token mean squared error to the velocity z - eps."""
    err_BxN = jnp.mean(jnp.square(v_BxNxD.astype(jnp.float32) - (z_BxNxD - eps_BxNxD)), axis=-1)
    w_BxN = weight_BxN.astype(jnp.float32)
    return jnp.sum(err_BxN * w_BxN) / jnp.maximum(jnp.sum(w_BxN), 1.0)


def euler_sample(velocity_fn: Callable[[Array, Array], Array], noise_BxNxD: Array, num_steps: int) -> Array:
    """Integrates dx/dt = velocity_fn(x, t_BxN) from x(0) = noise to t = 1 with `num_steps` Euler steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    dt = 1.0 / num_steps

    def body(x_BxNxD: Array, i: Array) -> tuple[Array, None]:
        t_BxN = jnp.full(x_BxNxD.shape[:2], i * dt, jnp.float32)
        return x_BxNxD + dt * velocity_fn(x_BxNxD, t_BxN).astype(x_BxNxD.dtype), None

    x_BxNxD, _ = jax.lax.scan(body, noise_BxNxD.astype(jnp.float32), jnp.arange(num_steps, dtype=jnp.float32))
    return x_BxNxD
