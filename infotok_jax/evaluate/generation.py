"""Oracle-scored text-to-image generation of any `generate_fn`, next to empirical floors and a reference:
the oracle on the tokenizer's reconstructions.

The model is a plain callable `generate_fn(caption_tokens_BxLc, key)` returning images (B, S, S, 3) in
[0, 1] (numpy or jax, uint8 or float; a dict with an "images" entry, as the hosts return, is accepted).
Every generated image is scored by `scene_oracle.score_batch` against the objects its caption describes:
per-attribute accuracy over requested objects (shape, color, size, position = an object found in the
requested cell), count accuracy and the all-correct rate over images.

Headline numbers are all_correct, color_correct and count_correct. The other per-attribute scores are
NOT skill measures on their own: uniform noise makes the oracle see an object in every cell, so noise
scores position 1.0, shape ~0.26 and size ~0.5. Every score is therefore reported beside:
  floor_noise_*   the oracle on uniform-noise images for the same prompts (what garbage scores);
  floor_other_*   the oracle on the ground-truth renders of OTHER prompts (a random cyclic permutation,
                  no scene paired with its own prompt; `other_draws` permutations averaged): what a
                  generator scores by emitting plausible scenes that ignore the caption;
  ceiling_recon_* the oracle on reconstruct_fn(true image) of the same prompts (only with
                  `reconstruct_fn`): a host that generates through the tokenizer cannot expect to pass
                  the oracle more often than the tokenizer's own reconstructions of the true images do;
  truth_*         the oracle on the true images (1.0 up to oracle errors; a check of the oracle).

Keys: split(key, 3) -> (generation, other, noise); batch b, sample s uses fold_in(fold_in(generation, b),
s); permutation d uses fold_in(other, d); batch b's noise uses fold_in(noise, b). So results are a pure
function of (generate_fn, reconstruct_fn, data, key).
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
HEADLINE = ("all_correct", "color_correct", "count_correct")  # robust to noise: see the module docstring
METRICS = HEADLINE + ("shape_correct", "size_correct", "position_correct")
REFERENCES = ("floor_noise_", "floor_other_", "ceiling_recon_", "truth_")  # prefixes of the reference rates
_CHUNK = 256


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
        self.nonfinite = False  # a scored image held NaN/Inf: every rate is NaN, not a count of misses

    def add_images(self, images: np.ndarray, objects_BxOx4: np.ndarray, image_size: int) -> dict:
        """Scores float images with the oracle; non-finite images mark the tally instead (rates NaN)."""
        scores = scene_oracle.score_batch(images, objects_BxOx4, image_size)
        self.nonfinite |= not bool(np.all(np.isfinite(images)))
        self.add(scores)
        return scores

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
            defined = denominator and not self.nonfinite
            out[prefix + name] = self.sums[name] / denominator if defined else float("nan")
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
    other_draws: int = 1,
    reconstruct_fn: Callable[[np.ndarray], Any] | None = None,
) -> dict[str, Any]:
    """Oracle accuracy of images generated from the captions of scene `batches`, with floors and the
    reconstruction reference.

    Args:
      generate_fn: (caption_tokens (B, Lc) int32, key) -> images (B, image_size, image_size, 3) in [0, 1].
      batches: numpy scene batches with caption_tokens, objects and image fields.
      key: PRNG key; everything is deterministic given it.
      image_size: side of the generated and ground-truth images (an oracle size: 32 or 64).
      max_batches: evaluate at most this many batches (required for endless pipelines).
      samples_per_prompt: images generated (and scored) per caption, each with its own key.
      tokenizer: decodes captions for the examples; without it the caption is rebuilt from the objects.
      num_examples: how many (image, caption, all_correct) examples of the first sample to keep.
      other_draws: random pairings of prompts with other real scenes averaged into floor_other_*.
      reconstruct_fn: the tokenizer round trip, float32 images (B, S, S, 3) -> images of the same shape;
        gives the ceiling_recon_* rates (left out without it).

    Returns:
      all_correct, color_correct, count_correct (headline), shape_correct, size_correct, position_correct
      (per-object attributes are fractions of requested objects, the rest fractions of images), the same
      names prefixed with floor_noise_, floor_other_, truth_ and (with reconstruct_fn) ceiling_recon_,
      num_prompts, num_images, num_objects, and "examples": dicts {image, caption, all_correct}.
      Rates are NaN when an image they score (generated or reconstructed) holds NaN or Inf: a diverged
      model reads as undefined, not as 0.0.
    """
    if samples_per_prompt < 1 or other_draws < 1:
        raise ValueError(
            f"samples_per_prompt={samples_per_prompt} and other_draws={other_draws} must both be >= 1"
        )
    gen_key, other_key, noise_key = jax.random.split(key, 3)
    tally, noise, truth, ceiling = _Tally(), _Tally(), _Tally(), _Tally()
    truth_images, truth_objects, examples = [], [], []
    for b, batch in enumerate(take_batches(batches, max_batches)):
        objects_BxOx4 = np.asarray(batch["objects"], np.int32)
        if np.any(objects_BxOx4[:, 0, 0] < 0):
            raise ValueError(
                "batch has examples without scene objects (objects == -1); generation is "
                "scored by the scene oracle and needs a scenes dataset"
            )
        captions = np.asarray(batch["caption_tokens"], np.int32)
        shape = (captions.shape[0], image_size, image_size, 3)
        true_images = as_images(batch["image"], "batch['image']", shape)
        if not np.all(np.isfinite(true_images)):
            raise ValueError("batch['image'] holds NaN or Inf values; check the dataset")
        truth_images.append(true_images)
        truth_objects.append(objects_BxOx4)
        truth.add(scene_oracle.score_batch(true_images, objects_BxOx4, image_size))
        noise_images = np.asarray(jax.random.uniform(jax.random.fold_in(noise_key, b), shape))
        noise.add(scene_oracle.score_batch(noise_images, objects_BxOx4, image_size))
        if reconstruct_fn is not None:
            recon = as_images(reconstruct_fn(true_images), "reconstruct_fn", shape)
            ceiling.add_images(recon, objects_BxOx4, image_size)
        batch_key = jax.random.fold_in(gen_key, b)
        for s in range(samples_per_prompt):
            out = _images_of(generate_fn(captions, jax.random.fold_in(batch_key, s)))
            images = as_images(out, "generate_fn", shape)
            scores = tally.add_images(images, objects_BxOx4, image_size)
            keep = min(shape[0], num_examples - len(examples)) if s == 0 else 0
            for i in range(keep):
                text = (
                    decode_text(tokenizer, captions[i])
                    if tokenizer is not None
                    else scenes_spec.caption(scenes_spec.array_to_objects(objects_BxOx4[i]))
                )
                examples.append(
                    {"image": images[i], "caption": text, "all_correct": bool(scores["all_correct"][i])}
                )
    if not truth_images:
        raise ValueError("batches yielded no batch; nothing to evaluate")
    all_images, all_objects = np.concatenate(truth_images), np.concatenate(truth_objects)
    other = other_renders_tally(all_images, all_objects, other_key, other_draws, image_size)
    out = {
        **tally.rates(),
        **noise.rates("floor_noise_"),
        **other.rates("floor_other_"),
        **truth.rates("truth_"),
    }
    if reconstruct_fn is not None:
        out.update(ceiling.rates("ceiling_recon_"))
    return {
        **out,
        "num_prompts": int(all_images.shape[0]),
        "num_images": tally.num_images,
        "num_objects": tally.num_objects,
        "examples": examples,
    }


def other_renders_tally(
    images_BxSxSx3: np.ndarray, objects_BxOx4: np.ndarray, key: jax.Array, draws: int, image_size: int
) -> _Tally:
    """Oracle outcomes of every prompt paired with another prompt's true image, over `draws` derangements."""
    tally = _Tally()
    for d in range(draws):
        perm = derangement(jax.random.fold_in(key, d), images_BxSxSx3.shape[0])
        for start in range(0, perm.size, _CHUNK):
            rows = slice(start, start + _CHUNK)
            tally.add(scene_oracle.score_batch(images_BxSxSx3[perm[rows]], objects_BxOx4[rows], image_size))
    return tally
