"""Datasets built locally through TFDS (array_record, no TensorFlow), the scene oracle and the input pipeline.

Entry points:
  prepare(name, data_dir, **builder_kwargs)        build a registered dataset once (idempotent, atomic)
  make_pipeline(name, data_dir, split, global_batch_size, mesh, seed, ...)
                                                   deterministic, resumable global-array batches
  iterate_numpy(name, data_dir, split, batch_size) one ordered numpy pass for evaluation
  scene_oracle.score / score_batch                 read scene attributes back from pixels
See docs/data.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are resolved on first use (PEP 562), so `from infotok_jax.data import scenes_spec` (pure numpy:
# used by the objective, the hosts and the oracle) does not import TFDS and grain.
_EXPORTS = {
    "InputPipeline": "pipeline",
    "iterate_numpy": "pipeline",
    "make_pipeline": "pipeline",
    "PreparedDataset": "preparation",
    "dataset_path": "preparation",
    "open_prepared": "preparation",
    "prepare": "preparation",
    "REGISTRY": "registry",
    "get_spec": "registry",
    "score": "scene_oracle",
    "score_batch": "scene_oracle",
    "TextTokenizer": "text_tokenizer",
    "WordTokenizer": "text_tokenizer",
    "FIELDS": "tfds_adapter",
    "TextLengths": "tfds_adapter",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'infotok_jax.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"infotok_jax.data.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
