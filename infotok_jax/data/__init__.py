"""Datasets built locally through TFDS (array_record, no TensorFlow), the scene oracle and the input pipeline.

Entry points:
  prepare(name, data_dir, **builder_kwargs)        build a registered dataset once (idempotent, atomic)
  make_pipeline(name, data_dir, split, global_batch_size, mesh, seed, ...)
                                                   deterministic, resumable global-array batches
  iterate_numpy(name, data_dir, split, batch_size) one ordered numpy pass for evaluation
  scene_oracle.score / score_batch                 read scene attributes back from pixels
See docs/data.md.
"""

from infotok_jax.data.pipeline import InputPipeline, iterate_numpy, make_pipeline
from infotok_jax.data.preparation import PreparedDataset, dataset_path, open_prepared, prepare
from infotok_jax.data.registry import REGISTRY, get_spec
from infotok_jax.data.scene_oracle import score, score_batch
from infotok_jax.data.text_tokenizer import TextTokenizer, WordTokenizer
from infotok_jax.data.tfds_adapter import FIELDS, TextLengths

__all__ = [
    "FIELDS", "REGISTRY", "InputPipeline", "PreparedDataset", "TextLengths", "TextTokenizer",
    "WordTokenizer", "dataset_path", "get_spec", "iterate_numpy", "make_pipeline", "open_prepared",
    "prepare", "score", "score_batch",
]
