"""Building blocks shared by the tokenizer's encoders and decoders, with logical axis names on every param.

Every parameter is created through `nn.with_logical_partitioning`, using the names of
`infotok_jax.sharding` (conv kernels: height, width, conv_in, conv_out; dense kernels: embed, mlp, heads,
kv). Axes whose size is set by the data rather than the model (3 RGB channels, the D-wide bottleneck)
are named None, so they stay replicated and never need to divide a mesh axis.

Blocks:
  ResBlock        GroupNorm-swish-conv3x3 twice, residual; the second conv starts at zero (identity block).
  Downsample      3x3 conv with stride 2.
  Upsample        3x3 conv to 4x the channels at low resolution, then depth-to-space (pixel shuffle):
                  the cost of a stride-2 transposed conv, no full-resolution 3x3 conv.
  TransformerBlock  pre-LayerNorm multi-head self-attention + GELU MLP, softmax in float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

CONV_NAMES = ("height", "width", "conv_in", "conv_out")


def partitioned(init: nn.initializers.Initializer, names: tuple[str | None, ...]) -> Any:
    """Wraps an initializer so the param it creates carries logical axis `names`."""
    return nn.with_logical_partitioning(init, names)


def conv(
    features: int,
    kernel: int,
    *,
    dtype: Dtype,
    strides: int = 1,
    names: tuple = CONV_NAMES,
    zero_init: bool = False,
    name: str | None = None,
) -> nn.Conv:
    """A square 'SAME' convolution whose kernel and bias carry logical axis names."""
    kernel_init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding="SAME",
        dtype=dtype,
        kernel_init=partitioned(kernel_init, names),
        bias_init=partitioned(nn.initializers.zeros_init(), (names[-1],)),
        name=name,
    )


def dense(
    features: int,
    names: tuple[str | None, str | None],
    *,
    dtype: Dtype | None = None,
    zero_init: bool = False,
    name: str | None = None,
    bias_init: nn.initializers.Initializer | None = None,
) -> nn.Dense:
    """A Dense layer whose (in, out) kernel carries `names` and whose bias carries the output name.

    float32 parameters; `dtype` is the computation dtype (None: flax's default, from the inputs). The one
    Dense helper of the tokenizer, the hosts and the supervised control heads.

    (Multi-axis kernels are built with self.param + einsum instead: nn.DenseGeneral initializes them
    flattened, which clashes with a multi-axis logical constraint under a mesh.)
    """
    kernel_init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=partitioned(kernel_init, names),
        bias_init=partitioned(bias_init or nn.initializers.zeros_init(), names[-1:]),
        name=name,
    )


def group_norm(num_groups: int, *, dtype: Dtype, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm over channels (statistics in float32) with logically named scale and bias."""
    return nn.GroupNorm(
        num_groups=num_groups,
        dtype=dtype,
        scale_init=partitioned(nn.initializers.ones_init(), ("conv_out",)),
        bias_init=partitioned(nn.initializers.zeros_init(), ("conv_out",)),
        name=name,
    )


def layer_norm(*, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over the model width with logically named scale and bias."""
    return nn.LayerNorm(
        dtype=dtype,
        scale_init=partitioned(nn.initializers.ones_init(), ("embed",)),
        bias_init=partitioned(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )


class ResBlock(nn.Module):
    """Pre-activation residual block at fixed resolution: x + conv(swish(gn(conv(swish(gn(x))))))."""

    features: int
    num_groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        h = nn.swish(group_norm(self.num_groups, dtype=self.dtype)(x_BxHxWxC))
        h = conv(self.features, 3, dtype=self.dtype)(h)
        h = nn.swish(group_norm(self.num_groups, dtype=self.dtype)(h))
        h = conv(self.features, 3, dtype=self.dtype, zero_init=True)(h)
        skip = x_BxHxWxC
        if x_BxHxWxC.shape[-1] != self.features:
            skip = conv(self.features, 1, dtype=self.dtype, name="skip")(x_BxHxWxC)
        return skip + h


class Downsample(nn.Module):
    """Halves height and width with a stride-2 3x3 conv."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return conv(self.features, 3, strides=2, dtype=self.dtype)(x_BxHxWxC)


class Upsample(nn.Module):
    """Doubles height and width: 3x3 conv to 4*features at low resolution, then depth-to-space."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        b, h, w, _ = x_BxHxWxC.shape
        y = conv(4 * self.features, 3, dtype=self.dtype)(x_BxHxWxC)
        y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, 2 * h, 2 * w, self.features)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)); x + MLP(LN(x)). Full (bidirectional) attention."""

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32

    def _weight(
        self,
        name: str,
        shape: tuple[int, ...],
        names: tuple[str, ...],
        in_axis: int | tuple,
        out_axis: int | tuple,
    ) -> jax.Array:
        init = nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis)
        return self.param(name, partitioned(init, names), shape, jnp.float32).astype(self.dtype)

    def _bias(self, name: str, shape: tuple[int, ...], names: tuple[str, ...]) -> jax.Array:
        init = partitioned(nn.initializers.zeros_init(), names)
        return self.param(name, init, shape, jnp.float32).astype(self.dtype)

    @nn.compact
    def __call__(self, x_BxNxC: jax.Array) -> jax.Array:
        width = x_BxNxC.shape[-1]
        head_dim = width // self.num_heads
        h = layer_norm(dtype=self.dtype)(x_BxNxC)
        heads = (self.num_heads, head_dim)
        qkv_names = ("embed", "heads", "kv")
        q_BxNxHxK, k_BxNxHxK, v_BxNxHxK = [
            jnp.einsum("bnc,chk->bnhk", h, self._weight(n, (width, *heads), qkv_names, 0, (1, 2)))
            + self._bias(f"{n}_bias", heads, ("heads", "kv"))[None, None]
            for n in ("query", "key", "value")
        ]
        logits_BxHxNxN = jnp.einsum("bqhk,bmhk->bhqm", q_BxNxHxK, k_BxNxHxK).astype(jnp.float32)
        weights_BxHxNxN = jax.nn.softmax(logits_BxHxNxN / jnp.sqrt(float(head_dim)), axis=-1)
        attn_BxNxHxK = jnp.einsum("bhqm,bmhk->bqhk", weights_BxHxNxN.astype(self.dtype), v_BxNxHxK)
        out = jnp.einsum(
            "bnhk,hkc->bnc",
            attn_BxNxHxK,
            self._weight("out", (*heads, width), ("heads", "kv", "embed"), (0, 1), 2),
        )
        out = out + self._bias("out_bias", (width,), ("embed",))[None, None]
        x_BxNxC = x_BxNxC + out
        x_BxNxC = nn.with_logical_constraint(x_BxNxC, ("batch", "length", "embed"))
        h = layer_norm(dtype=self.dtype)(x_BxNxC)
        h = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="mlp_in")(h))
        h = dense(width, ("mlp", "embed"), dtype=self.dtype, name="mlp_out")(h)
        return nn.with_logical_constraint(x_BxNxC + h, ("batch", "length", "embed"))
