"""The shared visual tokenizer: config defaults, validation and the SharedTokenizer linen module.

SharedTokenizer = encoder (conv-ResNet | ViT) -> linear map to the D-wide token latent z_pre ->
bottleneck (vq | fsq | gaussian | none) -> decoder (conv | ViT). Images enter as float32 (B, H, W, 3) in
[0, 1] and are mapped to [-1, 1] inside; reconstructions come back in the [0, 1] scale, unclamped.

Variable collections and rng streams:
  "params"   trainable weights, each with logical axis names (infotok_jax.sharding.LOGICAL_AXIS_RULES).
  "state"    VQ codebook and EMA statistics; updated only by `__call__`/`encode` with train=True *and*
             mutable=["state"] (with an immutable "state" the call is a pure forward pass).
  rngs: "params" (init; also draws the initial VQ codebook), "sample" (Gaussian reparameterization,
        needed when quantizer="gaussian" and train=True), "revive" (VQ dead-code revival; optional:
        without it the key is derived from the state's step counter, so runs stay deterministic).
Init with `train=False` (see `init_variables`).

Loss terms in out["losses"] are already weighted (commitment = vq_commitment * ||z_pre - sg(q)||^2):
the objective adds their sum to its own terms. The reconstruction loss is the objective's.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from infotok_jax.tokenizer import layers
from infotok_jax.tokenizer.decoders import ConvDecoder, ViTDecoder
from infotok_jax.tokenizer.encoders import ConvEncoder, ViTEncoder
from infotok_jax.tokenizer.gaussian_head import GaussianHead
from infotok_jax.tokenizer.quantizers import FiniteScalarQuantizer, VectorQuantizer

ENCODERS = ("conv", "vit")
QUANTIZERS = ("vq", "fsq", "gaussian", "none")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def default_config() -> ml_collections.ConfigDict:
    """Tokenizer defaults: a small conv tokenizer, 32x32 images -> 8x8 = 64 VQ tokens of width 16."""
    c = ml_collections.ConfigDict()
    c.image_size = 32  # input height == width in pixels
    c.encoder = "conv"  # "conv" (ResNet) | "vit" (patch transformer)
    c.decoder = ""  # "conv" | "vit" | "" = same as encoder
    c.patch_size = 4  # pixels per token side: N = (image_size // patch_size) ** 2; conv needs a power of 2
    c.width = 32  # conv: full-resolution channels; vit: model width
    c.conv_max_mult = 1  # conv: level i has width * min(2**i, conv_max_mult) channels (raise for capacity)
    c.num_blocks = 1  # conv: ResBlocks per level; vit: transformer blocks (encoder and decoder each)
    c.norm_groups = 8  # conv: GroupNorm groups (must divide every level's channels)
    c.num_heads = 4  # vit: attention heads (must divide width)
    c.mlp_dim = 128  # vit: MLP hidden width
    c.token_dim = 16  # D: width of each token latent (what the LLM consumes)
    c.quantizer = "vq"  # "vq" (EMA codebook) | "fsq" | "gaussian" (VIB head) | "none"
    c.codebook_size = 512  # vq: K codes
    c.vq_commitment = 0.25  # vq: beta weighting ||z_pre - sg(q)||^2 in losses["commitment"]
    c.vq_logit_temperature = 1.0  # vq: code_logits = -||z - e_k||^2 / temperature
    c.ema_decay = 0.99  # vq: EMA decay of codebook usage and sums
    c.dead_code_threshold = 0.3  # vq: revive codes with EMA usage < threshold/K (~120 idle steps); 0 = off
    c.fsq_levels = (8, 5, 5, 5)  # fsq: levels per channel; implicit codebook of prod(levels) = 1000 codes
    c.gaussian_init_log_var = -4.0  # gaussian: initial log-variance (sigma ~ 0.14)
    c.dtype = "float32"  # compute dtype: "float32" | "bfloat16" (params stay float32)
    return c


def _fail(field: str, value: Any, need: str) -> None:
    raise ValueError(f"tokenizer config: {field}={value!r} is invalid: {need}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field and the fix for any inconsistent tokenizer setting."""
    c = config
    if c.encoder not in ENCODERS:
        _fail("encoder", c.encoder, f"choose one of {ENCODERS}")
    if c.decoder not in ("", *ENCODERS):
        _fail("decoder", c.decoder, f"choose one of {ENCODERS} or '' (same as encoder)")
    if c.quantizer not in QUANTIZERS:
        _fail("quantizer", c.quantizer, f"choose one of {QUANTIZERS}")
    if c.dtype not in DTYPES:
        _fail("dtype", c.dtype, f"choose one of {tuple(DTYPES)}")
    for field in (
        "image_size",
        "patch_size",
        "width",
        "token_dim",
        "num_heads",
        "mlp_dim",
        "conv_max_mult",
        "norm_groups",
    ):
        if int(c[field]) < 1:
            _fail(field, c[field], "must be a positive integer")
    if c.num_blocks < 0:
        _fail("num_blocks", c.num_blocks, "must be >= 0")
    if c.image_size % c.patch_size:
        _fail("patch_size", c.patch_size, f"must divide image_size={c.image_size}")
    archs = {c.encoder, c.decoder or c.encoder}
    if "conv" in archs:
        if c.patch_size & (c.patch_size - 1):
            _fail("patch_size", c.patch_size, "conv halves the size per level: use a power of 2")
        if c.width % c.norm_groups:
            _fail("norm_groups", c.norm_groups, f"must divide width={c.width}")
    if "vit" in archs and c.width % c.num_heads:
        _fail("num_heads", c.num_heads, f"must divide width={c.width}")
    if c.quantizer == "vq":
        if c.codebook_size < 2:
            _fail("codebook_size", c.codebook_size, "must be >= 2")
        if not 0.0 <= c.ema_decay < 1.0:
            _fail("ema_decay", c.ema_decay, "must be in [0, 1)")
        if c.dead_code_threshold < 0:
            _fail("dead_code_threshold", c.dead_code_threshold, "must be >= 0 (0 disables revival)")
        if c.vq_commitment < 0:
            _fail("vq_commitment", c.vq_commitment, "must be >= 0")
        if c.vq_logit_temperature <= 0:
            _fail("vq_logit_temperature", c.vq_logit_temperature, "must be > 0")
    if c.quantizer == "fsq" and (len(c.fsq_levels) < 1 or min(c.fsq_levels) < 2):
        _fail("fsq_levels", c.fsq_levels, "need at least one level, each >= 2")


def num_tokens(config: ml_collections.ConfigDict) -> int:
    """Tokens per image, N = (image_size // patch_size) ** 2."""
    return (config.image_size // config.patch_size) ** 2


def num_codes(config: ml_collections.ConfigDict) -> int:
    """Size of the discrete vocabulary of image codes (codebook_size or prod(fsq_levels)); 0 if continuous."""
    if config.quantizer == "vq":
        return int(config.codebook_size)
    if config.quantizer == "fsq":
        out = 1
        for level in config.fsq_levels:
            out *= int(level)
        return out
    return 0


class SharedTokenizer(nn.Module):
    """Shared visual tokenizer (see the module docstring for collections, rngs and outputs)."""

    config: ml_collections.ConfigDict

    def setup(self):  # the config is validated once, by `build_tokenizer` or `hosts.build_host`
        c = self.config
        dtype = DTYPES[c.dtype]
        if c.encoder == "conv":
            self.encoder = ConvEncoder(
                c.width, c.patch_size, c.num_blocks, c.conv_max_mult, c.norm_groups, dtype
            )
        else:
            self.encoder = ViTEncoder(c.width, c.patch_size, c.num_blocks, c.num_heads, c.mlp_dim, dtype)
        if (c.decoder or c.encoder) == "conv":
            self.decoder = ConvDecoder(
                c.width, c.patch_size, c.image_size, c.num_blocks, c.conv_max_mult, c.norm_groups, dtype
            )
        else:
            self.decoder = ViTDecoder(
                c.width, c.patch_size, c.image_size, c.num_blocks, c.num_heads, c.mlp_dim, dtype
            )
        self.to_latent = layers.dense(c.token_dim, ("embed", None), dtype=dtype)
        if c.quantizer == "vq":
            self.quantizer = VectorQuantizer(
                c.codebook_size,
                c.token_dim,
                c.vq_commitment,
                c.ema_decay,
                c.dead_code_threshold,
                c.vq_logit_temperature,
            )
        elif c.quantizer == "fsq":
            self.quantizer = FiniteScalarQuantizer(tuple(int(v) for v in c.fsq_levels), c.token_dim)
        elif c.quantizer == "gaussian":
            self.quantizer = GaussianHead(c.token_dim, c.gaussian_init_log_var, dtype=dtype)

    def _check_images(self, images: jax.Array) -> None:
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(
                f"images must be (B, {s}, {s}, 3) floats in [0, 1] (config.image_size={s}); "
                f"got shape {images.shape}"
            )

    def encode(self, images_BxHxWx3: jax.Array, *, train: bool = False) -> dict:
        """Images in [0, 1] -> dict with z_pre, z, indices and per-quantizer extras, losses, metrics."""
        self._check_images(images_BxHxWx3)
        x = nn.with_logical_constraint(
            images_BxHxWx3.astype(jnp.float32) * 2.0 - 1.0, ("batch", None, None, None)
        )
        features_BxNxC = self.encoder(x)
        z_pre_BxNxD = self.to_latent(features_BxNxC).astype(jnp.float32)
        z_pre_BxNxD = nn.with_logical_constraint(z_pre_BxNxD, ("batch", "length", None))
        q = self.config.quantizer
        if q in ("vq", "fsq"):
            out = self.quantizer(z_pre_BxNxD, train=train)
        elif q == "gaussian":
            out = self.quantizer(z_pre_BxNxD, features_BxNxC, train=train)
        else:
            out = {"z": z_pre_BxNxD, "losses": {}, "metrics": {}}
        if "indices" not in out:
            out["indices"] = jnp.full(z_pre_BxNxD.shape[:2], -1, jnp.int32)
        out["z_pre"] = z_pre_BxNxD
        out["metrics"]["z_pre_rms"] = jnp.sqrt(jnp.mean(jnp.square(z_pre_BxNxD)))
        return out

    def decode(self, z_BxNxD: jax.Array) -> jax.Array:
        """Token latents (B, N, D) -> images (B, H, W, 3) in the [0, 1] scale (unclamped, float32)."""
        if z_BxNxD.ndim != 3 or z_BxNxD.shape[-1] != self.config.token_dim:
            raise ValueError(
                f"decode expects z of shape (B, N, token_dim={self.config.token_dim}); got {z_BxNxD.shape}"
            )
        return (self.decoder(z_BxNxD).astype(jnp.float32) + 1.0) * 0.5

    def __call__(self, images_BxHxWx3: jax.Array, *, train: bool) -> dict:
        """encode + decode: the `encode` dict plus "recon" (B, H, W, 3) in the [0, 1] scale."""
        out = self.encode(images_BxHxWx3, train=train)
        out["recon"] = self.decode(out["z"])
        return out

    def _require_discrete(self, what: str) -> None:
        if self.config.quantizer not in ("vq", "fsq"):
            raise ValueError(
                f"{what} needs a discrete tokenizer: config.quantizer is "
                f"{self.config.quantizer!r}, use 'vq' or 'fsq'"
            )

    def encode_to_indices(self, images_BxHxWx3: jax.Array) -> jax.Array:
        """Images -> (B, N) int32 code indices (eval mode; no state update)."""
        self._require_discrete("encode_to_indices")
        return self.encode(images_BxHxWx3, train=False)["indices"]

    def decode_from_indices(self, indices_BxN: jax.Array) -> jax.Array:
        """(B, N) int code indices -> images in the [0, 1] scale; equals decode(z) of the same codes."""
        self._require_discrete("decode_from_indices")
        return self.decode(self.quantizer.indices_to_z(indices_BxN.astype(jnp.int32)))

    def codebook(self) -> jax.Array:
        """(K, D) token latents of every code (VQ: the EMA codebook; FSQ: the implicit grid mapped to D)."""
        self._require_discrete("codebook")
        return self.quantizer.codebook()


def build_tokenizer(config: ml_collections.ConfigDict) -> SharedTokenizer:
    """Validates `config` now (not at first trace) and returns the module."""
    validate_config(config)
    return SharedTokenizer(config)


def dummy_images(config: ml_collections.ConfigDict, batch_size: int = 1) -> jax.Array:
    """A zero image batch of the configured shape, for init and eval_shape."""
    return jnp.zeros((batch_size, config.image_size, config.image_size, 3), jnp.float32)


def init_variables(model: SharedTokenizer, rng: jax.Array, batch_size: int = 1) -> dict:
    """{"params": ..., "state": ... (vq only)} with logical-axis boxes, from zero images and train=False."""
    return model.init({"params": rng}, dummy_images(model.config, batch_size), train=False)
