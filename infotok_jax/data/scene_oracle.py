"""Scene oracle: reads shape, color, size and cell of every object back from pixels, and scores a request.

Method (exact on renders, tolerant to decoder blur, noise and small shifts):
  1. objectness o = clip((max_channel - 0.45) / 0.55, 0, 1): 0 on any background (the nuisance band
     stays below 0.4), 1 on object pixels (every object color has a channel at 1.0);
  2. per cell, nearest template in squared distance over the cell's pixels, among "empty" and every
     (shape, size) coverage map from the renderer rendered on the mean background and mapped through the
     same objectness, each at shifts of -1/0/+1 pixel per 32 px and blurred with Gaussian sigma
     0, 0.35, 0.7, 1.0, 1.4 px per 32 px; the winner gives presence, shape and size;
  3. color: mean RGB over the cell weighted by o**4 (object core), rescaled by the background model and
     matched to the nearest of the six color corners; a mean farther than 0.5 from every corner is -1.
Count = number of non-empty cells. A request is all_correct iff the count matches and every requested
object is found in its cell with the requested shape, color and size (so there is no extra object).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from infotok_jax.data import scenes_render, scenes_spec

_BLUR_SIGMAS = (0.0, 0.35, 0.7, 1.0, 1.4)  # in pixels at 32 x 32, scaled with the image size
_SHIFTS = (-1, 0, 1)  # in pixels at 32 x 32, scaled with the image size
_COLOR_MAX_DIST = 0.5
ATTRIBUTES = ("shape", "color", "size", "cell")
_BG = scenes_render.BACKGROUND_MEAN
OBJECTNESS_FLOOR = 0.45  # top of the nuisance band (0.4) plus a margin


def objectness(max_channel: np.ndarray) -> np.ndarray:
    """0 at or below the top of the nuisance band (plus margin), 1 at an object's full channel."""
    return np.clip((max_channel - OBJECTNESS_FLOOR) / (1.0 - OBJECTNESS_FLOOR), 0.0, 1.0)


@functools.lru_cache(maxsize=2)
def _template_bank(image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell_mask_9xP, templates_TxP, labels_Tx3 = (cell, shape, size)) for S x S = P pixels."""
    n = scenes_render.check_image_size(image_size)
    scale = n / 32.0
    pitch = n / 3.0
    idx = np.arange(n)
    cell_of_row = np.minimum(((idx + 0.5) // pitch).astype(int), 2)
    cell_id_SxS = 3 * cell_of_row[:, None] + cell_of_row[None, :]
    cell_mask = (cell_id_SxS.reshape(1, -1) == np.arange(9)[:, None]).astype(np.float32)
    templates, labels = [], []
    for cell in range(scenes_spec.NUM_CELLS):
        cy, cx = scenes_render.cell_center(cell, n)
        offsets = [(dy * scale, dx * scale) for dy in _SHIFTS for dx in _SHIFTS]
        centers = np.array([(cy + dy, cx + dx) for dy, dx in offsets], np.float32)
        for shape in range(len(scenes_spec.SHAPES)):
            for size in range(len(scenes_spec.SIZES)):
                for alpha in scenes_render.alpha_maps(shape, size, centers, n):
                    for sigma in _BLUR_SIGMAS:
                        t = ndimage.gaussian_filter(alpha, sigma * scale, mode="constant") if sigma else alpha
                        templates.append(objectness(t + (1.0 - t) * _BG).reshape(-1) * cell_mask[cell])
                        labels.append((cell, shape, size))
    return cell_mask, np.stack(templates).astype(np.float32), np.array(labels, np.int32)


def _as_float_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Validates (B, S, S, 3) uint8 or float in [0, 1]; returns float32."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1:] != (image_size, image_size, 3):
        raise ValueError(
            f"images must have shape (batch, {image_size}, {image_size}, 3) for image_size={image_size}; "
            f"got {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1]; got dtype {arr.dtype}")
    return arr.astype(np.float32)


def detect_batch(images: np.ndarray, image_size: int) -> np.ndarray:
    """Parses scenes from pixels: int32 (B, 9, 3) = (shape, color, size) per cell, -1 where empty/unknown."""
    x_BxSxSx3 = _as_float_images(images, image_size)
    b = x_BxSxSx3.shape[0]
    cell_mask_9xP, templates_TxP, labels_Tx3 = _template_bank(image_size)
    o_BxP = objectness(x_BxSxSx3.max(axis=-1)).reshape(b, -1)
    energy_Bx9 = (o_BxP * o_BxP) @ cell_mask_9xP.T  # distance to the empty template
    dist_BxT = energy_Bx9[:, labels_Tx3[:, 0]] - 2.0 * o_BxP @ templates_TxP.T
    dist_BxT = dist_BxT + (templates_TxP * templates_TxP).sum(axis=1)[None, :]
    out = np.full((b, scenes_spec.NUM_CELLS, 3), -1, np.int32)
    weights_BxP = o_BxP**4
    rgb_BxPx3 = x_BxSxSx3.reshape(b, -1, 3)
    corners_Kx3 = scenes_render.COLOR_RGB
    for cell in range(scenes_spec.NUM_CELLS):
        sel = np.nonzero(labels_Tx3[:, 0] == cell)[0]
        best = sel[np.argmin(dist_BxT[:, sel], axis=1)]
        present = dist_BxT[np.arange(b), best] < energy_Bx9[:, cell]
        w_BxP = weights_BxP * cell_mask_9xP[cell][None, :]
        mean_Bx3 = np.einsum("bp,bpc->bc", w_BxP, rgb_BxPx3) / np.maximum(w_BxP.sum(1), 1e-6)[:, None]
        unit_Bx3 = (mean_Bx3 - scenes_render.BACKGROUND_MEAN) / (1.0 - scenes_render.BACKGROUND_MEAN)
        cdist_BxK = np.linalg.norm(unit_Bx3[:, None, :] - corners_Kx3[None, :, :], axis=-1)
        color = np.where(cdist_BxK.min(1) < _COLOR_MAX_DIST, cdist_BxK.argmin(1), -1)
        out[:, cell, 0] = np.where(present, labels_Tx3[best, 1], -1)
        out[:, cell, 1] = np.where(present, color, -1)
        out[:, cell, 2] = np.where(present, labels_Tx3[best, 2], -1)
    return out


Requests = np.ndarray | list


def _requests_array(objects: Requests, batch: int) -> np.ndarray:
    """Normalises requests to int32 (B, O, 4); accepts a list of lists of tuples or an array."""
    if isinstance(objects, np.ndarray) or (len(objects) and isinstance(objects[0], np.ndarray)):
        arr = np.asarray(objects, np.int32)
    else:
        arr = np.stack([scenes_spec.objects_to_array(list(o)) for o in objects])
    if arr.ndim != 3 or arr.shape[0] != batch or arr.shape[2] != 4:
        raise ValueError(
            f"objects must be (batch={batch}, max_objects, 4) rows (shape, color, size, cell) "
            f"padded with -1; got shape {arr.shape}"
        )
    valid = arr[..., 0] >= 0
    if np.any(valid & ((arr[..., 3] < 0) | (arr[..., 3] >= scenes_spec.NUM_CELLS))):
        raise ValueError("objects: cell ids must lie in 0..8 for every non-padding row")
    return arr


def score_batch(images: np.ndarray, objects: Requests, image_size: int) -> dict[str, np.ndarray]:
    """Scores a batch of images against requested objects (B, O, 4) padded with -1.

    Returns numpy arrays: per requested object (B, O) bools `present`, `shape_correct`, `color_correct`,
    `size_correct`, `position_correct` (False on padding rows), `valid` (B, O) marking real requests,
    `num_requested`, `num_detected`, `count_correct`, `all_correct` (B,), and `detected` (B, 9, 3).
    """
    x = _as_float_images(images, image_size)
    req_BxOx4 = _requests_array(objects, x.shape[0])
    detected_Bx9x3 = detect_batch(x, image_size)
    valid_BxO = req_BxOx4[..., 0] >= 0
    cell_BxO = np.where(valid_BxO, req_BxOx4[..., 3], 0)
    got_BxOx3 = np.take_along_axis(detected_Bx9x3, cell_BxO[:, :, None], axis=1)
    present = valid_BxO & (got_BxOx3[..., 0] >= 0)
    result = {
        "valid": valid_BxO,
        "present": present,
        "position_correct": present,
        "shape_correct": present & (got_BxOx3[..., 0] == req_BxOx4[..., 0]),
        "color_correct": present & (got_BxOx3[..., 1] == req_BxOx4[..., 1]),
        "size_correct": present & (got_BxOx3[..., 2] == req_BxOx4[..., 2]),
        "num_requested": valid_BxO.sum(1).astype(np.int32),
        "num_detected": (detected_Bx9x3[..., 0] >= 0).sum(1).astype(np.int32),
        "detected": detected_Bx9x3,
    }
    result["count_correct"] = result["num_requested"] == result["num_detected"]
    per_obj = result["shape_correct"] & result["color_correct"] & result["size_correct"]
    result["all_correct"] = result["count_correct"] & np.all(per_obj | ~valid_BxO, axis=1)
    return result


def score(image: np.ndarray, objects: Requests, image_size: int) -> dict:
    """Scores one image (S, S, 3), uint8 or float in [0, 1], against a list of (shape, color, size, cell).

    Returns per-attribute correctness lists for each requested object, `count_correct`, `num_detected`
    and `all_correct` (plain Python values).
    """
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be (H, W, 3); got shape {arr.shape} (use score_batch for batches)")
    req = objects if isinstance(objects, np.ndarray) else scenes_spec.objects_to_array(list(objects))
    res = score_batch(arr[None], np.asarray(req, np.int32)[None], image_size)
    valid = res["valid"][0]
    out = {
        k: [bool(v) for v in res[k][0][valid]]
        for k in ("present", "shape_correct", "color_correct", "size_correct", "position_correct")
    }
    out.update(
        count_correct=bool(res["count_correct"][0]),
        num_detected=int(res["num_detected"][0]),
        all_correct=bool(res["all_correct"][0]),
    )
    return out
