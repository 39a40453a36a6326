"""Reconstruction PSNR against numpy, the flat metrics / Markdown / JSON report, and the PNG grids."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from infotok_jax import data
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import generation, grids, information_plane, reconstruction, report, understanding

SIZES = {"num_train": 64, "num_validation": 32, "num_test": 32, "num_holdout": 32}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("scenes"))
    prepared = data.prepare("scenes32", data_dir, **SIZES)
    batches = list(data.iterate_numpy("scenes32", data_dir, "validation", 12, dataset_kwargs=SIZES))
    return {"tok": WordTokenizer.load(prepared.tokenizer_path), "batches": batches}


def test_identity_reconstruction_is_capped(scenes):
    res = reconstruction.evaluate_reconstruction(lambda x: jnp.asarray(x), scenes["batches"])
    assert res == {"psnr": reconstruction.PSNR_CAP_DB, "mse": 0.0, "num_examples": 32}


def test_constant_gray_psnr_matches_numpy(scenes):
    res = reconstruction.evaluate_reconstruction(lambda x: np.full_like(x, 0.5), scenes["batches"])
    x = np.concatenate([b["image"] for b in scenes["batches"]]).astype(np.float64)
    mse = ((x - 0.5) ** 2).reshape(len(x), -1).mean(axis=1)
    assert res["mse"] == pytest.approx(mse.mean(), rel=1e-9)
    assert res["psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / mse)), rel=1e-9)
    gray = lambda x: np.full_like(x, 0.5)
    one = reconstruction.evaluate_reconstruction(gray, scenes["batches"], max_batches=1)
    assert one["num_examples"] == 12
    assert one["psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / mse[:12])), rel=1e-9)


def test_reconstruction_errors(scenes):
    with pytest.raises(ValueError, match="reconstruct_fn gave images of shape"):
        reconstruction.evaluate_reconstruction(lambda x: x[:, :16], scenes["batches"])
    with pytest.raises(ValueError, match="max_batches"):
        reconstruction.evaluate_reconstruction(lambda x: x, scenes["batches"], max_batches=0)


def _table_cells(markdown):
    """{row label: [cell texts]} of a Markdown table."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def test_report_flat_metrics_table_and_json(scenes, tmp_path):
    batches, tok = scenes["batches"], scenes["tok"]
    zeros = lambda im, q, n: np.zeros((len(im), n), np.int32)
    answer = understanding.evaluate_understanding(zeros, batches, tok)
    pairs = [(x, a) for b in batches for x, a in zip(b["image"], b["answer_tokens"], strict=True)]
    oracle_answers = {x.tobytes(): a for x, a in pairs}
    perfect = understanding.evaluate_understanding(
        lambda im, q, n: np.stack([oracle_answers[x.tobytes()] for x in im]), batches, tok
    )
    recon = reconstruction.evaluate_reconstruction(lambda x: np.full_like(x, 0.5), batches)
    columns = {
        "validation": {"understanding": perfect, "reconstruction": recon},
        "holdout": {"understanding": answer},
    }
    flat = report.flatten_metrics(columns)
    assert flat["validation/understanding/accuracy"] == 1.0
    assert flat["holdout/understanding/chance_accuracy_color"] == pytest.approx(1 / 6)
    assert flat["validation/reconstruction/psnr"] == recon["psnr"]
    assert not any(k.endswith("/examples") for k in flat)

    cells = _table_cells(report.markdown_table(columns))
    refs = lambda r, m: (
        f"blind {r['floor_blind_' + m]:.3f}, majority {r['floor_majority_' + m]:.3f}, "  # noqa: E731
        f"chance {r['chance_' + m]:.3f}"
    )
    assert cells["understanding accuracy"][0] == f"1.000 ({refs(perfect, 'accuracy')})"
    assert cells["understanding accuracy"][1] == f"0.000 ({refs(answer, 'accuracy')})"
    assert float(cells["reconstruction psnr"][0]) == pytest.approx(recon["psnr"], abs=5e-4)
    assert cells["reconstruction psnr"][1] == ""
    assert cells["understanding num_examples"] == ["32", "32"]
    assert not any(label.split()[1].startswith(("floor_", "chance_")) for label in cells)  # no own rows
    for name in ("color", "shape", "size", "count", "position"):
        value, rest = cells[f"understanding accuracy_{name}"][0].rstrip(")").split(" (")
        chance = rest.split("chance ")[1]
        assert float(chance) == pytest.approx(perfect[f"chance_accuracy_{name}"], abs=5e-4)
        expected = perfect[f"accuracy_{name}"]
        assert value == "n/a" if math.isnan(expected) else float(value) == expected

    paths = report.write_report(str(tmp_path / "out"), columns, title="test")
    loaded = json.loads(open(paths["json"]).read())
    assert loaded == {k: (None if math.isnan(v) else v) for k, v in flat.items()}
    assert open(paths["json"]).read() == report.to_json(columns)  # deterministic bytes
    assert "| understanding accuracy | 1.000" in open(paths["markdown"]).read()
    assert set(paths) == {"json", "markdown", "validation_qa", "holdout_qa"}
    width, height = Image.open(paths["validation_qa"]).size
    assert (width, height) == grids.grid_pixels(16, 6, (1.8, 2.2), 100)


def test_grids_have_the_requested_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    gens = [
        {
            "image": rng.uniform(size=(32, 32, 3)),
            "caption": f"a small red circle number {i}",
            "all_correct": i % 2 == 0,
        }
        for i in range(11)
    ]
    path = str(tmp_path / "g.png")
    grids.generation_grid(gens, path, columns=4, cell_inches=(1.5, 2.0), dpi=80, title="gens")
    image = Image.open(path)
    assert image.size == (round(4 * 1.5 * 80), round(3 * 2.0 * 80))  # 4 columns, ceil(11 / 4) = 3 rows
    pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
    assert pixels.std() > 0.05  # the images were drawn, not a blank canvas
    qas = [
        {
            "image": rng.uniform(size=(64, 64, 3)),
            "question": "what color is it ?",
            "predicted": "red",
            "answer": "blue",
            "correct": False,
        }
    ] * 3
    grids.qa_grid(qas, str(tmp_path / "q.png"), columns=6, cell_inches=(1.8, 2.2), dpi=50)
    assert Image.open(tmp_path / "q.png").size == (round(3 * 1.8 * 50), round(1 * 2.2 * 50))
    with pytest.raises(ValueError, match="examples is empty"):
        grids.qa_grid([], str(tmp_path / "e.png"))


def test_evaluate_splits_equals_the_individual_evaluators(scenes):
    batches, tok, key = scenes["batches"], scenes["tok"], jax.random.key(0)
    zeros = lambda im, q, n: np.zeros((len(im), n), np.int32)
    blank = lambda c, k: np.zeros((len(c), 32, 32, 3), np.float32)
    gray = lambda x: np.full_like(x, 0.5)
    encode = lambda x: x.reshape(len(x), 16, -1)
    columns = report.evaluate_splits(
        lambda split: iter(batches),
        ["validation", "again"],
        tokenizer=tok,
        key=key,
        image_size=32,
        answer_fn=zeros,
        generate_fn=blank,
        reconstruct_fn=gray,
        encode_fn=encode,
        max_batches=2,
        information_examples=20,
    )
    assert list(columns) == ["validation", "again"]
    direct = {
        "understanding": understanding.evaluate_understanding(zeros, batches, tok, max_batches=2),
        "generation": generation.evaluate_generation(
            blank, batches, key, 32, 2, tokenizer=tok, reconstruct_fn=gray
        ),
        "reconstruction": reconstruction.evaluate_reconstruction(gray, batches, max_batches=2),
        "information": information_plane.evaluate_information(encode, batches, num_examples=20),
    }
    for name in columns:
        assert report.to_json(columns[name]) == report.to_json(direct)  # NaN-safe comparison
    assert columns["validation"]["reconstruction"]["num_examples"] == 24
    assert columns["validation"]["information"]["num_examples"] == 20


def test_the_evaluator_tokenizes_each_distinct_batch_once():
    from infotok_jax.evaluate import checkpoint_eval

    seen = []
    tokenize = checkpoint_eval.TokenizeOnce(lambda variables, x: seen.append(x) or {"z": 2 * x})
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    tokenize(None, a)
    tokenize(None, a.copy())  # the same images in a new array: no second pass
    tokenize(None, b)
    assert len(seen) == 2 and (tokenize(None, a)["z"] == 2).all() and len(seen) == 2
