"""Oracle-scored text-to-image generation of any `generate_fn`, with a Monte-Carlo chance level.

The model is a plain callable `generate_fn(caption_tokens_BxLc, key)` returning images (B, S, S, 3) in
[0, 1] (numpy or jax, uint8 or float; a dict with an "images" entry, as the hosts return, is accepted).
Every generated image is scored by `scene_oracle.score_batch` against the objects its caption describes:
per-attribute accuracy over requested objects (shape, color, size, position = an object found in the
requested cell), count accuracy and the all-correct rate over images.

Chance: how often an *unrelated real scene* passes the oracle for a prompt. The ground-truth images of the
evaluated batches are paired with the prompts through a random cyclic permutation (no scene is paired with
its own prompt) and scored like generations; `chance_draws` permutations are averaged. This is the rate a
generator reaches by emitting plausible scenes that ignore the caption.

Keys: split(key) -> (generation, chance); batch b, sample s uses fold_in(fold_in(generation, b), s); chance
draw d uses fold_in(chance, d). So results are a pure function of (generate_fn, data, key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from infotok_jax.data import scene_oracle, scenes_spec
from infotok_jax.data.text_tokenizer import TextTokenizer
from infotok_jax.evaluate.reconstruction import Batch, as_images, take_batches
from infotok_jax.evaluate.understanding import decode_text

PER_OBJECT = ("shape_correct", "color_correct", "size_correct", "position_correct")
PER_IMAGE = ("count_correct", "all_correct")
METRICS = PER_OBJECT + PER_IMAGE
_CHANCE_CHUNK = 256


def derangement(key: jax.Array, n: int) -> np.ndarray:
    """A random cyclic permutation of range(n) (one n-cycle), so perm[i] != i for every i; needs n >= 2."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2 items; got n={n} (evaluate more prompts)")
    order = np.asarray(jax.random.permutation(key, n))
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, -1)
    return perm


class _Tally:
    """Running sums of oracle outcomes: per requested object and per image."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(METRICS, 0)
        self.num_objects = 0
        self.num_images = 0

    def add(self, scores: dict[str, np.ndarray]) -> None:
        valid = scores["valid"]
        for name in PER_OBJECT:
            self.sums[name] += int((scores[name] & valid).sum())
        for name in PER_IMAGE:
            self.sums[name] += int(scores[name].sum())
        self.num_objects += int(valid.sum())
        self.num_images += int(valid.shape[0])

    def rates(self, prefix: str = "") -> dict[str, float]:
        out = {}
        for name in METRICS:
            denominator = self.num_objects if name in PER_OBJECT else self.num_images
            out[prefix + name] = self.sums[name] / denominator if denominator else float("nan")
        return out


def _images_of(output: Any) -> Any:
    return output["images"] if isinstance(output, dict) else output


def evaluate_generation(
    generate_fn: Callable[[np.ndarray, jax.Array], Any],
    batches: Iterable[Batch],
    key: jax.Array,
    image_size: int,
    max_batches: int | None = None,
    samples_per_prompt: int = 1,
    tokenizer: TextTokenizer | None = None,
    num_examples: int = 16,
    chance_draws: int = 1,
) -> dict[str, Any]:
    """Oracle accuracy of images generated from the captions of scene `batches`, and its chance level.

    Args:
      generate_fn: (caption_tokens (B, Lc) int32, key) -> images (B, image_size, image_size, 3) in [0, 1].
      batches: numpy scene batches with caption_tokens, objects and image fields.
      key: PRNG key; everything is deterministic given it.
      image_size: side of the generated and ground-truth images (an oracle size: 32 or 64).
      max_batches: evaluate at most this many batches (required for endless pipelines).
      samples_per_prompt: images generated (and scored) per caption, each with its own key.
      tokenizer: decodes captions for the examples; without it the caption is rebuilt from the objects.
      num_examples: how many (image, caption, all_correct) examples of the first sample to keep.
      chance_draws: random pairings of prompts with other real scenes averaged into the chance level.

    Returns:
      shape_correct, color_correct, size_correct, position_correct (fractions of requested objects),
      count_correct, all_correct (fractions of generated images), the same names prefixed with chance_,
      num_prompts, num_images, num_objects, and "examples": dicts {image, caption, all_correct}.
    """
    if samples_per_prompt < 1 or chance_draws < 1:
        raise ValueError(f"samples_per_prompt={samples_per_prompt} and chance_draws={chance_draws} "
                         "must both be >= 1")
    gen_key, chance_key = jax.random.split(key)
    tally, truth_images, truth_objects, examples = _Tally(), [], [], []
    for b, batch in enumerate(take_batches(batches, max_batches)):
        objects_BxOx4 = np.asarray(batch["objects"], np.int32)
        if np.any(objects_BxOx4[:, 0, 0] < 0):
            raise ValueError("batch has examples without scene objects (objects == -1); generation is "
                             "scored by the scene oracle and needs a scenes dataset")
        captions = np.asarray(batch["caption_tokens"], np.int32)
        shape = (captions.shape[0], image_size, image_size, 3)
        truth_images.append(as_images(batch["image"], "batch['image']", shape))
        truth_objects.append(objects_BxOx4)
        batch_key = jax.random.fold_in(gen_key, b)
        for s in range(samples_per_prompt):
            out = _images_of(generate_fn(captions, jax.random.fold_in(batch_key, s)))
            images = as_images(out, "generate_fn", shape)
            scores = scene_oracle.score_batch(images, objects_BxOx4, image_size)
            tally.add(scores)
            keep = min(shape[0], num_examples - len(examples)) if s == 0 else 0
            for i in range(keep):
                text = (decode_text(tokenizer, captions[i]) if tokenizer is not None else
                        scenes_spec.caption(scenes_spec.array_to_objects(objects_BxOx4[i])))
                examples.append({"image": images[i], "caption": text,
                                 "all_correct": bool(scores["all_correct"][i])})
    if not truth_images:
        raise ValueError("batches yielded no batch; nothing to evaluate")
    all_images, all_objects = np.concatenate(truth_images), np.concatenate(truth_objects)
    chance = _Tally()
    for d in range(chance_draws):
        perm = derangement(jax.random.fold_in(chance_key, d), all_images.shape[0])
        for start in range(0, perm.size, _CHANCE_CHUNK):
            rows = slice(start, start + _CHANCE_CHUNK)
            chance.add(scene_oracle.score_batch(all_images[perm[rows]], all_objects[rows], image_size))
    return {**tally.rates(), **chance.rates("chance_"), "num_prompts": int(all_images.shape[0]),
            "num_images": tally.num_images, "num_objects": tally.num_objects, "examples": examples}
