"""TFDS builder for Fashion-MNIST read from the IDX files of the Debian package `dataset-fashion-mnist`.

70k real 28x28 grayscale images (60k train, 10k test) in 10 classes, with class captions such as
"a photo of an ankle boot", for tokenizer reconstruction on real images. Nothing is downloaded: the
files come from `apt-get install -y dataset-fashion-mnist` (under /usr/share/datasets/fashion-mnist/).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from infotok_jax.data.builder_base import LocalGeneratorBuilder, png_bytes

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def class_caption(label: int) -> str:
    """'a photo of a dress' / 'a photo of an ankle boot'."""
    name = CLASS_NAMES[label]
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def _read_idx(path: str, expected_ndim: int) -> np.ndarray:
    """Parses a gzipped IDX file (big-endian header: magic, dims) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if (magic >> 8) != 0x08 or ndim != expected_ndim:  # 0x08 = unsigned byte
        raise ValueError(f"{path} is not a uint8 IDX file with {expected_ndim} dims (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {body.size} values")
    return body.reshape(dims)


def check_files(idx_dir: str, split: str) -> list[str]:
    """Paths of the (images, labels) files of a split; raises with the install command if missing."""
    if split not in _FILES:
        raise ValueError(f"split={split!r} is unknown; use one of {sorted(_FILES)}")
    paths = [os.path.join(idx_dir, name) for name in _FILES[split]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found: {missing}. Install them with "
            "`apt-get install -y dataset-fashion-mnist` (puts them in /usr/share/datasets/fashion-mnist), "
            "or pass idx_dir= pointing at a directory holding them."
        )
    return paths


def read_split(idx_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of 'train' or 'test'; clear error if not installed."""
    paths = check_files(idx_dir, split)
    images = _read_idx(paths[0], 3)
    labels = _read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels in {idx_dir}")
    return images, labels


class InfotokFashionMnist(LocalGeneratorBuilder):
    """Fashion-MNIST from local IDX files, with class captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, idx_dir: str = DEFAULT_IDX_DIR, num_examples: int | None = None, **kwargs):
        if num_examples is not None and int(num_examples) < 1:
            raise ValueError(f"num_examples={num_examples} must be >= 1 (a per-split cap) or None for all")
        self._idx_dir = str(idx_dir)
        self._cap = None if num_examples is None else int(num_examples)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            disable_shuffling=True,  # record i of a split is example i (builds are prefixes)
            description="Fashion-MNIST (Zalando, MIT) from dataset-fashion-mnist IDX files, class captions.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    "caption": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(num_examples_cap=self._cap),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # read from local files only
        for split in _FILES:  # fail before any writing when the package is missing
            check_files(self._idx_dir, split)
        return {split: self._generate_examples(split) for split in _FILES}

    def _generate_examples(self, split: str):
        images, labels = read_split(self._idx_dir, split)
        n = images.shape[0] if self._cap is None else min(self._cap, images.shape[0])
        for i in range(n):
            label = int(labels[i])
            image = png_bytes(images[i][:, :, None])
            yield i, {"image": image, "label": label, "caption": class_caption(label)}
