"""TFDS builder for the captioned-scenes dataset (array_record, no TensorFlow needed).

Configs fix the image size (32 or 64) and the nuisance strength (0, 0.5 and 1 are predefined; any value in
[0, 1] gets a config built on the fly). Example counts and the seed are constructor arguments so tests
can build tiny versions; every example depends only on (seed, split, index).

Features per example: image (PNG), caption, questions/answers (all QA pairs of the scene) with their
question_types, objects int32 (3, 4) = (shape, color, size, cell) padded with -1, num_objects, index,
and nuisance float32 (75,): the background field the generator drew, times the strength (all 0 at
strength 0; `scenes_render.background_and_field`), so the tokens' dependence on it can be measured.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.data.builder_base import LocalGeneratorBuilder, png_bytes

DEFAULT_COUNTS = {"train": 20_000, "validation": 2_000, "test": 2_000, "holdout": 2_000}


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
    """Image side length and nuisance strength in [0, 1]."""

    image_size: int = 32
    nuisance: float = 0.0


def _make_config(image_size: int, nuisance: float) -> ScenesConfig:
    scenes_render.check_image_size(image_size)
    if not 0.0 <= float(nuisance) <= 1.0:
        raise ValueError(f"nuisance={nuisance} must lie in [0, 1]")
    level = int(round(float(nuisance) * 100))
    return ScenesConfig(
        name=f"{image_size}x{image_size}_n{level:03d}",
        description=f"{image_size}x{image_size} scenes, background nuisance strength {level / 100:.2f}",
        image_size=int(image_size),
        nuisance=level / 100,
    )


def config_for(image_size: int, nuisance: float) -> ScenesConfig:
    """Config named like '32x32_n050' (nuisance in hundredths); the predefined object when there is one."""
    cfg = _make_config(image_size, nuisance)
    predefined = {c.name: c for c in InfotokScenes.BUILDER_CONFIGS}
    return predefined.get(cfg.name, cfg)


class InfotokScenes(LocalGeneratorBuilder):
    """Procedurally rendered scenes of 1-3 objects with captions, QA pairs and attributes."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Per-example nuisance features (same images)."}
    BUILDER_CONFIGS = [_make_config(s, n) for s in scenes_render.SUPPORTED_SIZES for n in (0.0, 0.5, 1.0)]

    def __init__(self, *, seed: int = 0, num_examples: dict[str, int] | None = None, **kwargs):
        counts = dict(DEFAULT_COUNTS)
        unknown = set(num_examples or {}) - set(counts)
        if unknown:
            raise ValueError(
                f"num_examples has unknown splits {sorted(unknown)}; valid: {scenes_spec.SPLITS}"
            )
        counts.update(num_examples or {})
        if any(int(n) < 1 for n in counts.values()):
            raise ValueError(f"num_examples must be >= 1 per split; got {counts}")
        self._counts = {k: int(v) for k, v in counts.items()}
        self._seed = int(seed)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            disable_shuffling=True,  # record i of a split is example i (builds are prefixes)
            description="Captioned 3x3-grid scenes with a compositional holdout (infotok_jax).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "questions": tfds.features.Sequence(tfds.features.Text()),
                    "answers": tfds.features.Sequence(tfds.features.Text()),
                    "question_types": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "objects": tfds.features.Tensor(shape=(scenes_spec.MAX_OBJECTS, 4), dtype=np.int32),
                    "num_objects": tfds.features.Scalar(dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "nuisance": tfds.features.Tensor(shape=(scenes_render.NUISANCE_DIM,), dtype=np.float32),
                }
            ),
            metadata=tfds.core.MetadataDict(
                seed=self._seed,
                num_examples=self._counts,
                holdout_pairs=sorted(scenes_spec.HOLDOUT_PAIRS),
                shapes=scenes_spec.SHAPES,
                colors=scenes_spec.COLORS,
                sizes=scenes_spec.SIZES,
                question_types=scenes_spec.QUESTION_TYPES,
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated locally
        return {split: self._generate_examples(split) for split in scenes_spec.SPLITS}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        for i in range(self._counts[split]):
            ex = scenes_render.render_example(self._seed, split, i, cfg.image_size, cfg.nuisance)
            yield (
                i,
                {
                    "image": png_bytes(ex["image"]),
                    "caption": ex["caption"],
                    "questions": [q for q, _, _ in ex["qa"]],
                    "answers": [a for _, a, _ in ex["qa"]],
                    "question_types": np.array([t for _, _, t in ex["qa"]], np.int32),
                    "objects": scenes_spec.objects_to_array(ex["objects"]),
                    "num_objects": np.int32(len(ex["objects"])),
                    "index": np.int64(i),
                    "nuisance": ex["nuisance"].astype(np.float32),
                },
            )
