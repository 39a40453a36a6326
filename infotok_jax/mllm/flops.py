"""Honest model-FLOP counts for the decoder backbone, used for model FLOPs utilization (MFU).

The count is the usual "honest" MFU convention ("MFU counting" in docs/performance.md): a training step
costs 6 x (matmul parameters) per token, where matmul parameters exclude the embedding lookup and the
norm scales but include the output projection (also when it is tied to the embedding), plus attention scores
and the attention-weighted sum: 12 x layers x T^2 x (heads x head_dim) per sequence for forward and
backward, counted at half because the causal mask makes half of it unnecessary. Rematerialization is not
counted (MFU measures useful work, not the work a memory policy adds). Inference (forward only) is a
third of each term.
"""

from __future__ import annotations

from infotok_jax.mllm.backbone import TransformerConfig


def matmul_params(config: TransformerConfig) -> int:
    """Parameters entering a matmul per token: attention + MLP kernels of all layers and the unembedding."""
    d, h = config.embed_dim, config.head_dim
    attn = d * config.num_heads * h * 2 + d * config.num_kv_heads * h * 2  # query + out, key + value
    mlp = 3 * d * config.mlp_dim  # gate, up, down
    return config.num_layers * (attn + mlp) + d * config.vocab_size


def attention_flops_per_sequence(
    config: TransformerConfig, seq_len: int, *, causal: bool = True, training: bool = True
) -> float:
    """Attention score + weighted-sum FLOPs for one sequence (12 L T^2 d for fwd+bwd, half if causal)."""
    width = config.num_heads * config.head_dim
    flops = (12.0 if training else 4.0) * config.num_layers * float(seq_len) ** 2 * width
    return flops / 2.0 if causal else flops


def flops_per_token(
    config: TransformerConfig, seq_len: int, *, causal: bool = True, training: bool = True
) -> float:
    """Model FLOPs per token for a sequence of `seq_len` tokens (training = forward + backward)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1; got {seq_len}")
    dense = (6.0 if training else 2.0) * matmul_params(config)
    return dense + attention_flops_per_sequence(config, seq_len, causal=causal, training=training) / seq_len


def flops_per_step(
    config: TransformerConfig, batch_size: int, seq_len: int, *, causal: bool = True, training: bool = True
) -> float:
    """Model FLOPs of one step over a batch of `batch_size` sequences of `seq_len` tokens."""
    return batch_size * seq_len * flops_per_token(config, seq_len, causal=causal, training=training)


def mfu(
    config: TransformerConfig,
    batch_size: int,
    seq_len: int,
    step_seconds: float,
    peak_flops_per_s: float,
    *,
    causal: bool = True,
) -> float:
    """Model FLOPs utilization of a training step: model FLOPs / (step time x peak rate)."""
    if step_seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError(
            f"step_seconds and peak_flops_per_s must be > 0; got {step_seconds}, {peak_flops_per_s}"
        )
    return flops_per_step(config, batch_size, seq_len, causal=causal) / (step_seconds * peak_flops_per_s)
