"""Dataset preparation: idempotent, atomic, never overwrites, detects missing/corrupt directories."""

import json
import os

import pytest

from infotok_jax import data
from infotok_jax.data import preparation, registry, scenes_builder

KW = dict(num_train=16, num_validation=4, num_test=4, num_holdout=4)


def _snapshot(path):
    return {
        f: (os.path.getmtime(os.path.join(path, f)), os.path.getsize(os.path.join(path, f)))
        for f in os.listdir(path)
    }


def test_prepare_is_idempotent_and_never_overwrites(tmp_path):
    first = data.prepare("scenes32", str(tmp_path), **KW)
    before = _snapshot(first.path)
    again = data.prepare("scenes32", str(tmp_path), **KW)
    assert again == first and _snapshot(first.path) == before
    with pytest.raises(RuntimeError, match="prepared with settings"):
        data.prepare("scenes32", str(tmp_path), **dict(KW, num_train=17))
    assert _snapshot(first.path) == before
    other_config = data.prepare("scenes32", str(tmp_path), nuisance=1.0, **KW)
    assert other_config.path != first.path and _snapshot(first.path) == before
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".incomplete")]


def test_missing_and_corrupt_directories_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"infotok_jax.data.prepare\('scenes32'"):
        data.open_prepared("scenes32", str(tmp_path), **KW)
    prepared = data.prepare("scenes32", str(tmp_path), **KW)
    shard = next(f for f in os.listdir(prepared.path) if "train.array_record" in f)
    with open(os.path.join(prepared.path, shard), "ab") as f:
        f.write(b"x")
    with pytest.raises(RuntimeError, match="corrupt.*wrong size"):
        data.open_prepared("scenes32", str(tmp_path), **KW)
    os.remove(os.path.join(prepared.path, preparation.MARKER))
    with pytest.raises(RuntimeError, match="incomplete"):
        data.prepare("scenes32", str(tmp_path), **KW)  # an incomplete dir is never taken for complete
    with open(os.path.join(prepared.path, preparation.MARKER), "w") as f:
        f.write("{not json")
    with pytest.raises(RuntimeError, match="corrupt"):
        data.open_prepared("scenes32", str(tmp_path), **KW)


def test_interrupted_build_leaves_nothing_that_reads_as_complete(tmp_path, monkeypatch):
    original = scenes_builder.InfotokScenes._generate_examples

    def dying(self, split):
        for i, ex in enumerate(original(self, split)):
            if split == "test" and i == 2:
                raise KeyboardInterrupt("simulated kill")
            yield ex

    monkeypatch.setattr(scenes_builder.InfotokScenes, "_generate_examples", dying)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("scenes32", str(tmp_path), **KW)
    final = data.dataset_path("scenes32", str(tmp_path), **KW)
    assert not os.path.exists(final)
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".incomplete")]
    # a temp dir left by a killed process (dead pid) is swept by the next build
    stale = tmp_path / ".incomplete-scenes32-999999999-deadbeef"
    stale.mkdir()
    monkeypatch.undo()
    prepared = data.prepare("scenes32", str(tmp_path), **KW)
    assert not stale.exists()
    marker = json.loads(open(os.path.join(prepared.path, preparation.MARKER)).read())
    assert marker["num_examples"] == {"train": 16, "validation": 4, "test": 4, "holdout": 4}


def test_registry_names_and_errors():
    assert {"scenes32", "scenes64", "fashion_mnist"} <= set(data.REGISTRY)
    with pytest.raises(ValueError, match="registered names are"):
        registry.get_spec("imagenet")
    assert registry.get_spec("scenes64").image_size == 64
