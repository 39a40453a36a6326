"""Dataset registry: maps a name to its TFDS builder, its closed-vocabulary tokenizer and its defaults.

Names:
  scenes32, scenes64   captioned scenes (kwargs: nuisance, seed, num_train, num_validation, num_test,
                       num_holdout)
  fashion_mnist        Fashion-MNIST from the Debian IDX files (kwargs: num_examples, idx_dir)
  tfds:<name>[/<cfg>]  any TFDS image dataset already prepared in array_record under data_dir by TFDS
                       itself (read through `tfds_adapter`; not built here)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow_datasets as tfds

from infotok_jax.data import fashion_mnist, scenes_builder, scenes_spec
from infotok_jax.data.text_tokenizer import WordTokenizer

TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to build one registered dataset.

    make_builder(data_dir, **kwargs) returns the TFDS builder; fingerprint(**kwargs) returns the settings
    that determine the content (stored with the prepared data so a rebuild with other settings is caught);
    make_tokenizer() returns the closed vocabulary saved beside the data.
    """

    name: str
    make_builder: Callable[..., tfds.core.DatasetBuilder]
    fingerprint: Callable[..., dict[str, Any]]
    make_tokenizer: Callable[[], WordTokenizer]
    image_size: int
    splits: tuple[str, ...]


def _scenes_kwargs(
    nuisance: float = 0.0,
    seed: int = 0,
    num_train: int | None = None,
    num_validation: int | None = None,
    num_test: int | None = None,
    num_holdout: int | None = None,
) -> dict[str, Any]:
    counts = dict(scenes_builder.DEFAULT_COUNTS)
    given = {"train": num_train, "validation": num_validation, "test": num_test, "holdout": num_holdout}
    counts.update({k: int(v) for k, v in given.items() if v is not None})
    return {"nuisance": round(float(nuisance), 2), "seed": int(seed), "num_examples": counts}


def _scenes_spec(image_size: int) -> DatasetSpec:
    def make_builder(data_dir: str, **kwargs) -> tfds.core.DatasetBuilder:
        kw = _scenes_kwargs(**kwargs)
        return scenes_builder.InfotokScenes(
            data_dir=data_dir,
            config=scenes_builder.config_for(image_size, kw["nuisance"]),
            seed=kw["seed"],
            num_examples=kw["num_examples"],
            file_format="array_record",
        )

    def fingerprint(**kwargs) -> dict[str, Any]:
        return {"image_size": image_size, **_scenes_kwargs(**kwargs)}

    return DatasetSpec(
        name=f"scenes{image_size}",
        make_builder=make_builder,
        fingerprint=fingerprint,
        make_tokenizer=lambda: WordTokenizer(scenes_spec.vocabulary()),
        image_size=image_size,
        splits=scenes_spec.SPLITS,
    )


def _fashion_spec() -> DatasetSpec:
    def make_builder(
        data_dir: str, num_examples: int | None = None, idx_dir: str = fashion_mnist.DEFAULT_IDX_DIR
    ) -> tfds.core.DatasetBuilder:
        return fashion_mnist.InfotokFashionMnist(
            data_dir=data_dir, idx_dir=idx_dir, num_examples=num_examples, file_format="array_record"
        )

    def fingerprint(num_examples: int | None = None, idx_dir: str = fashion_mnist.DEFAULT_IDX_DIR):
        del idx_dir  # where the files are does not change the content
        return {"num_examples": None if num_examples is None else int(num_examples)}

    captions = [fashion_mnist.class_caption(i) for i in range(len(fashion_mnist.CLASS_NAMES))]
    return DatasetSpec(
        name="fashion_mnist",
        make_builder=make_builder,
        fingerprint=fingerprint,
        make_tokenizer=lambda: WordTokenizer.from_texts(captions),
        image_size=28,
        splits=("train", "test"),
    )


REGISTRY: dict[str, DatasetSpec] = {
    "scenes32": _scenes_spec(32),
    "scenes64": _scenes_spec(64),
    "fashion_mnist": _fashion_spec(),
}


def is_external_tfds(name: str) -> bool:
    """True for 'tfds:<name>' datasets prepared by TFDS itself."""
    return name.startswith(TFDS_PREFIX)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; unknown names raise with the list of valid names."""
    if name not in REGISTRY:
        raise ValueError(
            f"unknown dataset name {name!r}; registered names are {sorted(REGISTRY)}, or "
            f"'{TFDS_PREFIX}<tfds name>[/<config>]' for a dataset TFDS prepared in array_record format"
        )
    return REGISTRY[name]


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raises TypeError naming the arguments a dataset does not accept."""
    spec = get_spec(name)
    try:
        spec.fingerprint(**kwargs)
    except TypeError as e:
        raise TypeError(f"dataset {name!r}: bad builder arguments {sorted(kwargs)}: {e}") from None
