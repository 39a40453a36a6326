"""Decoder-only transformer shared by the three unified-MLLM hosts (AR, masked, continuous).

Pre-norm blocks with RMSNorm, rotary position embeddings (RoPE), grouped-query attention written as
einsums (the default `jax.nn.dot_product_attention` was the slower of the two in an earlier GPU session's
train steps; `docs/performance.md` lists the cuDNN kernel as the untried alternative) and a SwiGLU MLP.
The attention mask is an input array, so causal, Show-o "omni" or any other attention pattern is the
same compiled model (`attention_masks`). Inputs are token ids or precomputed embeddings (hosts mix
projected image features with text embeddings). Every parameter carries logical axis names (embed, mlp,
heads, kv, vocab; "layers" for the scanned stack) and the residual stream is constrained to
("batch", "length", "embed"), so the model shards over the ("data", "fsdp", "model") mesh of
`infotok_jax.sharding`. With `decode=True` keys and values go to the "cache" collection (`kv_cache`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from infotok_jax.mllm import attention_masks, kv_cache

_REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Backbone hyper-parameters. Defaults are a GPT-2-small sized model."""

    vocab_size: int = 32768  # text + image-code (+ special) vocabulary
    num_layers: int = 12  # transformer blocks
    num_heads: int = 12  # query heads
    num_kv_heads: int = 12  # key/value heads (GQA when < num_heads; must divide num_heads)
    head_dim: int = 64  # per-head width (even, for RoPE)
    embed_dim: int = 768  # residual stream width
    mlp_dim: int = 2048  # SwiGLU hidden width
    max_len: int = 1024  # default KV-cache length (no learned positions: RoPE)
    dtype: Any = jnp.bfloat16  # compute dtype (bfloat16 or float32)
    param_dtype: Any = jnp.float32  # parameter storage dtype
    rope_base: float = 10000.0  # RoPE frequency base
    dropout_rate: float = 0.0  # residual-branch dropout (active only with deterministic=False)
    remat: str = "none"  # "none" | "full" | "dots" | "dots_no_batch" rematerialization policy
    scan_layers: bool = True  # nn.scan over blocks (fast compile); False gives blocks_0..blocks_{L-1}
    scan_unroll: int = 1  # blocks per iteration of the layer scan (same parameters; num_layers: no loop)
    logits_via_embedding: bool = False  # tie the output projection to the input embedding
    norm_eps: float = 1e-6  # RMSNorm epsilon

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
        for name in (
            "vocab_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "embed_dim",
            "mlp_dim",
            "max_len",
            "scan_unroll",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TransformerConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"TransformerConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"TransformerConfig.head_dim must be even for RoPE; got {self.head_dim}")
        if self.remat not in _REMAT_POLICIES:
            raise ValueError(
                f"TransformerConfig.remat must be one of {sorted(_REMAT_POLICIES)}; got {self.remat!r}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"TransformerConfig.dropout_rate must be in [0, 1); got {self.dropout_rate}")


def _constrain(x: Array, names: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, names)


def _kernel_init(in_axis: Any, out_axis: Any, names: tuple[str, ...]) -> Any:
    init = nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis
    )
    return nn.with_logical_partitioning(init, names)


def apply_rope(x_BxTxNxH: Array, positions_BxT: Array, base: float) -> Array:
    """Rotary position embedding (rotate-half form), computed in float32."""
    half = x_BxTxNxH.shape[-1] // 2
    inv_freq_F = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxTxF = positions_BxT.astype(jnp.float32)[:, :, None] * inv_freq_F[None, None, :]
    sin_BxTx1xF = jnp.sin(angles_BxTxF)[:, :, None, :]
    cos_BxTx1xF = jnp.cos(angles_BxTxF)[:, :, None, :]
    x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos_BxTx1xF - x2 * sin_BxTx1xF, x2 * cos_BxTx1xF + x1 * sin_BxTx1xF], -1)
    return out.astype(x_BxTxNxH.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale, normalized in float32."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
        scale = self.param("scale", init, (x.shape[-1],), self.config.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.norm_eps)
        return (y * scale.reshape((1,) * (x.ndim - 1) + (-1,))).astype(self.config.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention as einsums, with an optional KV cache in the "cache" collection."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x_BxTxD: Array, positions_BxT: Array, mask_Bx1xTxS: Array | None, decode: bool
    ) -> Array:
        cfg = self.config
        d, n, k, h, dt = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.dtype
        w_q = self.param(
            "query", _kernel_init(0, (1, 2), ("embed", "heads", "kv")), (d, n, h), cfg.param_dtype
        )
        w_k = self.param("key", _kernel_init(0, (1, 2), ("embed", "heads", "kv")), (d, k, h), cfg.param_dtype)
        w_v = self.param(
            "value", _kernel_init(0, (1, 2), ("embed", "heads", "kv")), (d, k, h), cfg.param_dtype
        )
        w_o = self.param("out", _kernel_init((0, 1), 2, ("heads", "kv", "embed")), (n, h, d), cfg.param_dtype)
        x_BxTxD = x_BxTxD.astype(dt)
        q_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, w_q.astype(dt))
        k_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, w_k.astype(dt))
        v_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, w_v.astype(dt))
        q_BxTxNxH = apply_rope(q_BxTxNxH, positions_BxT, cfg.rope_base) * jnp.asarray(h**-0.5, dt)
        k_BxTxKxH = apply_rope(k_BxTxKxH, positions_BxT, cfg.rope_base)
        batch, length = x_BxTxD.shape[:2]
        if decode:
            shape = (batch, cfg.max_len, k, h)
            cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, dt)
            cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, dt)
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            cached_k.value = kv_cache.write(cached_k.value, k_BxTxKxH, index.value)
            cached_v.value = kv_cache.write(cached_v.value, v_BxTxKxH, index.value)
            if mask_Bx1xTxS is None:
                slots_BxT = jnp.broadcast_to(index.value + jnp.arange(length)[None, :], (batch, length))
                valid_BxS = jnp.ones((batch, cfg.max_len), bool)
                mask_Bx1xTxS = attention_masks.decode_mask(slots_BxT, valid_BxS)[:, None]
            index.value = index.value + length
            k_BxTxKxH, v_BxTxKxH = cached_k.value, cached_v.value
        elif mask_Bx1xTxS is None:
            mask_Bx1xTxS = attention_masks.causal_mask(batch, length)[:, None]
        q_BxTxKxGxH = q_BxTxNxH.reshape(batch, length, k, n // k, h)
        with jax.named_scope("attention_core"):  # scores, softmax, values: the profile's "attention"
            logits_BxKxGxTxS = jnp.einsum(
                "btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxTxKxH, preferred_element_type=jnp.float32
            )
            logits_BxKxGxTxS = jnp.where(mask_Bx1xTxS[:, :, None], logits_BxKxGxTxS, _NEG_INF)
            probs_BxKxGxTxS = jax.nn.softmax(logits_BxKxGxTxS, axis=-1).astype(dt)
            out_BxTxKxGxH = jnp.einsum("bkgts,bskh->btkgh", probs_BxKxGxTxS, v_BxTxKxH)
        out_BxTxNxH = out_BxTxKxGxH.reshape(batch, length, n, h)
        return jnp.einsum("btnh,nhd->btd", out_BxTxNxH, w_o.astype(dt))


class MLP(nn.Module):
    """SwiGLU feed-forward block."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD: Array) -> Array:
        cfg = self.config
        dt = cfg.dtype
        w_gate = self.param(
            "gate", _kernel_init(0, 1, ("embed", "mlp")), (cfg.embed_dim, cfg.mlp_dim), cfg.param_dtype
        )
        w_up = self.param(
            "up", _kernel_init(0, 1, ("embed", "mlp")), (cfg.embed_dim, cfg.mlp_dim), cfg.param_dtype
        )
        w_down = self.param(
            "down", _kernel_init(0, 1, ("mlp", "embed")), (cfg.mlp_dim, cfg.embed_dim), cfg.param_dtype
        )
        x_BxTxD = x_BxTxD.astype(dt)
        gate_BxTxM = jnp.einsum("btd,dm->btm", x_BxTxD, w_gate.astype(dt))
        up_BxTxM = jnp.einsum("btd,dm->btm", x_BxTxD, w_up.astype(dt))
        hidden_BxTxM = _constrain(nn.silu(gate_BxTxM) * up_BxTxM, ("batch", "length", "mlp"))
        return jnp.einsum("btm,md->btd", hidden_BxTxM, w_down.astype(dt))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)), then x + MLP(Norm(x))."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x_BxTxD: Array,
        positions_BxT: Array,
        mask_Bx1xTxS: Array | None,
        decode: bool,
        deterministic: bool,
    ) -> Any:
        cfg = self.config
        drop = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
        h_BxTxD = Attention(cfg, name="attn")(
            RMSNorm(cfg, name="attn_norm")(x_BxTxD), positions_BxT, mask_Bx1xTxS, decode
        )
        x_BxTxD = _constrain(x_BxTxD + drop(h_BxTxD), ("batch", "length", "embed"))
        h_BxTxD = MLP(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x_BxTxD))
        x_BxTxD = _constrain(x_BxTxD + drop(h_BxTxD), ("batch", "length", "embed"))
        return (x_BxTxD, None) if cfg.scan_layers else x_BxTxD


class Transformer(nn.Module):
    """Decoder-only transformer; see the module docstring. Call with tokens or input embeddings."""

    config: TransformerConfig

    def setup(self) -> None:
        cfg = self.config
        emb_init = nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed"))
        self.embedding = self.param("embedding", emb_init, (cfg.vocab_size, cfg.embed_dim), cfg.param_dtype)
        block_cls = Block
        if cfg.remat != "none":
            block_cls = nn.remat(
                Block,
                policy=_REMAT_POLICIES[cfg.remat],
                prevent_cse=not cfg.scan_layers,
                static_argnums=(4, 5),
            )
        if cfg.scan_layers:
            self.layers = nn.scan(
                block_cls,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * 4,
                length=cfg.num_layers,
                unroll=min(cfg.scan_unroll, cfg.num_layers),
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg)
        else:
            self.blocks = [block_cls(cfg) for _ in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg)
        if not cfg.logits_via_embedding:
            self.unembed_kernel = self.param(
                "unembed",
                _kernel_init(0, 1, ("embed", "vocab")),
                (cfg.embed_dim, cfg.vocab_size),
                cfg.param_dtype,
            )

    def embed(self, tokens_BxT: Array) -> Array:
        """Token ids -> input embeddings (compute dtype), constrained to (batch, length, embed)."""
        x_BxTxD = jnp.take(self.embedding, tokens_BxT, axis=0).astype(self.config.dtype)
        return _constrain(x_BxTxD, ("batch", "length", "embed"))

    def logits(self, hidden_BxTxD: Array) -> Array:
        """Final-normed hidden states -> float32 logits over the vocabulary."""
        cfg = self.config
        h_BxTxD = hidden_BxTxD.astype(cfg.dtype)
        if cfg.logits_via_embedding:
            h_BxTxD = h_BxTxD * jnp.asarray(cfg.embed_dim**-0.5, cfg.dtype)
            out = jnp.einsum(
                "btd,vd->btv", h_BxTxD, self.embedding.astype(cfg.dtype), preferred_element_type=jnp.float32
            )
        else:
            out = jnp.einsum(
                "btd,dv->btv",
                h_BxTxD,
                self.unembed_kernel.astype(cfg.dtype),
                preferred_element_type=jnp.float32,
            )
        return _constrain(out, ("batch", "length", "vocab"))

    def __call__(
        self,
        tokens_BxT: Array | None = None,
        *,
        embeddings_BxTxD: Array | None = None,
        positions_BxT: Array | None = None,
        mask_BxTxT: Array | None = None,
        decode: bool = False,
        deterministic: bool = True,
        return_hidden: bool = False,
    ) -> Array | tuple[Array, Array]:
        """Runs the decoder.

        Args:
          tokens_BxT: int token ids; give exactly one of this and `embeddings_BxTxD`.
          embeddings_BxTxD: precomputed input embeddings of width `embed_dim`.
          positions_BxT: RoPE positions; default 0..T-1 (required with `decode=True`).
          mask_BxTxT: bool mask (True = attend), BxTxS or Bx1xTxS, batch 1 broadcasts. S = T, or the cache
            length when decoding. Default: causal (decoding: every written slot up to the query's own).
          decode: write keys/values to the "cache" collection at its index and attend over the cache
            (apply with `mutable=["cache"]`; the first such call creates the cache, see `kv_cache`).
          deterministic: disables dropout (needs a "dropout" rng when False and dropout_rate > 0).
          return_hidden: also return the final-normed hidden states.

        Returns:
          float32 logits BxTxV, and the hidden states BxTxD when `return_hidden`.
        """
        cfg = self.config
        if (tokens_BxT is None) == (embeddings_BxTxD is None):
            raise ValueError("Transformer: pass exactly one of tokens_BxT and embeddings_BxTxD")
        if tokens_BxT is not None:
            if tokens_BxT.ndim != 2:
                raise ValueError(f"tokens_BxT must have shape [batch, length]; got {tokens_BxT.shape}")
            x_BxTxD = self.embed(tokens_BxT)
        else:
            if embeddings_BxTxD.ndim != 3 or embeddings_BxTxD.shape[-1] != cfg.embed_dim:
                raise ValueError(
                    f"embeddings_BxTxD must have shape [batch, length, {cfg.embed_dim}]; "
                    f"got {embeddings_BxTxD.shape}"
                )
            x_BxTxD = _constrain(embeddings_BxTxD.astype(cfg.dtype), ("batch", "length", "embed"))
        batch, length = x_BxTxD.shape[:2]
        if positions_BxT is None:
            if decode:
                raise ValueError(
                    "Transformer: positions_BxT is required with decode=True (the cache slot is not "
                    "the position when prompts are padded)"
                )
            positions_BxT = jnp.broadcast_to(jnp.arange(length)[None, :], (batch, length))
        if positions_BxT.shape != (batch, length):
            raise ValueError(f"positions_BxT must have shape {(batch, length)}; got {positions_BxT.shape}")
        mask = None if mask_BxTxT is None else self._check_mask(mask_BxTxT, batch, length, decode)
        if cfg.scan_layers:
            x_BxTxD, _ = self.layers(x_BxTxD, positions_BxT, mask, decode, deterministic)
        else:
            for block in self.blocks:
                x_BxTxD = block(x_BxTxD, positions_BxT, mask, decode, deterministic)
        hidden_BxTxD = self.final_norm(x_BxTxD)
        logits_BxTxV = self.logits(hidden_BxTxD)
        return (logits_BxTxV, hidden_BxTxD) if return_hidden else logits_BxTxV

    def _check_mask(self, mask: Array, batch: int, length: int, decode: bool) -> Array:
        keys = self.config.max_len if decode else length
        if mask.ndim == 3:
            mask = mask[:, None]
        ok = mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[0] in (1, batch)
        if not ok or mask.shape[2:] != (length, keys):
            raise ValueError(
                f"mask_BxTxT must have shape [B, T, S] or [B, 1, T, S] with B in (1, {batch}), T={length}, "
                f"S={keys} (the {'cache' if decode else 'sequence'} length); got {mask.shape}"
            )
        return jnp.broadcast_to(mask.astype(bool), (batch, 1, length, keys))


def unstack_layer_params(params: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Converts unboxed scan_layers=True params ("layers", leading L axis) to blocks_0..blocks_{L-1}."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"blocks_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], params["layers"])
    return out


def stack_layer_params(params: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Inverse of `unstack_layer_params`."""
    out = {k: v for k, v in params.items() if not k.startswith("blocks_")}
    blocks = [params[f"blocks_{i}"] for i in range(num_layers)]
    out["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks)
    return out
