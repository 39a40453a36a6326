"""The information plane at evaluation: what the tokens Z keep about pixels, targets and nuisance, vs floors.

`evaluate_information(encode_fn, batches)` collects `num_examples` (default 512) images, encodes them
with `encode_fn(images_BxHxWx3) -> z_BxNxD` and measures, with the biased normalized HSIC (CKA with
Gaussian kernels, median-heuristic bandwidths: `estimators.batched_hsic`, the training binary's
`eval/nhsic_*` estimator, run here in float64 under `jax.enable_x64`; the variables differ: here Y is
always the scene attributes and N the nuisance, while the training binary's `eval/nhsic_zy` uses the
run's own relevance target, the question/answer text by default):

  nhsic_xz   Z vs the pixels X (`infotok.views.pixel_view`: average-pooled to `x_view_size`, default every
             pixel): compression
  nhsic_zy   Z vs Y = every attribute of every object, bound to its cell (per cell: presence and one-hot
             shape, color, size; 9 x 13 = 117 dims): what the task can need
  nhsic_zn   Z vs the nuisance N = the background field the scene generator drew (batch["nuisance"]):
             what the task does not need; the IB's "drop the nuisance" shows as nhsic_zn falling
  nhsic_xn   X vs N: how much of the nuisance the pixels carry (the reference for nhsic_zn)

each for two views of Z (`infotok.views.token_view`): "pooled" (mean over tokens, what the training
regularizer sees by default) and "flat" (all tokens concatenated, nothing averaged away). Small samples
make nHSIC of independent variables far from 0 (at n = 128 the floor is 0.14-0.27 and depends on the
dimensions), so every value comes with its permutation floor `floor_perm_<name>` = mean nHSIC after
shuffling one side (`num_permutations` shuffles, seeded) and `excess_<name>` = value - floor. Read
excess, not the value: two arms' values are comparable only through it. A constant variable (nuisance
strength 0) has no defined nHSIC: NaN.

nHSIC with Gaussian kernels hardly sees the background field in the pixels (at n = 512 and nuisance
0.5, nHSIC(X, N) is ~0.01 above its floor: object pixels dominate the distances; see
`experiments/measure_floors.py`), so the nuisance is also measured by decodability: `probe_r2_<name>` is
the cross-validated R^2 of a ridge regression (linear kernel, standardized features, 4 folds) predicting
N (or Y) from Z (or X): 0 is "no better than the mean", 1 is exact. Its `floor_perm_` (R^2 with shuffled
targets) is below 0 and shows how much the probe overfits at this n. The pixels predict the field with
R^2 ~0.5 at n = 512; an encoder that drops the nuisance brings probe_r2_zn to <= 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax import estimators
from infotok_jax.data import scenes_spec
from infotok_jax.evaluate.reconstruction import Batch, take_batches
from infotok_jax.infotok import views

PAIRS = ("xz", "zy", "zn")
VIEWS = ("pooled", "flat")
DEFAULT_EXAMPLES = 512
PROBE_RIDGE = 0.1  # ridge strength per example on standardized features
PROBE_FOLDS = 4
PROBE_MIN_RELATIVE_STD = 1e-4  # features whose std is below this fraction of the largest are constant


def scene_targets(objects_BxOx4: np.ndarray) -> np.ndarray:
    """Y per example: per cell [present, one-hot shape, one-hot color, one-hot size], flattened (B, 117)."""
    objects = np.asarray(objects_BxOx4, np.int64)
    sizes = (len(scenes_spec.SHAPES), len(scenes_spec.COLORS), len(scenes_spec.SIZES))
    width = 1 + sum(sizes)
    out = np.zeros((objects.shape[0], scenes_spec.NUM_CELLS, width), np.float64)
    rows, slots = np.nonzero(objects[:, :, 0] >= 0)
    cells = objects[rows, slots, 3]
    out[rows, cells, 0] = 1.0
    offset = 1
    for column, size in enumerate(sizes):
        out[rows, cells, offset + objects[rows, slots, column]] = 1.0
        offset += size
    return out.reshape(objects.shape[0], -1)


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _pad_features(x_NxD: np.ndarray, multiple: int = 128) -> np.ndarray:
    """x with zero columns up to a multiple of `multiple`: Gaussian distances, medians and so nHSIC are
    unchanged, and the few padded widths share compilations instead of compiling once per width."""
    return np.pad(x_NxD, ((0, 0), (0, -x_NxD.shape[1] % multiple)))


@jax.jit
def _nhsic_against_each(b_SxNxE: jax.Array, a_NxD: jax.Array) -> jax.Array:
    return estimators.batched_hsic(b_SxNxE, a_NxD, normalized=True)


def nhsic_with_floor(
    a_NxD: np.ndarray, b_NxE: np.ndarray, num_permutations: int, seed: int = 0
) -> tuple[float, float]:
    """(biased normalized HSIC of a and b, its mean over `num_permutations` shuffles of b's rows).

    float64 throughout (a value and its floor can differ only in the third decimal). NaN (both) when a
    or b holds a non-finite value (a diverged model's tokens read as undefined) or is constant (its
    centred Gram matrix is zero: nHSIC is 0 / 0).
    """
    a, b = np.asarray(a_NxD, np.float64), np.asarray(b_NxE, np.float64)
    if not _finite(a, b) or np.all(a == a[:1]) or np.all(b == b[:1]):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    shuffled_PxN = np.stack([rng.permutation(len(b)) for _ in range(num_permutations)])
    b = _pad_features(b)
    b_SxNxE = np.concatenate([b[None], b[shuffled_PxN]])
    with jax.enable_x64(True):
        values_S = np.asarray(_nhsic_against_each(jnp.asarray(b_SxNxE), jnp.asarray(_pad_features(a))))
    return float(values_S[0]), float(values_S[1:].mean())


def probe_r2(
    features_NxD: np.ndarray, target_NxE: np.ndarray, num_permutations: int, seed: int = 0
) -> tuple[float, float]:
    """(cross-validated R^2 of ridge-predicting target from features, its mean over shuffled targets).

    Dual (kernel) form with the linear kernel of features standardized over the whole sample (no target
    enters it), so the cost is O(n^2 d) whatever d; folds are interleaved (example i in fold
    i mod PROBE_FOLDS). R^2 pools every target dimension: 1 - sum of squared errors / sum of squares
    around the target's mean. NaN for a constant target, and for non-finite features or targets (the
    standardization would silently drop a NaN column and score the rest).
    """
    x = np.asarray(features_NxD, np.float64)
    y = np.asarray(target_NxE, np.float64).reshape(len(x), -1)
    n = len(x)
    if not _finite(x, y) or not np.any(y.std(axis=0) > 0):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    targets = [y] + [y[rng.permutation(n)] for _ in range(num_permutations)]
    stacked = np.concatenate(targets, axis=1)
    preds = np.zeros_like(stacked)
    sd = x.std(axis=0)
    # standardized once (no target enters it); near-constant features are dropped, since scaling them to
    # unit variance would turn float32 rounding noise into signal
    varies = sd > PROBE_MIN_RELATIVE_STD * max(float(sd.max()), np.finfo(np.float64).tiny)
    a = np.where(varies, (x - x.mean(axis=0)) / np.where(varies, sd, 1.0), 0.0)
    gram = a @ a.T
    folds = np.arange(n) % PROBE_FOLDS
    for f in range(PROBE_FOLDS):
        test, train = folds == f, folds != f
        k_train = gram[np.ix_(train, train)]
        y_mean = stacked[train].mean(axis=0)
        ridge = PROBE_RIDGE * train.sum() * np.eye(train.sum())
        alpha = np.linalg.solve(k_train + ridge, stacked[train] - y_mean)
        preds[test] = gram[np.ix_(test, train)] @ alpha + y_mean
    width = y.shape[1]
    r2 = []
    for k, target in enumerate(targets):
        err = ((target - preds[:, k * width : (k + 1) * width]) ** 2).sum()
        r2.append(1.0 - err / ((target - target.mean(axis=0)) ** 2).sum())
    return float(r2[0]), float(np.mean(r2[1:])) if num_permutations else float("nan")


def evaluate_information(
    encode_fn: Callable[[np.ndarray], Any],
    batches: Iterable[Batch],
    num_examples: int = DEFAULT_EXAMPLES,
    max_batches: int | None = None,
    num_permutations: int = 10,
    x_view_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """nHSIC of the tokens with pixels, targets and nuisance, pooled and flat, with permutation floors.

    Args:
      encode_fn: float32 images (B, H, W, 3) in [0, 1] -> tokens z (B, N, D) (numpy or jax): what the
        host's LM receives from the tokenizer at evaluation (train=False).
      batches: numpy scene batches with image and objects fields; a nuisance field (B, F) adds nhsic_zn
        and nhsic_xn (NaN without it).
      num_examples: examples used (the first ones); fewer only when the batches run out.
      max_batches: read at most this many batches.
      num_permutations / seed: shuffles averaged into each floor, and their seed.
      x_view_size: pool X to this side before comparing (None: every pixel).

    Returns:
      for P in (xz, zy, zn) and V in (pooled, flat): nhsic_P_V, floor_perm_nhsic_P_V, excess_nhsic_P_V;
      nhsic_xn, floor_perm_nhsic_xn, excess_nhsic_xn; for P in (zy, zn) and V: probe_r2_P_V and
      floor_perm_probe_r2_P_V, and probe_r2_xy, probe_r2_xn likewise; num_examples.
    """
    if num_examples < 2 or num_permutations < 1:
        raise ValueError(
            f"num_examples={num_examples} must be >= 2 and num_permutations={num_permutations} >= 1"
        )
    images, zs, objects, nuisance = [], [], [], []
    have = 0
    for batch in take_batches(batches, max_batches):
        if have >= num_examples:
            break
        x = np.asarray(batch["image"], np.float32)
        keep = min(len(x), num_examples - have)  # whole batches go to encode_fn (no new shape to compile)
        zs.append(np.asarray(encode_fn(x))[:keep])
        x = x[:keep]
        images.append(x)
        objects.append(np.asarray(batch["objects"])[: len(x)])
        if "nuisance" in batch:
            nuisance.append(np.asarray(batch["nuisance"], np.float64)[: len(x)].reshape(len(x), -1))
        have += len(x)
    if have < 2:
        raise ValueError(f"batches held {have} example(s); the information plane needs >= 2 (aim for 512)")
    x = np.concatenate(images)
    with jax.enable_x64(True):
        x_view = np.asarray(views.pixel_view(jnp.asarray(x, jnp.float64), x_view_size or x.shape[1]))
    z = np.concatenate(zs).astype(np.float64)
    if z.ndim != 3 or z.shape[0] != have:
        raise ValueError(f"encode_fn returned tokens of shape {z.shape}; expected ({have}, tokens, dim)")
    y = scene_targets(np.concatenate(objects))
    n = np.concatenate(nuisance) if len(nuisance) == len(images) else None
    out: dict[str, float] = {}

    def put(measure: Callable, kind: str, name: str, a: np.ndarray | None, b: np.ndarray | None) -> None:
        value, floor = (
            (float("nan"),) * 2 if a is None or b is None else measure(a, b, num_permutations, seed)
        )
        out[f"{kind}_{name}"], out[f"floor_perm_{kind}_{name}"] = value, floor
        if kind == "nhsic":  # a probe's shuffled R^2 is negative (overfitting): read R^2 against 0
            out[f"excess_{kind}_{name}"] = value - floor

    for view in VIEWS:
        z_view = np.asarray(views.token_view(z, view))
        put(nhsic_with_floor, "nhsic", f"xz_{view}", x_view, z_view)
        put(nhsic_with_floor, "nhsic", f"zy_{view}", z_view, y)
        put(nhsic_with_floor, "nhsic", f"zn_{view}", z_view, n)
    put(nhsic_with_floor, "nhsic", "xn", x_view, n)
    for view in VIEWS:
        z_view = np.asarray(views.token_view(z, view))
        put(probe_r2, "probe_r2", f"zy_{view}", z_view, y)
        put(probe_r2, "probe_r2", f"zn_{view}", z_view, n)
    put(probe_r2, "probe_r2", "xy", x_view, y)
    put(probe_r2, "probe_r2", "xn", x_view, n)
    out["num_examples"] = have
    return out
