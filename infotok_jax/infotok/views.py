"""The fixed views of X, Y and T that the dependence estimators compare with the tokens Z.

X: the image average-pooled to a small grid and flattened (a low-level pixel view; compressing what Z
keeps about it is the bottleneck). T: a bag-of-words embedding of the paired caption. Y, by
`config.infotok.relevance_target`:
  "text"        (default, label-free) the question and answer words of the example's QA pair, the text
                the host's understanding loss already reads: [bow(question), bow(answer)] / sqrt(2). A
                Gaussian kernel on the concatenation is the product of a question kernel and an answer
                kernel, so two examples are similar in Y only when both their questions and their answers
                match: the same answer to a different question does not count as the same target.
  "attributes"  (privileged) multi-hot scene attributes from the ground-truth annotation `objects`.
  "label"       (privileged) the one-hot class label.
All embeddings are fixed functions of the data (no parameters), so no gradient flows into Y or T.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from infotok_jax.data import scenes_spec

Z_VIEWS = ("pooled", "flat")

DERIVED_VIEW_SIZE_MAX = 8


def derived_view_size(height: int, width: int) -> int:
    """The X view's side when none is set: the largest divisor of both image sides that is at most
    DERIVED_VIEW_SIZE_MAX (8 for 32x32 or 64x64 images, 7 for 28x28 Fashion-MNIST)."""
    side = math.gcd(height, width)
    return max(d for d in range(1, min(DERIVED_VIEW_SIZE_MAX, side) + 1) if side % d == 0)


def view_size_error(size: int, height: int, width: int) -> str | None:
    """Why `size` cannot pool a height x width image (None when it can)."""
    if size > 0 and height % size == 0 and width % size == 0:
        return None
    side = math.gcd(height, width)
    divisors = [d for d in range(1, side + 1) if side % d == 0]
    return (
        f"config.infotok.x_view_size={size} must divide the image size {height}x{width}: use one of "
        f"{divisors}, or leave it unset (None) to derive {derived_view_size(height, width)}"
    )


def pixel_view(images_BxHxWx3: jax.Array, size: int | None = None) -> jax.Array:
    """Average-pools images to (size, size) and flattens to (B, size*size*3); size None: derived from
    the image size (`derived_view_size`)."""
    b, h, w, c = images_BxHxWx3.shape
    size = derived_view_size(h, w) if size is None else size
    error = view_size_error(size, h, w)
    if error:
        raise ValueError(error)
    pooled = images_BxHxWx3.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))
    return pooled.reshape(b, size * size * c)


def token_view(z_BxNxD: jax.Array, view: str) -> jax.Array:
    """One vector per image: the mean over tokens ("pooled") or all tokens concatenated ("flat")."""
    if view == "pooled":
        return z_BxNxD.mean(axis=1)
    if view == "flat":
        return z_BxNxD.reshape(z_BxNxD.shape[0], -1)
    raise ValueError(f"z_view must be one of {Z_VIEWS}; got {view!r}")


def scene_attribute_embedding(objects_BxOx4: jax.Array) -> jax.Array:
    """Multi-hot over (shape, color, size, cell) of every present object: (B, S + C + 2 + 9)."""
    sizes = (
        len(scenes_spec.SHAPES),
        len(scenes_spec.COLORS),
        len(scenes_spec.SIZES),
        scenes_spec.NUM_CELLS,
    )
    parts = []
    for column, size in enumerate(sizes):
        values = objects_BxOx4[:, :, column]
        hot = jax.nn.one_hot(values, size) * (values >= 0)[..., None]
        parts.append(hot.sum(axis=1))
    return jnp.concatenate(parts, axis=-1)


def label_embedding(labels_B: jax.Array, num_classes: int) -> jax.Array:
    """One-hot class labels (B, num_classes); -1 gives a zero row."""
    return jax.nn.one_hot(labels_B, num_classes) * (labels_B >= 0)[:, None]


def caption_embedding(caption_tokens_BxL: jax.Array, vocab_size: int, pad_id: int = 0) -> jax.Array:
    """L2-normalized bag-of-words counts of the caption tokens (padding excluded): (B, vocab_size)."""
    counts = (jax.nn.one_hot(caption_tokens_BxL, vocab_size) * (caption_tokens_BxL != pad_id)[..., None]).sum(
        1
    )
    return counts / jnp.maximum(jnp.linalg.norm(counts, axis=-1, keepdims=True), 1e-6)


def answer_embedding(
    question_tokens_BxQ: jax.Array, answer_tokens_BxA: jax.Array, vocab_size: int
) -> jax.Array:
    """Label-free Y: [bow(question), bow(answer)] / sqrt(2), unit norm: (B, 2 * vocab_size).

    Examples without a QA pair (BOS/EOS only) all get the same vector, i.e. no relevance signal.
    """
    q = caption_embedding(question_tokens_BxQ, vocab_size)
    a = caption_embedding(answer_tokens_BxA, vocab_size)
    return jnp.concatenate([q, a], axis=-1) * (1.0 / jnp.sqrt(2.0))


def relevance_embedding(batch: dict, target: str, *, vocab_size: int, num_classes: int) -> jax.Array:
    """Y for the batch by `config.infotok.relevance_target` (module docstring); "text" reads only the
    question/answer tokens, "attributes" only `objects`, "label" only `label`."""
    if target == "text":
        return answer_embedding(batch["question_tokens"], batch["answer_tokens"], vocab_size)
    if target == "attributes":
        return scene_attribute_embedding(batch["objects"])
    if target == "label":
        return label_embedding(batch["label"], num_classes)
    raise ValueError(f"config.infotok.relevance_target: unknown target {target!r}")
