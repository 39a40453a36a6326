"""Generic adapter: any TFDS image dataset in array_record (with a label or a caption) -> one example format.

`open_source` opens a split as a random-access `tfds.data_source` (no TensorFlow) for a registered name
(verified through `preparation`) or for `tfds:<name>[/<config>]`, a dataset TFDS itself prepared under
`data_dir` (cifar10, coco_captions, imagenet2012 on a pod). `RecordAdapter` turns one decoded record into:

  image            float32 (S, S, 3) in [0, 1]  (gray -> RGB; center crop + bilinear resize if needed)
  caption_tokens   int32 (Lc,)  BOS ... EOS, pad 0: the record's caption, its first caption, or
                   "a photo of a <class name>" from the label
  question_tokens  int32 (Lq,), answer_tokens int32 (La,), question_type int32 (): one QA pair picked by
                   `qa_key` among the record's pairs (scenes); pads and -1 without QA
  label            int32 (): class id or -1;   objects int32 (3, 4), num_objects int32 (): scenes, else -1
  nuisance         float32 (75,): the scene background's drawn field (scenes >= 1.1.0), else zeros
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from infotok_jax.data import preparation, registry, scenes_render, scenes_spec
from infotok_jax.data.text_tokenizer import TextTokenizer, WordTokenizer, batch_encode

FIELDS = (
    "image",
    "caption_tokens",
    "question_tokens",
    "answer_tokens",
    "question_type",
    "label",
    "objects",
    "num_objects",
    "nuisance",
)


@dataclasses.dataclass(frozen=True)
class TextLengths:
    """Fixed token lengths (BOS and EOS included) of caption, question and answer."""

    caption: int = 32
    question: int = 16
    answer: int = 8


DEFAULT_LENGTHS = TextLengths()


@dataclasses.dataclass
class OpenedSource:
    """A random-access split plus what is needed to adapt its records."""

    source: Any
    tokenizer: TextTokenizer
    class_names: tuple[str, ...] | None
    native_image_size: int | None
    path: str


def _find_tfds_dir(tfds_name: str, data_dir: str) -> str:
    """Latest version directory of `<data_dir>/<name>[/<config>]/<version>/` holding dataset_info.json."""
    base = os.path.join(data_dir, *tfds_name.split("/"))
    if not os.path.isdir(base):
        raise FileNotFoundError(
            f"no TFDS dataset at {base}; prepare it with TFDS in array_record format, e.g. "
            f"tfds.builder('{tfds_name}', data_dir='{data_dir}', file_format='array_record')"
            ".download_and_prepare()"
        )
    versions = [
        v
        for v in os.listdir(base)
        if os.path.exists(os.path.join(base, v, "dataset_info.json")) and v[0].isdigit()
    ]
    if not versions:
        raise FileNotFoundError(
            f"{base} holds no prepared version (no <version>/dataset_info.json); "
            "for a dataset with configs name it as tfds:<name>/<config>"
        )
    best = max(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    return os.path.join(base, best)


def open_source(
    name: str, data_dir: str, split: str, tokenizer: TextTokenizer | None = None, **builder_kwargs
) -> OpenedSource:
    """Opens `split` of a prepared dataset; the tokenizer defaults to the one saved beside the data."""
    if registry.is_external_tfds(name):
        path = _find_tfds_dir(name[len(registry.TFDS_PREFIX) :], data_dir)
    else:
        path = preparation.open_prepared(name, data_dir, **builder_kwargs).path
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise ValueError(f"split={split!r} is not in {path}; available: {sorted(builder.info.splits)}")
    features = builder.info.features
    label = features["label"] if "label" in features else None
    class_names = tuple(label.names) if isinstance(label, tfds.features.ClassLabel) else None
    if tokenizer is None:
        tok_path = os.path.join(path, preparation.TOKENIZER_FILE)
        if os.path.exists(tok_path):
            tokenizer = WordTokenizer.load(tok_path)
        elif class_names is not None:
            tokenizer = WordTokenizer.from_texts(class_caption(n) for n in class_names)
        else:
            raise ValueError(
                f"{path} has no {preparation.TOKENIZER_FILE} and no class labels; pass "
                "tokenizer= (any TextTokenizer, e.g. a sentencepiece wrapper)"
            )
    shape = getattr(features["image"], "shape", None) if "image" in features else None
    if shape is None:
        raise ValueError(f"{path} has no 'image' feature; the adapter needs one")
    native = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
    source = builder.as_data_source(split=split)
    return OpenedSource(source, tokenizer, class_names, native, path)


def class_caption(class_name: str) -> str:
    """'a photo of a cat' / 'a photo of an ankle boot' (underscores become spaces)."""
    name = class_name.replace("_", " ").lower()
    return f"a photo of {'an' if name[:1] in tuple('aeiou') else 'a'} {name}"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_float_image(image: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (H, W, 1|3) -> float32 (S, S, 3) in [0, 1], center-cropped and resized when needed."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"record image must be uint8 (H, W, 1|3); got {arr.dtype} {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    h, w = arr.shape[:2]
    if (h, w) != (image_size, image_size):
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        pil = Image.fromarray(arr[top : top + side, left : left + side])
        arr = np.asarray(pil.resize((image_size, image_size), Image.BILINEAR))
    return arr.astype(np.float32) / np.float32(255.0)


class RecordAdapter:
    """Maps decoded TFDS records to the example format of this module's docstring."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        image_size: int,
        lengths: TextLengths = DEFAULT_LENGTHS,
        class_names: tuple[str, ...] | None = None,
        truncate_captions: bool = True,
    ):
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.lengths = lengths
        self.class_names = class_names
        self.truncate_captions = truncate_captions

    def caption(self, record: dict[str, Any]) -> str:
        """Caption text: 'caption', else the first of 'captions', else the class caption, else ''."""
        if "caption" in record:
            return _text(record["caption"])
        caps = record.get("captions")
        if isinstance(caps, dict):
            caps = caps.get("text")
        if caps is not None and len(caps):
            return _text(caps[0])
        if "label" in record and self.class_names is not None:
            return class_caption(self.class_names[int(record["label"])])
        return ""

    def __call__(self, record: dict[str, Any], qa_key: int = 0) -> dict[str, np.ndarray]:
        """One example; `qa_key` picks the QA pair (index qa_key mod number of pairs)."""
        tok, ln = self.tokenizer, self.lengths
        questions = record.get("questions")
        if questions is not None and len(questions):
            k = int(qa_key) % len(questions)
            q_tokens = batch_encode(tok, [_text(questions[k])], ln.question)[0]
            a_tokens = batch_encode(tok, [_text(record["answers"][k])], ln.answer)[0]
            q_type = np.int32(record["question_types"][k])
        else:
            q_tokens = np.zeros((ln.question,), np.int32)
            a_tokens = np.zeros((ln.answer,), np.int32)
            q_type = np.int32(-1)
        objects = record.get("objects")
        if isinstance(objects, np.ndarray) and objects.shape == (scenes_spec.MAX_OBJECTS, 4):
            objects_Ox4 = objects.astype(np.int32)
            num_objects = np.int32(record["num_objects"])
        else:
            objects_Ox4 = np.full((scenes_spec.MAX_OBJECTS, 4), -1, np.int32)
            num_objects = np.int32(-1)
        return {
            "image": to_float_image(record["image"], self.image_size),
            "caption_tokens": batch_encode(tok, [self.caption(record)], ln.caption, self.truncate_captions)[
                0
            ],
            "question_tokens": q_tokens,
            "answer_tokens": a_tokens,
            "question_type": q_type,
            "label": np.int32(record["label"]) if "label" in record else np.int32(-1),
            "objects": objects_Ox4,
            "num_objects": num_objects,
            "nuisance": _nuisance(record),
        }


def _nuisance(record: dict[str, Any]) -> np.ndarray:
    """The record's nuisance features (NUISANCE_DIM,) float32, zeros when it has none."""
    value = record.get("nuisance")
    if value is None:
        return np.zeros((scenes_render.NUISANCE_DIM,), np.float32)
    return np.asarray(value, np.float32).reshape(scenes_render.NUISANCE_DIM)
