"""Fashion-MNIST builder from the Debian IDX files, and the generic TFDS adapter on small local datasets."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from infotok_jax import data, sharding
from infotok_jax.data import fashion_mnist
from infotok_jax.data.builder_base import LocalGeneratorBuilder, offline_download_config, png_bytes
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.data.tfds_adapter import to_float_image

IDX = fashion_mnist.DEFAULT_IDX_DIR
needs_idx = pytest.mark.skipif(not os.path.exists(IDX), reason="apt-get install -y dataset-fashion-mnist")


def _idx_reference(name, offset, count, item):
    """Independent reader: IDX body starts after a 16 (images) or 8 (labels) byte header."""
    with gzip.open(os.path.join(IDX, name)) as f:
        raw = np.frombuffer(f.read(), np.uint8)
    return raw[offset : offset + count * item]


@needs_idx
def test_fashion_mnist_records_match_the_idx_files(tmp_path):
    prepared = data.prepare("fashion_mnist", str(tmp_path), num_examples=24)
    assert prepared.num_examples == {"train": 24, "test": 24}
    src = tfds.builder_from_directory(prepared.path).as_data_source(split="test")
    images = _idx_reference("t10k-images-idx3-ubyte.gz", 16, 24, 784).reshape(24, 28, 28)
    labels = _idx_reference("t10k-labels-idx1-ubyte.gz", 8, 24, 1)
    for i in range(24):
        np.testing.assert_array_equal(src[i]["image"][:, :, 0], images[i])
        assert src[i]["label"] == labels[i]
    mesh = sharding.make_mesh((8, 1, 1))
    batch = next(
        data.make_pipeline(
            "fashion_mnist",
            str(tmp_path),
            "test",
            8,
            mesh,
            shuffle=False,
            image_size=28,
            dataset_kwargs=dict(num_examples=24),
        )
    )
    tok = WordTokenizer.load(prepared.tokenizer_path)
    np.testing.assert_array_equal(np.asarray(batch["label"]), labels[:8])
    img = np.asarray(batch["image"])
    np.testing.assert_allclose(img[..., 1], images[:8] / 255.0, atol=1e-6)  # gray copied to RGB
    assert tok.decode(np.asarray(batch["caption_tokens"])[0]) == fashion_mnist.class_caption(int(labels[0]))
    assert np.all(np.asarray(batch["question_type"]) == -1) and np.all(np.asarray(batch["objects"]) == -1)


def test_missing_idx_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.prepare("fashion_mnist", str(tmp_path / "d"), idx_dir=str(tmp_path / "nothing"))
    assert not os.path.exists(data.dataset_path("fashion_mnist", str(tmp_path / "d")))


def test_adapter_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        to_float_image(np.zeros((8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match=r"\(H, W, 1\|3\)"):
        to_float_image(np.zeros((8, 8, 4), np.uint8), 8)


def test_class_captions():
    assert fashion_mnist.class_caption(9) == "a photo of an ankle boot"
    assert fashion_mnist.class_caption(3) == "a photo of a dress"


class TinyLabeled(LocalGeneratorBuilder, skip_registration=True):
    """Label-only gray images of a non-square size (like cifar10/imagenet: image + label)."""

    VERSION = tfds.core.Version("2.0.1")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(20, 24, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["ankle_boot", "cat", "egg"]),
            }
        )
        return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for i in range(12):
            yield i, {"image": png_bytes(rng.integers(0, 256, (20, 24, 1), dtype=np.uint8)), "label": i % 3}


class TinyCaptions(LocalGeneratorBuilder, skip_registration=True):
    """coco_captions-like: RGB image + a sequence of {text, id} captions, no label."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "captions": tfds.features.Sequence({"text": tfds.features.Text(), "id": np.int64}),
            }
        )
        return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=features)

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        for i in range(6):
            img = np.full((16 + i, 16, 3), 40 * i, np.uint8)
            yield (
                i,
                {
                    "image": png_bytes(img),
                    "captions": {"text": [f"picture number {i}", "other"], "id": [i, 100 + i]},
                },
            )


def test_generic_adapter_on_locally_built_tfds_datasets(tmp_path):
    d = str(tmp_path)
    for cls in (TinyLabeled, TinyCaptions):
        builder = cls(data_dir=d, file_format="array_record")
        builder.download_and_prepare(download_config=offline_download_config())
    mesh = sharding.make_mesh((4, 1, 2))
    pipe = data.make_pipeline("tfds:tiny_labeled", d, "train", 4, mesh, shuffle=False, image_size=32)
    batch = next(pipe)
    src = tfds.builder_from_directory(os.path.join(d, "tiny_labeled", "2.0.1")).as_data_source(split="train")
    crop = src[0]["image"][:, 2:22, 0]  # independent center crop 20x24 -> 20x20, then bilinear resize
    want = np.asarray(Image.fromarray(crop).resize((32, 32), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(np.asarray(batch["image"])[0, :, :, 2], want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(batch["label"]), [0, 1, 2, 0])
    assert pipe.tokenizer.decode(np.asarray(batch["caption_tokens"])[0]) == "a photo of an ankle boot"
    with pytest.raises(ValueError, match="pass tokenizer="):
        data.make_pipeline("tfds:tiny_captions", d, "validation", 2, None, image_size=16)
    tok = WordTokenizer.from_texts([f"picture number {i}" for i in range(6)])
    with pytest.raises(ValueError, match="pass image_size="):
        data.make_pipeline("tfds:tiny_captions", d, "validation", 2, None, tokenizer=tok)
    caps = list(data.iterate_numpy("tfds:tiny_captions", d, "validation", 3, image_size=16, tokenizer=tok))
    decoded = [tok.decode(c) for b in caps for c in b["caption_tokens"]]
    assert decoded == [f"picture number {i}" for i in range(6)]
    assert caps[1]["image"].shape == (3, 16, 16, 3) and np.all(caps[0]["label"] == -1)
    np.testing.assert_allclose(caps[1]["image"][2], 200 / 255.0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="array_record"):
        data.make_pipeline("tfds:cifar10", d, "train", 2, None, image_size=32)
