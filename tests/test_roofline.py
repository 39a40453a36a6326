"""The roofline and profile benchmarks measure what they say (issue 27): the matrix products found in a
lowered program and their FLOPs match XLA's own count, calls are counted per call, convolutions as GEMMs,
and a profiled train step is attributed to its model parts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from infotok_jax.benchmarks import roofline, roofline_report, step_profile


def test_matrix_products_of_a_matmul_program_match_xlas_flops():
    def f(x_BxTxD, w_DxM, v_MxD):
        return jnp.einsum("btm,md->btd", jnp.einsum("btd,dm->btm", x_BxTxD, w_DxM), v_MxD).sum()

    args = (jnp.ones((2, 5, 4)), jnp.ones((4, 6)), jnp.ones((6, 4)))
    lowered = jax.jit(jax.grad(f, argnums=(1, 2))).lower(*args)
    products = roofline.matrix_products(lowered.as_text())
    # h = x w forward (the output product is dead: sum's cotangent is ones), then dH = 1 v^T, dW = x^T dH
    # and dV = h^T 1; dH and h have the same GEMM shape
    assert products == {(1, 10, 4, 6, "f32"): 2, (1, 4, 10, 6, "f32"): 1, (1, 6, 10, 4, "f32"): 1}
    xla = lowered.compile().cost_analysis()
    xla = xla[0] if isinstance(xla, list | tuple) else xla
    assert roofline.product_flops(products) == pytest.approx(xla["flops"], rel=0.05)  # + a few adds


def test_a_function_called_twice_counts_twice_and_a_convolution_counts_as_its_gemm():
    @jax.jit
    def inner(a, b):
        return a @ b

    def f(a, b, image, kernel):
        conv = jax.lax.conv_general_dilated(
            image, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return inner(a, b) + inner(a, b + 1.0), conv

    text = (
        jax.jit(f)
        .lower(jnp.ones((3, 4)), jnp.ones((4, 5)), jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 7)))
        .as_text()
    )
    products = roofline.matrix_products(text)
    assert products[(1, 3, 4, 5, "f32")] == 2
    assert products[(1, 2 * 8 * 8, 3 * 3 * 3, 7, "f32")] == 1  # M = output positions, K = window x C_in


def test_profile_parts_follow_the_name_stack():
    assert step_profile.part_of("jit(train_step)/optimizer/add", "") == "optimizer"
    assert step_profile.part_of("jit(train_step)/jvp(ARHost)/tokenizer/encoder/conv", "conv") == (
        "tokenizer convolutions"
    )
    assert step_profile.part_of(".../run_lm/lm/closed_call/layers/attn/attention_core/exp", "") == "attention"
    assert step_profile.part_of(".../run_lm/lm/closed_call/layers/mlp/dot_general", "dot") == "LM matmuls"
    assert step_profile.part_of("jit(train_step)/infotok_regularizer/mul", "") == "regularizer"
    assert step_profile.part_of(None, "") == "other"


@pytest.mark.slow
def test_the_report_of_a_tiny_host_step_attributes_its_time():
    square = {"float32": 1e11, "bfloat16": 1e11}  # not measured here: only the ratios use it
    (row,) = roofline_report.rows(("host=ar,tiny,batch=8",), square, steps=2, profile_steps=1)
    assert row["step_s"] > 0 and row["own_matmul_s"] > 0 and row["matmul_flops"] > 0
    assert row["xla_flops"] > 0 and row["lm_flops"] > 0
    parts = row["profile_s"]
    assert set(parts) == set(step_profile.PARTS)
    for part in ("tokenizer convolutions", "LM matmuls", "attention", "optimizer"):
        assert parts[part] > 0, part
    assert row["host_side_s"]["metrics fetch, one step"] > 0
    table = roofline_report.markdown(
        {"device": "cpu", "jax": jax.__version__, "date": "-", "square_size": 1, "square_rates": square},
        [row],
    )
    assert "| LM matmuls |" in table and "host=ar,tiny,batch=8" in table
