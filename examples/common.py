"""What the three examples share and is not InfoTok: Fashion-MNIST with captions, and the measurements.

The data is the real Fashion-MNIST from `apt-get install -y dataset-fashion-mnist`, read with the
project's IDX reader; each image's paired text T is its class caption ("a photo of an ankle boot") as
an L2-normalised bag of words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax import estimators
from infotok_jax.data import fashion_mnist

NUM_CLASSES = len(fashion_mnist.CLASS_NAMES)


def caption_bags_of_words(labels_B: np.ndarray) -> np.ndarray:
    """(B, V) unit-norm bag-of-words of each label's caption over the captions' vocabulary."""
    captions = [fashion_mnist.class_caption(c).split() for c in range(NUM_CLASSES)]
    vocab = sorted({w for words in captions for w in words})
    bows = np.zeros((NUM_CLASSES, len(vocab)), np.float32)
    for c, words in enumerate(captions):
        for w in words:
            bows[c, vocab.index(w)] += 1.0
    bows /= np.linalg.norm(bows, axis=1, keepdims=True)
    return bows[labels_B]


def load(split: str, n: int) -> dict[str, np.ndarray]:
    """The first `n` examples of a split: images (n, 28, 28) in [0, 1], labels (n,), captions T (n, V)."""
    images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_IDX_DIR, split)
    images, labels = images[:n].astype(np.float32) / 255.0, labels[:n].astype(np.int32)
    return {"image": images, "label": labels, "caption": caption_bags_of_words(labels)}


def batches(data: dict[str, np.ndarray], batch_size: int, steps: int, seed: int = 0):
    """`steps` random batches (with replacement across batches), the same sequence for every model."""
    rng = np.random.default_rng(seed)
    n = len(data["label"])
    for _ in range(steps):
        idx = rng.choice(n, batch_size, replace=False)
        yield {k: jnp.asarray(v[idx]) for k, v in data.items()}


def nhsic(z_BxNxD: jax.Array, t_BxE: jax.Array) -> float:
    """Normalised HSIC of the tokens (flattened per image) with the captions, on held-out images."""
    return float(estimators.normalized_hsic(z_BxNxD.reshape(z_BxNxD.shape[0], -1), t_BxE))


def linear_probe_accuracy(
    train_z: jax.Array, train_labels: np.ndarray, test_z: jax.Array, test_labels: np.ndarray
) -> float:
    """Test accuracy of a ridge-regression linear classifier fitted on the training tokens."""

    def features(z):
        z = np.asarray(z, np.float64).reshape(len(z), -1)
        return np.concatenate([z, np.ones((len(z), 1))], axis=1)

    a = features(train_z)
    targets = np.eye(NUM_CLASSES)[train_labels]
    w = np.linalg.solve(a.T @ a + 1e-3 * len(a) * np.eye(a.shape[1]), a.T @ targets)
    return float((np.argmax(features(test_z) @ w, axis=1) == test_labels).mean())


def report(title: str, rows: dict[str, dict[str, float]]) -> None:
    """Prints one line per model: its measurements side by side."""
    names = list(next(iter(rows.values())))
    print(title)
    print(f"{'':18s}" + "".join(f"{n:>16s}" for n in names))
    for model, values in rows.items():
        print(f"{model:18s}" + "".join(f"{values[n]:16.3f}" for n in names))
