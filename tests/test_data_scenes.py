"""Captioned-scenes builder: offline build, determinism, compositional holdout, text/attribute agreement."""

import os
import re
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from infotok_jax import data
from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.data.text_tokenizer import WordTokenizer

COUNTS = dict(num_train=120, num_validation=30, num_test=30, num_holdout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    t0 = time.perf_counter()
    prepared = data.prepare("scenes32", str(root / "a"), nuisance=1.0, **COUNTS)
    seconds = time.perf_counter() - t0
    return prepared, seconds, root


def _records(path, split):
    source = tfds.builder_from_directory(path).as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def test_builds_offline_in_seconds_with_requested_counts(built):
    prepared, seconds, _ = built
    assert seconds < 20.0
    assert prepared.num_examples == {"train": 120, "validation": 30, "test": 30, "holdout": 60}
    records = _records(prepared.path, "train")
    assert [int(r["index"]) for r in records] == list(range(120))  # record i is example i
    rec = records[0]
    assert rec["image"].shape == (32, 32, 3) and rec["image"].dtype == np.uint8
    assert not any(
        e.startswith(".incomplete")
        for e in os.listdir(os.path.dirname(os.path.dirname(os.path.dirname(prepared.path))))
    )


def test_two_builds_are_identical(built):
    prepared, _, root = built
    other = data.prepare("scenes32", str(root / "b"), nuisance=1.0, **COUNTS)
    shards = sorted(f for f in os.listdir(prepared.path) if ".array_record" in f)
    assert shards == sorted(f for f in os.listdir(other.path) if ".array_record" in f)
    for f in shards:
        with open(os.path.join(prepared.path, f), "rb") as a, open(os.path.join(other.path, f), "rb") as b:
            assert a.read() == b.read(), f
    with (
        open(os.path.join(prepared.path, "tokenizer.json")) as a,
        open(os.path.join(other.path, "tokenizer.json")) as b,
    ):
        assert a.read() == b.read()


def test_small_build_is_prefix_of_larger_and_seed_changes_content(built):
    prepared, _, root = built
    small = data.prepare(
        "scenes32", str(root / "c"), nuisance=1.0, num_train=10, num_validation=1, num_test=1, num_holdout=1
    )
    big_recs, small_recs = _records(prepared.path, "train"), _records(small.path, "train")
    for a, b in zip(small_recs, big_recs[:10], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["caption"] == b["caption"]
    other_seed = data.prepare(
        "scenes32",
        str(root / "d"),
        nuisance=1.0,
        seed=1,
        num_train=10,
        num_validation=1,
        num_test=1,
        num_holdout=1,
    )
    other_recs = _records(other_seed.path, "train")
    diff = [r["caption"] != s["caption"] for r, s in zip(other_recs, small_recs, strict=True)]
    assert sum(diff) >= 5


def _pairs(records):
    return [{(int(o[0]), int(o[1])) for o in r["objects"] if o[0] >= 0} for r in records]


def test_holdout_is_disjoint_from_training_combinations(built):
    prepared, _, _ = built
    seen = set()
    for split in ("train", "validation", "test"):
        for pairs in _pairs(_records(prepared.path, split)):
            seen |= pairs
    holdout = _pairs(_records(prepared.path, "holdout"))
    held = set(scenes_spec.HOLDOUT_PAIRS)
    assert not seen & held
    assert all(p & held for p in holdout)  # every holdout scene has a held-out combination
    # every shape and every color on its own is still seen in training
    assert {s for s, _ in seen} == set(range(len(scenes_spec.SHAPES)))
    assert {c for _, c in seen} == set(range(len(scenes_spec.COLORS)))


_OBJ_RE = re.compile(r"a (small|large) (\w+) (\w+) ((?:at|on|in) the [\w ]+?)(?: and |$)")


def test_caption_and_qa_agree_with_attributes(built):
    prepared, _, _ = built
    tok = WordTokenizer.load(prepared.tokenizer_path, strict=True)
    for rec in _records(prepared.path, "train")[:60] + _records(prepared.path, "holdout")[:30]:
        objs = [tuple(int(v) for v in o) for o in rec["objects"] if o[0] >= 0]
        assert rec["num_objects"] == len(objs) and 1 <= len(objs) <= 3
        assert len({o[3] for o in objs}) == len(objs)  # distinct cells
        caption = rec["caption"].decode()
        parsed = [
            (
                scenes_spec.SHAPES.index(m[2]),
                scenes_spec.COLORS.index(m[1]),
                scenes_spec.SIZES.index(m[0]),
                scenes_spec.CELL_PHRASES.index(m[3]),
            )
            for m in _OBJ_RE.findall(caption)
        ]
        assert sorted(parsed) == sorted(objs), caption
        assert tok.decode(tok.encode(caption)) == caption
        by_cell = {scenes_spec.CELL_PHRASES[o[3]]: o for o in objs}
        qtypes = set()
        for q, a, t in zip(rec["questions"], rec["answers"], rec["question_types"], strict=True):
            q, a = q.decode(), a.decode()
            qtypes.add(int(t))
            tok.encode(q), tok.encode(a)  # strict: every word is in the closed vocabulary
            if q.startswith("how many"):
                assert a == ["zero", "one", "two", "three"][len(objs)]
            elif q.startswith("where is the"):
                color, shape = q[len("where is the ") : -2].split()
                match = [
                    o for o in objs if scenes_spec.COLORS[o[1]] == color and scenes_spec.SHAPES[o[0]] == shape
                ]
                assert len(match) == 1 and scenes_spec.CELL_PHRASES[match[0][3]] == a
            else:
                where = q.split(" object ")[1][:-2]
                o = by_cell[where]
                expect = {
                    "color": scenes_spec.COLORS[o[1]],
                    "shape": scenes_spec.SHAPES[o[0]],
                    "size": scenes_spec.SIZES[o[2]],
                }[q.split()[1]]
                assert a == expect, (q, a)
        assert qtypes == set(range(len(scenes_spec.QUESTION_TYPES)))


def test_nuisance_stays_in_band_and_background_only():
    rng = np.random.default_rng(0)
    for strength in (0.0, 0.5, 1.0):
        bg = scenes_render.background(rng, 32, strength)
        assert bg.min() >= 0.0 and bg.max() <= 0.4 + 1e-6
        assert np.isclose(bg.std(), 0.0) == (strength == 0.0)
    objs = [(1, 0, 1, 4)]
    a = scenes_render.render(objs, 32, 1.0, np.random.default_rng(1))
    b = scenes_render.render(objs, 32, 1.0, np.random.default_rng(2))
    core = scenes_render.object_alphas(32)[4, 1, 1] == 1.0
    np.testing.assert_array_equal(a[core], b[core])  # object pixels do not depend on the nuisance
    assert np.any(a[~core] != b[~core])


def test_nuisance_field_is_stored_and_is_the_background_the_generator_drew(built):
    prepared, _, _ = built
    records = _records(prepared.path, "validation")
    for i in (0, 7):
        example = scenes_render.render_example(0, "validation", i, 32, 1.0)
        field = records[i]["nuisance"]
        assert field.shape == (scenes_render.NUISANCE_DIM,) and field.dtype == np.float32
        np.testing.assert_array_equal(field, example["nuisance"])
        np.testing.assert_array_equal(records[i]["image"], example["image"])
        # drawing the background again from the example's own stream gives the same field
        rng = scenes_spec.split_rng(0, "validation", i)
        scenes_spec.sample_objects(rng, "validation")
        _, same = scenes_render.background_and_field(rng, 32, 1.0)
        np.testing.assert_array_equal(same, field)
        assert np.abs(field).max() <= 1.0 and field.std() > 0.1
    rng = np.random.default_rng(0)
    assert not scenes_render.background_and_field(rng, 32, 0.0)[1].any()  # strength 0: no nuisance
    half = scenes_render.background_and_field(np.random.default_rng(5), 32, 0.5)[1]
    full = scenes_render.background_and_field(np.random.default_rng(5), 32, 1.0)[1]
    np.testing.assert_allclose(half, 0.5 * full)  # the field scales with the strength


def test_bad_builder_arguments_raise():
    with pytest.raises(ValueError, match="nuisance"):
        data.dataset_path("scenes32", "/nonexistent", nuisance=1.5)
    with pytest.raises(TypeError, match="bad builder arguments"):
        data.dataset_path("scenes32", "/nonexistent", num_trian=3)
    with pytest.raises(ValueError, match="unknown dataset name 'scenes16'"):
        data.prepare("scenes16", "/nonexistent")
