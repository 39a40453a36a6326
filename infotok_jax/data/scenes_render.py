"""Procedural renderer for captioned scenes (pure numpy), designed so that an oracle can read it back exactly.

Geometry: an S x S image is a 3x3 grid of cells of pitch S/3; an object is centred in its cell with a
half-extent of 0.44 (large) or 0.27 (small) cell pitches, so sizes differ by a factor 1.6 and objects never
cross a cell border. Coverage (alpha) is rasterised with 4x4 supersampling, so edges are anti-aliased but
fully determined by (shape, size, cell, S).

Colors: the six corners of the RGB cube with one or two channels at 1.0 (red, green, blue, yellow,
magenta, cyan); pairwise RGB distance >= 1.

Nuisance: the background is 0.2 + 0.2 * strength * texture, texture in [-1, 1] = half a smooth field (a
5x5 random grid bilinearly upsampled) plus half iid per-pixel noise, independently per channel. So the
background stays inside the band [0, 0.4] at every strength, while every object pixel has a channel at 1.0:
objects are separable from the nuisance by brightness of the strongest channel, whatever its strength.
The nuisance is exposed as data: `render_example` returns the smooth field's control grid times the
strength (`NUISANCE_DIM` = 75 numbers, all 0 at strength 0), the part of the background an encoder could
represent (the iid per-pixel half is unpredictable noise), so the dependence of tokens on the nuisance
can be measured.
"""

from __future__ import annotations

import functools

import numpy as np

from infotok_jax.data import scenes_spec

COLOR_RGB = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32)
HALF_EXTENT = (0.27, 0.44)  # (small, large), in cell pitches
BACKGROUND_MEAN = 0.2
BACKGROUND_HALF_BAND = 0.2
SUPERSAMPLE = 4
SUPPORTED_SIZES = (32, 64)
NUISANCE_GRID = 5  # control points per side of the smooth background field
NUISANCE_DIM = NUISANCE_GRID * NUISANCE_GRID * 3


def check_image_size(image_size: int) -> int:
    """Validates the side length of a scene image."""
    if int(image_size) not in SUPPORTED_SIZES:
        raise ValueError(f"image_size={image_size} is not supported; use one of {SUPPORTED_SIZES}")
    return int(image_size)


def cell_center(cell: int, image_size: int) -> tuple[float, float]:
    """(row, col) centre of a grid cell in continuous pixel coordinates (pixel i spans [i, i+1))."""
    pitch = image_size / 3.0
    return ((cell // 3 + 0.5) * pitch, (cell % 3 + 0.5) * pitch)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of normalised offsets (u down, v right, object spans [-1, 1]) in a shape."""
    name = scenes_spec.SHAPES[shape]
    if name == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "triangle":  # apex up at u=-1, base at u=0.8
        return (u >= -1.0) & (u <= 0.8) & (np.abs(v) <= (u + 1.0) / 1.8)
    if name == "cross":
        arm = 0.36
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    raise ValueError(f"shape id {shape} is unknown; valid ids are 0..{len(scenes_spec.SHAPES) - 1}")


def alpha_maps(shape: int, size: int, centers_Cx2: np.ndarray, image_size: int) -> np.ndarray:
    """Anti-aliased coverage maps (C, S, S) in [0, 1] of one (shape, size) at C centres (row, col)."""
    half = HALF_EXTENT[size] * image_size / 3.0
    sub = (np.arange(image_size * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    u_CxRx1 = (sub[None, :, None] - centers_Cx2[:, 0, None, None]) / half
    v_Cx1xR = (sub[None, None, :] - centers_Cx2[:, 1, None, None]) / half
    mask = _inside(shape, u_CxRx1, v_Cx1xR).astype(np.float32)
    n = image_size
    return mask.reshape(-1, n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(2, 4))


@functools.lru_cache(maxsize=4)
def object_alphas(image_size: int) -> np.ndarray:
    """Cached coverage of every (cell, shape, size) at its exact cell centre: (9, shapes, sizes, S, S)."""
    check_image_size(image_size)
    centers = np.array([cell_center(c, image_size) for c in range(scenes_spec.NUM_CELLS)], np.float32)
    out = np.zeros(
        (scenes_spec.NUM_CELLS, len(scenes_spec.SHAPES), len(scenes_spec.SIZES), image_size, image_size),
        np.float32,
    )
    for s in range(len(scenes_spec.SHAPES)):
        for z in range(len(scenes_spec.SIZES)):
            out[:, s, z] = alpha_maps(s, z, centers, image_size)
    out.setflags(write=False)
    return out


def background(rng: np.random.Generator, image_size: int, nuisance: float) -> np.ndarray:
    """Nuisance background (S, S, 3) float32 inside [0, 0.4]; strength 0 gives flat gray 0.2."""
    return background_and_field(rng, image_size, nuisance)[0]


def background_and_field(
    rng: np.random.Generator, image_size: int, nuisance: float
) -> tuple[np.ndarray, np.ndarray]:
    """(background (S, S, 3), nuisance features (NUISANCE_DIM,) = strength * the field's control grid)."""
    if not 0.0 <= nuisance <= 1.0:
        raise ValueError(f"nuisance={nuisance} must lie in [0, 1]")
    g = NUISANCE_GRID
    grid = rng.uniform(-1.0, 1.0, size=(g, g, 3)).astype(np.float32)
    pos = np.linspace(0.0, g - 1.0, image_size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int32), g - 2)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1.0 - f)[:, :, None] + grid[i0 + 1] * f[:, :, None]  # (S, 5, 3)
    smooth = rows[:, i0] * (1.0 - f)[None, :, :] + rows[:, i0 + 1] * f[None, :, :]  # (S, S, 3)
    noise = rng.uniform(-1.0, 1.0, size=(image_size, image_size, 3)).astype(np.float32)
    texture = 0.5 * smooth + 0.5 * noise
    field = (np.float32(nuisance) * grid).reshape(-1)
    return BACKGROUND_MEAN + BACKGROUND_HALF_BAND * np.float32(nuisance) * texture, field


def render(
    objects: list[tuple[int, int, int, int]], image_size: int, nuisance: float, rng: np.random.Generator
) -> np.ndarray:
    """Renders objects (shape, color, size, cell) over a nuisance background; returns uint8 (S, S, 3)."""
    return composite(objects, background(rng, check_image_size(image_size), nuisance))


def composite(objects: list[tuple[int, int, int, int]], background_SxSx3: np.ndarray) -> np.ndarray:
    """Paints objects (shape, color, size, cell) over a float background; returns uint8 (S, S, 3)."""
    img = background_SxSx3
    alphas = object_alphas(check_image_size(img.shape[0]))
    for shape, color, size, cell in objects:
        a = alphas[cell, shape, size][:, :, None]
        img = img * (1.0 - a) + COLOR_RGB[color][None, None, :] * a
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_example(seed: int, split: str, index: int, image_size: int, nuisance: float) -> dict:
    """Samples and renders example `index` of `split`: image uint8, objects list, caption, QA list and the
    nuisance features (float32 (NUISANCE_DIM,), see `background_and_field`)."""
    rng = scenes_spec.split_rng(seed, split, index)
    objects = scenes_spec.sample_objects(rng, split)
    bg, field = background_and_field(rng, check_image_size(image_size), nuisance)
    return {
        "image": composite(objects, bg),
        "nuisance": field,
        "objects": objects,
        "caption": scenes_spec.caption(objects),
        "qa": scenes_spec.questions_answers(objects),
    }
