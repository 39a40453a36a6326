"""Image encoders of the shared tokenizer: images (B,H,W,3) in [-1,1] -> token features (B,N,C).

Two variants with the same contract, N = (H // patch_size) * (W // patch_size):
  ConvEncoder  conv-ResNet: a 3x3 stem, then log2(patch_size) stages of (stride-2 conv, ResBlocks), then
               GroupNorm + swish. No residual blocks at full resolution, which keeps it cheap on a CPU.
  ViTEncoder   patch embedding (a patch_size-strided conv) + learned position embeddings + transformer
               blocks + LayerNorm.
The projection from C to the D-wide token latent lives in the tokenizer model, so the Gaussian head can
read the same features.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from infotok_jax.tokenizer import layers


def conv_stage_channels(width: int, patch_size: int, max_mult: int) -> list[int]:
    """Channels per resolution level of the conv encoder/decoder: level i has width * min(2**i, max_mult).

    Level 0 is full resolution; level log2(patch_size) is the token grid.
    """
    num_stages = int(patch_size).bit_length() - 1
    return [width * min(2**i, max_mult) for i in range(num_stages + 1)]


def position_embedding_init() -> nn.initializers.Initializer:
    """Initializer of a learned (N, C) position table, logically ("length", "embed")."""
    return layers.partitioned(nn.initializers.normal(stddev=0.02), ("length", "embed"))


class ConvEncoder(nn.Module):
    """Conv-ResNet encoder; output tokens are the cells of the (H/p, W/p) grid in row-major order."""

    width: int
    patch_size: int
    num_blocks: int
    max_mult: int
    num_groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images_BxHxWx3: jax.Array) -> jax.Array:
        channels = conv_stage_channels(self.width, self.patch_size, self.max_mult)
        h = layers.conv(
            channels[0], 3, dtype=self.dtype, names=("height", "width", None, "conv_out"), name="stem"
        )(images_BxHxWx3.astype(self.dtype))
        for level, ch in enumerate(channels[1:], start=1):
            h = layers.Downsample(ch, dtype=self.dtype, name=f"down_{level}")(h)
            for j in range(self.num_blocks):
                h = layers.ResBlock(ch, self.num_groups, dtype=self.dtype, name=f"res_{level}_{j}")(h)
        if len(channels) == 1:
            for j in range(self.num_blocks):
                h = layers.ResBlock(channels[0], self.num_groups, dtype=self.dtype, name=f"res_0_{j}")(h)
        h = nn.swish(layers.group_norm(self.num_groups, dtype=self.dtype, name="norm_out")(h))
        b, gh, gw, c = h.shape
        return nn.with_logical_constraint(h.reshape(b, gh * gw, c), ("batch", "length", "conv_out"))


class ViTEncoder(nn.Module):
    """Patch transformer encoder; one token per non-overlapping patch, row-major."""

    width: int
    patch_size: int
    num_blocks: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images_BxHxWx3: jax.Array) -> jax.Array:
        p = self.patch_size
        patch_embed = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=layers.partitioned(
                nn.initializers.lecun_normal(), ("height", "width", None, "embed")
            ),
            bias_init=layers.partitioned(nn.initializers.zeros_init(), ("embed",)),
            name="patch_embed",
        )
        h = patch_embed(images_BxHxWx3.astype(self.dtype))
        b, gh, gw, c = h.shape
        h_BxNxC = h.reshape(b, gh * gw, c)
        pos_NxC = self.param("pos_embedding", position_embedding_init(), (gh * gw, c), jnp.float32)
        h_BxNxC = h_BxNxC + pos_NxC[None].astype(self.dtype)
        h_BxNxC = nn.with_logical_constraint(h_BxNxC, ("batch", "length", "embed"))
        for j in range(self.num_blocks):
            h_BxNxC = layers.TransformerBlock(
                self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block_{j}"
            )(h_BxNxC)
        return layers.layer_norm(dtype=self.dtype, name="norm_out")(h_BxNxC)
