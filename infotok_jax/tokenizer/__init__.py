"""The shared visual tokenizer (Flax linen): conv/ViT encoders and decoders, VQ-EMA / FSQ / Gaussian heads.

Public API:
  default_config()              ml_collections defaults (every field commented in model.py)
  SharedTokenizer(config)       the linen module: __call__, encode, decode, encode_to_indices,
                                decode_from_indices, codebook
  build_tokenizer(config)       validate, then construct
  init_variables(model, rng)    {"params", "state"} with logical axis boxes
"""

from infotok_jax.tokenizer.model import (
    DTYPES,
    ENCODERS,
    QUANTIZERS,
    SharedTokenizer,
    build_tokenizer,
    default_config,
    dummy_images,
    init_variables,
    num_codes,
    num_tokens,
    validate_config,
)

__all__ = [
    "DTYPES",
    "ENCODERS",
    "QUANTIZERS",
    "SharedTokenizer",
    "build_tokenizer",
    "default_config",
    "dummy_images",
    "init_variables",
    "num_codes",
    "num_tokens",
    "validate_config",
]
