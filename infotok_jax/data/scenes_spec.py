"""What a captioned scene is: attribute vocabularies, deterministic sampling, captions and QA pairs.

A scene is 1-3 objects, each a `(shape, color, size, cell)` tuple of integer ids, in distinct cells of a
3x3 grid, with distinct `(shape, color)` pairs so every question below has a unique referent. Sampling is
a pure function of `(seed, split, index)`, so a build of N examples is a prefix of a build of M > N.

Compositional holdout: the `(shape, color)` pairs in `HOLDOUT_PAIRS` never occur in the train, validation
or test splits; every scene of the holdout split contains at least one of them. Every shape and every
color on its own still occurs in training.

The rendering lives in `scenes_render.py`; this module is text and integers only.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("square", "circle", "triangle", "cross")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZES = ("small", "large")
# Row-major 3x3 grid; cell = 3 * row + col.
CELL_PHRASES = (
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the center",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
)
NUMBER_WORDS = ("zero", "one", "two", "three")
MAX_OBJECTS = 3
NUM_CELLS = 9

QUESTION_TYPES = ("color", "shape", "size", "count", "position")
QT_COLOR, QT_SHAPE, QT_SIZE, QT_COUNT, QT_POSITION = range(len(QUESTION_TYPES))
# Upper bound on QA pairs per scene: color/shape/size/position per object plus one count question.
MAX_QA = 4 * MAX_OBJECTS + 1

HOLDOUT_PAIRS = frozenset({(0, 2), (1, 3), (2, 4), (3, 0)})  # (square, blue), (circle, yellow), ...
SPLITS = ("train", "validation", "test", "holdout")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

_ALL_PAIRS = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLORS))]
_SEEN_PAIRS = [p for p in _ALL_PAIRS if p not in HOLDOUT_PAIRS]
_HELD_PAIRS = sorted(HOLDOUT_PAIRS)


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator for example `index` of `split` (order-free, so builds are prefixes)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"split={split!r} is unknown; use one of {SPLITS}")
    return np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])


def sample_objects(rng: np.random.Generator, split: str) -> list[tuple[int, int, int, int]]:
    """Draws 1-3 objects sorted by cell; holdout scenes contain >= 1 held-out (shape, color) pair."""
    num = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = sorted(int(c) for c in rng.choice(NUM_CELLS, size=num, replace=False))
    if split == "holdout":
        first = _HELD_PAIRS[int(rng.integers(len(_HELD_PAIRS)))]
        pool = _ALL_PAIRS
    else:
        first = _SEEN_PAIRS[int(rng.integers(len(_SEEN_PAIRS)))]
        pool = _SEEN_PAIRS
    pairs = [first]
    while len(pairs) < num:
        cand = pool[int(rng.integers(len(pool)))]
        if cand not in pairs:
            pairs.append(cand)
    order = rng.permutation(num)  # the forced pair lands in a random cell
    sizes = rng.integers(len(SIZES), size=num)
    return [(pairs[order[i]][0], pairs[order[i]][1], int(sizes[i]), cells[i]) for i in range(num)]


def objects_to_array(objects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Fixed-size int32 (MAX_OBJECTS, 4) form, rows (shape, color, size, cell), padded with -1."""
    out_Ox4 = np.full((MAX_OBJECTS, 4), -1, np.int32)
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects per scene, got {len(objects)}")
    for i, obj in enumerate(objects):
        out_Ox4[i] = obj
    return out_Ox4


def array_to_objects(objects_Ox4: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Inverse of `objects_to_array`: drops rows whose shape id is -1."""
    arr = np.asarray(objects_Ox4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"objects array must have shape (N, 4) (shape, color, size, cell); got {arr.shape}")
    return [tuple(int(v) for v in row) for row in arr if row[0] >= 0]


def describe(obj: tuple[int, int, int, int]) -> str:
    """'a small red circle on the left'."""
    shape, color, size, cell = obj
    return f"a {SIZES[size]} {COLORS[color]} {SHAPES[shape]} {CELL_PHRASES[cell]}"


def caption(objects: list[tuple[int, int, int, int]]) -> str:
    """Caption listing the objects in cell order, joined by 'and'."""
    return " and ".join(describe(o) for o in objects)


def questions_answers(objects: list[tuple[int, int, int, int]]) -> list[tuple[str, str, int]]:
    """All (question, answer, question_type) pairs of a scene; referents are unique by construction."""
    qa = []
    for shape, color, size, cell in objects:
        where = CELL_PHRASES[cell]
        qa.append((f"what color is the object {where} ?", COLORS[color], QT_COLOR))
        qa.append((f"what shape is the object {where} ?", SHAPES[shape], QT_SHAPE))
        qa.append((f"what size is the object {where} ?", SIZES[size], QT_SIZE))
        qa.append((f"where is the {COLORS[color]} {SHAPES[shape]} ?", where, QT_POSITION))
    qa.append(("how many objects are there ?", NUMBER_WORDS[len(objects)], QT_COUNT))
    return qa


def vocabulary() -> list[str]:
    """Every word any caption, question or answer of this module can contain (sorted, deterministic)."""
    words = set(SHAPES + COLORS + SIZES + NUMBER_WORDS + ("a", "and"))
    for phrase in CELL_PHRASES:
        words.update(phrase.split())
    for q, a, _ in questions_answers([(0, 0, 0, 0)]):  # every template occurs for one object
        words.update(q.split())
        words.update(a.split())
    return sorted(words)
