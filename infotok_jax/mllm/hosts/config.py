"""Host config: the defaults of each host kind, their validation and the backbone config they imply.

Every allowed value is defined once here (`KINDS`, `QUANTIZERS`; compute dtypes are the tokenizer's
`DTYPES`), and every error names the config field and what to change.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from infotok_jax import tokenizer as tok
from infotok_jax.mllm.backbone import TransformerConfig
from infotok_jax.mllm.hosts.sequences import vocab_for

KINDS = ("ar", "masked", "continuous")
QUANTIZERS = {"ar": ("vq", "fsq"), "masked": ("vq", "fsq"), "continuous": ("none", "gaussian")}


def default_host_config(kind: str = "ar") -> ml_collections.ConfigDict:
    """Host defaults, small enough to train on a CPU: 32x32 images -> 64 tokens, a 4-layer 128-wide LM."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is unknown; use one of {KINDS}")
    c = ml_collections.ConfigDict()
    c.kind = kind  # "ar" | "masked" | "continuous"
    c.tokenizer = tok.default_config()  # the shared tokenizer (its quantizer must suit the host)
    if kind == "continuous":
        c.tokenizer.quantizer = "gaussian"  # continuous tokens: "gaussian" (VIB head) or "none"
    c.lm = ml_collections.ConfigDict()
    c.lm.num_layers = 4  # transformer blocks
    c.lm.embed_dim = 128  # residual width
    c.lm.num_heads = 4  # query heads
    c.lm.num_kv_heads = 4  # key/value heads (GQA when fewer)
    c.lm.head_dim = 32  # per-head width
    c.lm.mlp_dim = 384  # SwiGLU hidden width
    c.lm.dtype = "float32"  # compute dtype: "float32" | "bfloat16"
    c.lm.remat = "none"  # rematerialization policy of the backbone
    c.lm.unroll_layers = True  # the layer scan as straight-line code: same math, faster (performance.md)
    c.lm.dropout_rate = 0.0  # residual dropout (needs a "dropout" rng when > 0 and train=True)
    c.text_vocab_size = 64  # V_t: >= the text tokenizer's vocab_size (scenes: 44)
    c.pad_id = 0  # text padding (WordTokenizer ids)
    c.bos_id = 1  # begin of text
    c.eos_id = 2  # end of text
    c.max_caption_len = 32  # Lc, BOS and EOS included
    c.max_question_len = 16  # Lq
    c.max_answer_len = 8  # La
    c.understanding_weight = 1.0  # answer cross-entropy
    c.generation_weight = 1.0  # code cross-entropy (ar, masked) or flow-matching loss (continuous)
    c.reconstruction_weight = 1.0  # tokenizer pixel MSE (the tokenizer trains jointly)
    c.lm_grad_to_tokenizer = 1.0  # scale of the LM losses' gradient into the tokenizer (0: LM-only heads)
    c.cfg_dropout = 0.1  # probability of training a generation row on the empty caption
    c.projector_hidden = 256  # continuous: hidden width of the z -> LM MLP projector
    c.flow = ml_collections.ConfigDict()
    c.flow.width = 128  # continuous: flow-head MLP width
    c.flow.depth = 3  # continuous: residual AdaLN blocks
    c.flow.samples_per_token = 2  # continuous: (t, eps) draws per masked token per step (MAR uses 4)
    c.sampling = ml_collections.ConfigDict()
    c.sampling.temperature = 1.0  # code / noise temperature
    c.sampling.top_k = 0  # ar, masked: top-k filter (0 = off)
    c.sampling.cfg_scale = 3.0  # classifier-free guidance scale (1 = conditional only)
    c.sampling.num_steps = 8  # masked, continuous: parallel decoding steps
    c.sampling.flow_steps = 16  # continuous: Euler steps of the flow ODE per decoding step
    c.sampling.choice_temperature = 4.5  # masked: re-masking noise scale (MaskGIT)
    if kind == "ar":
        # With the LM gradient the AR losses collapse the VQ codebook (measured: docs/hosts.md).
        c.lm_grad_to_tokenizer = 0.0
        c.sampling.temperature = 0.5
        c.sampling.cfg_scale = 1.0
    return c


def _fail(field: str, value: Any, need: str) -> None:
    raise ValueError(f"host config: {field}={value!r} is invalid: {need}")


def validate_host_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field and the fix for an inconsistent host config."""
    if c.kind not in KINDS:
        _fail("kind", c.kind, f"choose one of {KINDS}")
    tok.validate_config(c.tokenizer)
    if c.tokenizer.quantizer not in QUANTIZERS[c.kind]:
        _fail("tokenizer.quantizer", c.tokenizer.quantizer, f"use one of {QUANTIZERS[c.kind]} for {c.kind}")
    if c.lm.dtype not in tok.DTYPES:
        _fail("lm.dtype", c.lm.dtype, f"choose one of {tuple(tok.DTYPES)}")
    specials = (c.pad_id, c.bos_id, c.eos_id)
    if max(specials) >= c.text_vocab_size or len(set(specials)) < 3:
        _fail("text_vocab_size", c.text_vocab_size, "must exceed distinct pad_id, bos_id and eos_id")
    for f in ("max_caption_len", "max_question_len", "max_answer_len"):
        if c[f] < 2:
            _fail(f, c[f], "must be >= 2 (BOS and EOS)")
    for f in ("understanding_weight", "generation_weight", "reconstruction_weight", "lm_grad_to_tokenizer"):
        if c[f] < 0:
            _fail(f, c[f], "must be >= 0")
    if not 0.0 <= c.cfg_dropout < 1.0:
        _fail("cfg_dropout", c.cfg_dropout, "must be in [0, 1)")
    if c.flow.samples_per_token < 1:
        _fail("flow.samples_per_token", c.flow.samples_per_token, "must be >= 1")
    try:  # the backbone's checks (sizes >= 1, num_heads a multiple of num_kv_heads, ...) at config time
        lm_config(c, max_len=1)
    except ValueError as e:
        raise ValueError(f"host config: {str(e).replace('TransformerConfig.', 'lm.')}") from None


def lm_config(c: ml_collections.ConfigDict, max_len: int) -> TransformerConfig:
    """Backbone config of host config `c`; `max_len` is the KV-cache length when decoding."""
    lm = c.lm
    return TransformerConfig(
        vocab_size=vocab_for(c).size,
        num_layers=lm.num_layers,
        num_heads=lm.num_heads,
        num_kv_heads=lm.num_kv_heads,
        head_dim=lm.head_dim,
        embed_dim=lm.embed_dim,
        mlp_dim=lm.mlp_dim,
        max_len=max_len,
        dtype=tok.DTYPES[lm.dtype],
        remat=lm.remat,
        scan_unroll=lm.num_layers if lm.unroll_layers else 1,
        dropout_rate=lm.dropout_rate,
    )
