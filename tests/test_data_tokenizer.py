"""Closed word-level tokenizer: ids, round trips, fixed-length batches, deterministic JSON."""

import numpy as np
import pytest

from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.data.text_tokenizer import TextTokenizer, WordTokenizer


def _scene_tokenizer(strict=True):
    return WordTokenizer(scenes_spec.vocabulary(), strict=strict)


def test_special_ids_and_protocol():
    tok = _scene_tokenizer()
    assert isinstance(tok, TextTokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size == 4 + len(scenes_spec.vocabulary())
    assert len(set(tok.words)) == tok.vocab_size


def test_every_scene_text_round_trips_in_strict_mode():
    tok = _scene_tokenizer()
    for i in range(200):
        ex = scenes_render.render_example(0, "holdout" if i % 2 else "train", i, 32, 0.0)
        texts = [ex["caption"]] + [t for q, a, _ in ex["qa"] for t in (q, a)]
        for text in texts:
            ids = tok.encode(text)
            assert min(ids) >= 4 and tok.decode(ids) == text


def test_batch_encode_layout():
    tok = _scene_tokenizer()
    texts = ["a small red circle on the left", "how many objects are there ?"]
    out = tok.batch_encode(texts, 12)
    assert out.dtype == np.int32 and out.shape == (2, 12)
    for row, text in zip(out, texts, strict=True):
        n = len(text.split())
        assert row[0] == tok.bos_id and row[n + 1] == tok.eos_id and np.all(row[n + 2 :] == tok.pad_id)
        assert tok.decode(row) == text
    with pytest.raises(ValueError, match="needs 9 tokens"):
        tok.batch_encode(texts[:1], 8)
    truncated = tok.batch_encode(texts[:1], 5, truncate=True)[0]
    assert truncated[-1] == tok.eos_id and tok.decode(truncated) == "a small red"


def test_unknown_words():
    with pytest.raises(ValueError, match="'purple'"):
        _scene_tokenizer(strict=True).encode("a purple circle")
    lenient = _scene_tokenizer(strict=False)
    assert lenient.encode("a purple circle")[1] == lenient.unk_id


def test_json_is_deterministic_and_round_trips(tmp_path):
    a = WordTokenizer(reversed(scenes_spec.vocabulary()))
    b = WordTokenizer.from_texts(["x y"] and scenes_spec.vocabulary())
    assert a.to_json() == b.to_json()
    a.save(tmp_path / "tok.json")
    loaded = WordTokenizer.load(tmp_path / "tok.json")
    assert loaded.words == a.words
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an"):
        WordTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="prepare the dataset"):
        WordTokenizer.load(tmp_path / "missing.json")
