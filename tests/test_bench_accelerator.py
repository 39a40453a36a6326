"""CPU proof for experiments/bench_accelerator.py (driver) and infotok_jax.benchmarks (library): every
section is produced with finite numbers and every fast path (dense/blocked x fast/exact, value and
gradient, batched) equals the float64 reference.

The benchmark's own float64 reference is checked against the explicit-H NumPy reference of the estimator
tests and its analytic gradient against finite differences, so its accuracy columns mean what they say.
The train-step section runs the tokenizer arms here (hosts compile too slowly for this file's budget);
the host sequence-length bookkeeping behind the LM FLOP count is checked against the hosts' own layouts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import estimators as est
from infotok_jax import tokenizer as tok
from infotok_jax.benchmarks import PROFILES, hsic_bench, step_bench
from infotok_jax.mllm.hosts import sequences as host_sequences
from tests import estimator_references as ref

REPO = pathlib.Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_accelerator", REPO / "experiments" / "bench_accelerator.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

pytestmark = pytest.mark.slow  # scheduled early, together: the module fixture runs the benchmark once


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    returned = bench.main(
        ["--tiny", "--step_models", "tokenizer", "--reps", "2", "--compile_threads", "2", "--out", str(out)]
    )
    return returned, json.loads(out.read_text())


def _finite_positive(*values: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


def test_every_section_present_with_finite_numbers(run):
    returned, data = run
    assert data["markdown"] == returned["markdown"] and data["done"] == [{"ok": True}]
    assert {r["what"] for r in data["floors"]} == {"bf16", "float32 DEFAULT (TF32)", "float32 HIGHEST"}
    assert all(_finite_positive(r["tflops"]) for r in data["floors"])
    sizes = PROFILES["tiny"]["sizes"]
    combos = {(r["n"], r["precision"], r["variant"]) for r in data["hsic"]}
    assert combos == {(n, p, v) for n in sizes for p in ("fast", "exact") for v in ("dense", "blocked")}
    for r in data["hsic"]:
        assert _finite_positive(
            r["fwd_s"],
            r["fwd_bwd_s"],
            r["floor_s"],
            r["fwd_over_floor"],
            r["fwd_bwd_over_floor"],
            r["median_bw_s"],
            r["value"],
        )
    memory = {(r["n"], r["precision"]) for r in data["memory"]}
    assert memory == {(n, p) for n in sizes for p in ("fast", "exact")}
    assert all(_finite_positive(r["temp_bytes"], r["temp_over_n_d"]) for r in data["memory"])
    (batched,) = data["batched"]
    assert batched["sets"] == 12 and _finite_positive(
        batched["batched_s"], batched["separate_s"], batched["batched_over_floor"], batched["speedup"]
    )
    steps = [(r["kind"], r["estimator"]) for r in data["steps"]]
    assert steps == [("tokenizer", a) for a in step_bench.ALL_ARMS]
    for r in data["steps"]:
        assert r["loss_finite"]
        assert _finite_positive(r["step_s"], r["mfu"], r["model_flops"], r["images_per_s"])
        assert math.isfinite(r["overhead_pct"])
    for title in ("Matmul rates", "HSIC", "Batched HSIC", "Compiled memory", "Train steps"):
        assert f"## {title}" in data["markdown"]


def test_every_hsic_accuracy_check_passed(run):
    _, data = run
    for r in data["hsic"]:
        assert r["check_passed"], r
        assert r["rel_err"] <= hsic_bench.VALUE_TOL[r["precision"]]
        assert r["grad_rel_err"] <= hsic_bench.GRAD_TOL[r["precision"]]
    assert data["batched"][0]["check_passed"] and data["checks_passed"]


def test_reference_matches_explicit_h_and_finite_differences():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
    y[:, 0] += np.tanh(x[:, 0])
    bw = (1.3, 0.9)
    value, grad = hsic_bench.reference(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), bw)
    x32, y32 = np.asarray(x, np.float32).astype(np.float64), np.asarray(y, np.float32).astype(np.float64)
    explicit = lambda a: ref.hsic_biased(ref.gram(a, "gaussian", bw[0]), ref.gram(y32, "gaussian", bw[1]))  # noqa: E731
    np.testing.assert_allclose(value, explicit(x32), rtol=1e-10)
    eps, numeric = 1e-6, np.zeros_like(x32)
    for index in np.ndindex(*x32.shape):
        step = np.zeros_like(x32)
        step[index] = eps
        numeric[index] = (explicit(x32 + step) - explicit(x32 - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_dense_helper_is_the_public_dense_path():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((64, 5)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((64, 4)), jnp.float32) + x[:, :4]
    expected = est.hsic(x, y, bandwidth_x=2.0, bandwidth_y=1.5)  # n <= 1024, block_size=None: dense
    np.testing.assert_allclose(hsic_bench.dense_hsic(x, y, (2.0, 1.5), "exact"), expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["ar", "masked", "continuous"])
def test_lm_sequence_lengths_match_host_layouts(kind):
    c = step_bench.host_config(kind, "tiny")
    v, n, b = host_sequences.vocab_for(c), tok.num_tokens(c.tokenizer), 2
    question = jnp.ones((b, c.max_question_len), jnp.int32)
    answer = jnp.ones((b, c.max_answer_len), jnp.int32)
    caption = jnp.ones((b, c.max_caption_len), jnp.int32)
    und = host_sequences.understanding_layout(question, answer, n, v, c.pad_id)["tokens"].shape[1]
    gen = host_sequences.generation_layout(caption, n, v, c.pad_id, with_eoi=kind != "ar")["tokens"].shape[1]
    assert step_bench.lm_sequence_lengths(c) == (und, gen)
