"""The `config.data` block of experiment configs, and the pipelines and batch shapes it describes.

One place turns a config into prepared data and iterators, so every task reads data the same way:
`default_config(dataset)` gives the fields, `ensure_prepared` builds the dataset once (process 0 builds,
the others wait), `pipeline_args` gives what `pipeline.make_pipeline` needs from it (the one way to build
an iterator) and `abstract_batch` the global batch shapes without touching any file (for ahead-of-time
compilation).
"""

from __future__ import annotations

import os
from typing import NoReturn

import jax
import jax.numpy as jnp
import ml_collections

from infotok_jax import distributed
from infotok_jax.data import preparation, registry, scenes_render, scenes_spec, tfds_adapter
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.data.tfds_adapter import TextLengths


def default_data_dir() -> str:
    """$TFDS_DATA_DIR if set, else TFDS's default (~/tensorflow_datasets); never inside the package.

    Datasets are read from a local path: on a pod, mount the bucket with gcsfuse and point TFDS_DATA_DIR
    at the mount (docs/training.md, "Storage").
    """
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def default_config(dataset: str = "scenes") -> ml_collections.ConfigDict:
    """Data settings for `dataset` in {"scenes", "scenes64", "fashion_mnist", "tfds:<name>"}."""
    c = ml_collections.ConfigDict()
    if dataset not in ("scenes", "scenes64", "fashion_mnist") and not dataset.startswith("tfds:"):
        raise ValueError(
            f"unknown dataset {dataset!r}; choose scenes, scenes64, fashion_mnist or tfds:<name>"
        )
    c.name = {"scenes": "scenes32", "scenes64": "scenes64"}.get(dataset, dataset)  # registry name
    c.data_dir = default_data_dir()  # where datasets are prepared (array_record)
    c.image_size = 64 if dataset == "scenes64" else 32  # images are resized to this side
    c.train_split = "train"  # split trained on
    c.eval_split = "test" if dataset == "fashion_mnist" else "validation"  # split evaluated on
    c.global_batch_size = 64  # training examples per step over all processes
    c.eval_batch_size = 64  # evaluation examples per batch over all processes
    c.caption_length = 32  # caption tokens incl. BOS/EOS
    c.question_length = 16  # question tokens incl. BOS/EOS
    c.answer_length = 8  # answer tokens incl. BOS/EOS
    c.text_vocab_size = 128  # >= the closed vocabulary size; sizes the caption bag-of-words embedding
    c.num_classes = 10 if dataset == "fashion_mnist" else 0  # label classes (0: dataset has none)
    c.nuisance = 0.5 if dataset.startswith("scenes") else 0.0  # scenes: background nuisance strength
    c.num_train = 0  # scenes: training examples to build (0 = builder default)
    c.num_eval = 0  # scenes: validation/test/holdout examples each (0 = builder default)
    c.num_threads = 2  # grain decode threads per host
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError ("config.data.<field>: ... fix") for a data block that cannot be built or read.

    Reads no file, so it runs before anything is written (and for --compile_only without the data):
    the dataset name, its builder settings, splits, batch sizes and, for registered datasets, that
    `text_vocab_size` covers the closed vocabulary. A `tfds:` dataset's presence: `check_available`.
    """

    def fail(field: str, message: str) -> NoReturn:
        raise ValueError(f"config.data.{field}: {message}")

    for field in ("global_batch_size", "eval_batch_size", "num_threads"):
        if int(c[field]) < 1:
            fail(field, f"must be >= 1, got {c[field]}")
    for field in ("num_train", "num_eval"):
        if int(c[field]) < 0:
            fail(field, f"must be >= 0 (0 = the builder default), got {c[field]}")
    if registry.is_external_tfds(c.name):
        return
    try:
        spec = registry.get_spec(c.name)
    except ValueError as e:
        fail("name", str(e))
    for field in ("train_split", "eval_split"):
        if c[field] not in spec.splits:
            fail(field, f"{c[field]!r} is not a split of {c.name}; choose one of {spec.splits}")
    if c.name.startswith("scenes"):
        if not 0.0 <= float(c.nuisance) <= 1.0:
            fail("nuisance", f"{c.nuisance} must lie in [0, 1] (the background nuisance strength)")
    elif c.nuisance:
        fail("nuisance", f"{c.nuisance}: {c.name} has no nuisance setting; set it to 0")
    vocab_size = spec.make_tokenizer().vocab_size
    if vocab_size > c.text_vocab_size:
        fail(
            "text_vocab_size",
            f"{c.text_vocab_size} is smaller than {c.name}'s vocabulary ({vocab_size} "
            f"words); use at least {vocab_size}",
        )


def check_available(c: ml_collections.ConfigDict) -> None:
    """A `tfds:` dataset must already be prepared under `data_dir` with both splits; a registered one
    must verify where it is prepared, or `data_dir` must let it be built there on first use
    (`preparation.check_usable`). Read-only. Raises ValueError ("config.data.<field>: ...")."""
    if not registry.is_external_tfds(c.name):
        try:
            preparation.check_usable(c.name, c.data_dir, **builder_kwargs(c))
        except ValueError as e:
            raise ValueError(f"config.data.data_dir: {e}") from None
        return
    for field in ("train_split", "eval_split"):
        try:
            tfds_adapter.open_source(c.name, c.data_dir, c[field])
        except FileNotFoundError as e:
            raise ValueError(f"config.data.name: {e}") from None
        except ValueError as e:
            raise ValueError(f"config.data.{field}: {e}") from None


def make_tiny(c: ml_collections.ConfigDict) -> None:
    """Shrinks the dataset build for CPU smoke tests (seconds to prepare), in its own data_dir.

    The prepared directory is named by builder config (size, nuisance), not by example counts, so a
    tiny build lives under `<data_dir>/tiny` where it can never block the full build.
    """
    if c.name.startswith("scenes"):
        c.num_train, c.num_eval = 256, 64
        c.data_dir = os.path.join(c.data_dir, "tiny")


def builder_kwargs(c: ml_collections.ConfigDict) -> dict:
    """Keyword arguments that identify the prepared dataset for `preparation.prepare`."""
    if c.name.startswith("scenes"):
        kwargs = {"nuisance": c.nuisance}
        if c.num_train:
            kwargs["num_train"] = c.num_train
        if c.num_eval:
            kwargs.update(num_validation=c.num_eval, num_test=c.num_eval, num_holdout=c.num_eval)
        return kwargs
    return {}


def ensure_prepared(c: ml_collections.ConfigDict) -> preparation.PreparedDataset | None:
    """Builds the dataset if needed (process 0 only; the other processes wait), then verifies it."""
    if c.name.startswith("tfds:"):
        return None
    if jax.process_index() == 0:
        preparation.prepare(c.name, c.data_dir, **builder_kwargs(c))
    distributed.barrier(f"prepared {c.name}")
    prepared = preparation.open_prepared(c.name, c.data_dir, **builder_kwargs(c))
    vocab_size = WordTokenizer.load(prepared.tokenizer_path).vocab_size
    if vocab_size > c.text_vocab_size:
        raise ValueError(
            f"config.data.text_vocab_size={c.text_vocab_size} is smaller than the dataset's vocabulary "
            f"({vocab_size} words); raise it"
        )
    return prepared


def _lengths(c: ml_collections.ConfigDict) -> TextLengths:
    return TextLengths(caption=c.caption_length, question=c.question_length, answer=c.answer_length)


def pipeline_args(c: ml_collections.ConfigDict, batch_size: int | None = None) -> dict:
    """The keyword arguments of `pipeline.make_pipeline` that the data block fixes (dataset, directory,
    batch size, image size, text lengths, threads); the caller adds split, mesh, seed and the order."""
    return {
        "name": c.name,
        "data_dir": c.data_dir,
        "global_batch_size": batch_size or c.global_batch_size,
        "image_size": c.image_size,
        "lengths": _lengths(c),
        "num_threads": c.num_threads,
        "dataset_kwargs": builder_kwargs(c),
    }


def abstract_batch(c: ml_collections.ConfigDict, batch_size: int | None = None) -> dict:
    """Global shapes and dtypes of one batch, without reading data."""
    b, s = batch_size or c.global_batch_size, c.image_size
    i32 = jnp.int32
    return {
        "image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
        "caption_tokens": jax.ShapeDtypeStruct((b, c.caption_length), i32),
        "question_tokens": jax.ShapeDtypeStruct((b, c.question_length), i32),
        "answer_tokens": jax.ShapeDtypeStruct((b, c.answer_length), i32),
        "question_type": jax.ShapeDtypeStruct((b,), i32),
        "label": jax.ShapeDtypeStruct((b,), i32),
        "objects": jax.ShapeDtypeStruct((b, scenes_spec.MAX_OBJECTS, 4), i32),
        "num_objects": jax.ShapeDtypeStruct((b,), i32),
        "example_id": jax.ShapeDtypeStruct((b,), i32),
        "nuisance": jax.ShapeDtypeStruct((b, scenes_render.NUISANCE_DIM), jnp.float32),
    }
