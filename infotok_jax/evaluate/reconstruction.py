"""Reconstruction PSNR of any `reconstruct_fn`, plus the batch-iteration helpers all evaluators share.

PSNR is computed per image against the peak value 1.0 (images in [0, 1]; uint8 outputs are divided by
255, float outputs are clipped to [0, 1] as a displayed image would be) and averaged over images, the usual
convention for tokenizer reconstruction tables. A perfect reconstruction has MSE 0 and infinite PSNR; each
image's PSNR is capped at `PSNR_CAP_DB` = 100 dB (MSE 1e-10) so the mean stays finite and comparable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

PSNR_CAP_DB = 100.0
Batch = dict[str, Any]


def take_batches(batches: Iterable[Batch], max_batches: int | None) -> Iterator[Batch]:
    """Yields at most `max_batches` batches; refuses an endless `InputPipeline` without a limit."""
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches={max_batches} must be >= 1 or None (the whole iterable)")
    if max_batches is None and hasattr(batches, "num_steps") and batches.num_steps is None:
        raise ValueError(
            "batches is an endless pipeline (num_epochs=None); pass max_batches= or build it "
            "with infotok_jax.data.iterate_numpy / num_epochs=1"
        )
    yield from itertools.islice(batches, max_batches)


def as_images(images: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 images in [0, 1] of exactly `shape` from a numpy/jax array (uint8 or float), else an error."""
    arr = np.asarray(images)
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} gave images of shape {arr.shape}; expected {tuple(shape)} (batch, height, width, 3)"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} gave dtype {arr.dtype}; use uint8 or float images in [0, 1]")
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def psnr_per_image(x_BxHxWxC: np.ndarray, y_BxHxWxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(psnr_B capped at PSNR_CAP_DB, mse_B) for images in [0, 1] (peak 1.0), in float64."""
    diff = np.asarray(x_BxHxWxC, np.float64) - np.asarray(y_BxHxWxC, np.float64)
    mse_B = np.mean(diff * diff, axis=tuple(range(1, diff.ndim)))
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    psnr_B = -10.0 * np.log10(np.maximum(mse_B, floor))
    return psnr_B, mse_B


def evaluate_reconstruction(
    reconstruct_fn: Callable[[np.ndarray], Any], batches: Iterable[Batch], max_batches: int | None = None
) -> dict[str, float]:
    """Mean per-image PSNR (dB, capped) and MSE of `reconstruct_fn(images_BxHxWx3)` over the batches.

    Args:
      reconstruct_fn: maps float32 images (B, H, W, 3) in [0, 1] to reconstructions of the same shape
        (numpy or jax, uint8 or float).
      batches: dicts with an "image" field (numpy batches from `iterate_numpy` or a mesh-less pipeline).
      max_batches: evaluate at most this many batches (required for endless pipelines).

    Returns:
      {"psnr", "mse", "num_examples"}.
    """
    psnrs, mses = [], []
    for batch in take_batches(batches, max_batches):
        x = np.asarray(batch["image"], np.float32)
        y = as_images(reconstruct_fn(x), "reconstruct_fn", x.shape)
        psnr_B, mse_B = psnr_per_image(x, y)
        psnrs.append(psnr_B)
        mses.append(mse_B)
    if not psnrs:
        raise ValueError("batches yielded no batch; nothing to evaluate")
    psnr, mse = np.concatenate(psnrs), np.concatenate(mses)
    return {"psnr": float(psnr.mean()), "mse": float(mse.mean()), "num_examples": int(psnr.size)}
