"""Unified-MLLM building blocks shared by the hosts.

backbone         decoder-only transformer (RMSNorm, RoPE, GQA einsum attention, SwiGLU), logical sharding
attention_masks  masks as data: causal, padding, Show-o omni, cached decoding
kv_cache         "cache" collection helpers: slot writes, positions for padded prompts
sampling         token choice (temperature / top-k / top-p, CFG) and MaskGIT parallel decoding
decoding         the one KV-cached prefill-and-decode loop (host answers, AR code sampling)
flops            honest model-FLOP counts for MFU
hosts            the three unified-MLLM hosts (ar, masked, continuous) on the shared tokenizer
"""

from infotok_jax.mllm.backbone import Transformer, TransformerConfig

__all__ = ["Transformer", "TransformerConfig"]
