"""Image decoders of the shared tokenizer: token latents (B,N,D) -> images (B,H,W,3) in [-1,1] scale.

They mirror the encoders in `encoders.py`:
  ConvDecoder  3x3 conv from D to the coarsest width, then per level (ResBlocks, pixel-shuffle upsample),
               then GroupNorm + swish + 3x3 conv to RGB. No residual blocks at full resolution.
  ViTDecoder   linear map D -> width, position embeddings, transformer blocks, LayerNorm, a linear map to
               patch_size**2 * 3 pixels per token, then un-patchify.
Outputs are unclamped; the model maps them back to the [0, 1] image scale.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from infotok_jax.tokenizer import layers
from infotok_jax.tokenizer.encoders import conv_stage_channels, position_embedding_init


def tokens_to_grid(z_BxNxD: jax.Array, grid: int) -> jax.Array:
    """(B, N, D) row-major tokens -> (B, grid, grid, D); raises if N != grid**2."""
    b, n, d = z_BxNxD.shape
    if n != grid * grid:
        raise ValueError(
            f"decoder got {n} tokens but the config implies a {grid}x{grid} grid; "
            "check image_size and patch_size"
        )
    return z_BxNxD.reshape(b, grid, grid, d)


class ConvDecoder(nn.Module):
    """Conv-ResNet decoder, the mirror of ConvEncoder."""

    width: int
    patch_size: int
    image_size: int
    num_blocks: int
    max_mult: int
    num_groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z_BxNxD: jax.Array) -> jax.Array:
        channels = conv_stage_channels(self.width, self.patch_size, self.max_mult)
        grid = self.image_size // self.patch_size
        h = tokens_to_grid(z_BxNxD.astype(self.dtype), grid)
        h = layers.conv(
            channels[-1], 3, dtype=self.dtype, names=("height", "width", None, "conv_out"), name="stem"
        )(h)
        for level in range(len(channels) - 1, 0, -1):
            for j in range(self.num_blocks):
                h = layers.ResBlock(
                    channels[level], self.num_groups, dtype=self.dtype, name=f"res_{level}_{j}"
                )(h)
            h = layers.Upsample(channels[level - 1], dtype=self.dtype, name=f"up_{level}")(h)
        if len(channels) == 1:
            for j in range(self.num_blocks):
                h = layers.ResBlock(channels[0], self.num_groups, dtype=self.dtype, name=f"res_0_{j}")(h)
        h = nn.swish(layers.group_norm(self.num_groups, dtype=self.dtype, name="norm_out")(h))
        h = layers.conv(3, 3, dtype=self.dtype, names=("height", "width", "conv_in", None), name="to_rgb")(h)
        return nn.with_logical_constraint(h, ("batch", None, None, None))


class ViTDecoder(nn.Module):
    """Patch transformer decoder, the mirror of ViTEncoder."""

    width: int
    patch_size: int
    image_size: int
    num_blocks: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z_BxNxD: jax.Array) -> jax.Array:
        p = self.patch_size
        grid = self.image_size // p
        b, n, _ = z_BxNxD.shape
        tokens_to_grid(z_BxNxD, grid)
        h_BxNxC = layers.dense(self.width, (None, "embed"), dtype=self.dtype, name="embed")(
            z_BxNxD.astype(self.dtype)
        )
        pos_NxC = self.param("pos_embedding", position_embedding_init(), (n, self.width), jnp.float32)
        h_BxNxC = h_BxNxC + pos_NxC[None].astype(self.dtype)
        h_BxNxC = nn.with_logical_constraint(h_BxNxC, ("batch", "length", "embed"))
        for j in range(self.num_blocks):
            h_BxNxC = layers.TransformerBlock(
                self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block_{j}"
            )(h_BxNxC)
        h_BxNxC = layers.layer_norm(dtype=self.dtype, name="norm_out")(h_BxNxC)
        pix_BxNxP = layers.dense(p * p * 3, ("embed", None), dtype=self.dtype, name="to_pixels")(h_BxNxC)
        img = pix_BxNxP.reshape(b, grid, grid, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
        return nn.with_logical_constraint(img.reshape(b, grid * p, grid * p, 3), ("batch", None, None, None))
