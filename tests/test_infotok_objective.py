"""The InfoTok objective against direct computations with the estimators and NumPy."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import estimators, infotok
from infotok_jax.data import scenes_spec


def _config(**overrides):
    config = infotok.default_config()
    config.update(overrides)
    return config


def _inputs(seed=0, b=16, n=4, d=6):
    rng = np.random.default_rng(seed)
    return dict(
        x_view_BxF=jnp.asarray(rng.normal(size=(b, 12)), jnp.float32),
        z_BxNxD=jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32),
        y_BxE=jnp.asarray(rng.integers(0, 2, size=(b, 5)), jnp.float32),
        t_BxE=jnp.asarray(rng.normal(size=(b, 7)), jnp.float32),
    )


def test_warmup_factor_ramps_linearly():
    steps = jnp.asarray([0, 50, 100, 400])
    np.testing.assert_allclose(jax.vmap(lambda s: infotok.warmup_factor(s, 100))(steps), [0, 0.5, 1, 1])
    assert float(infotok.warmup_factor(jnp.asarray(0), 0)) == 1.0


def test_pixel_view_is_average_pooling():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    expected = images.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(infotok.pixel_view(jnp.asarray(images), 4), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="x_view_size"):
        infotok.pixel_view(jnp.asarray(images), 3)


def test_scene_attribute_embedding_counts_present_objects():
    objects = jnp.asarray([[[0, 1, 0, 4], [2, 1, 1, 8], [-1, -1, -1, -1]]])
    emb = np.asarray(infotok.scene_attribute_embedding(objects))[0]
    s, c = len(scenes_spec.SHAPES), len(scenes_spec.COLORS)
    assert emb.shape == (s + c + len(scenes_spec.SIZES) + scenes_spec.NUM_CELLS,)
    assert emb[0] == 1 and emb[2] == 1 and emb[:s].sum() == 2
    assert emb[s + 1] == 2 and emb[s : s + c].sum() == 2
    assert emb[s + c + 0] == 1 and emb[s + c + 1] == 1
    assert emb[s + c + 2 + 4] == 1 and emb[s + c + 2 + 8] == 1 and emb.sum() == 8


def test_target_embedding_uses_labels_for_labeled_datasets():
    batch = {"label": jnp.asarray([2, 0]), "objects": -jnp.ones((2, 3, 4), jnp.int32)}
    np.testing.assert_array_equal(infotok.target_embedding(batch, 3), [[0, 0, 1], [1, 0, 0]])
    scenes = {
        "label": -jnp.ones((1,), jnp.int32),
        "objects": jnp.asarray([[[1, 2, 0, 3], [-1] * 4, [-1] * 4]]),
    }
    np.testing.assert_array_equal(
        infotok.target_embedding(scenes, 0), infotok.scene_attribute_embedding(scenes["objects"])
    )


def test_caption_embedding_ignores_padding_and_is_unit_norm():
    tokens = jnp.asarray([[1, 5, 5, 2, 0, 0], [1, 3, 2, 0, 0, 0]])
    emb = np.asarray(infotok.caption_embedding(tokens, 8))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert emb[0, 0] == 0 and emb[0, 5] == pytest.approx(2 / math.sqrt(6))


def test_none_arm_adds_nothing():
    loss, metrics = infotok.regularizer(
        _config(estimator="none"), **_inputs(), tokenizer_out={}, step=jnp.asarray(5)
    )
    assert float(loss) == 0.0 and metrics == {}


def test_hsic_arm_equals_weighted_normalized_hsic_terms():
    config = _config(estimator="hsic", beta=0.3, lambda_y=0.2, lambda_c=0.1, warmup_steps=10)
    inputs = _inputs()
    loss, metrics = infotok.regularizer(config, **inputs, tokenizer_out={}, step=jnp.asarray(5))
    z = inputs["z_BxNxD"].mean(axis=1)
    c = estimators.normalized_hsic(inputs["x_view_BxF"], z)
    r = estimators.normalized_hsic(z, inputs["y_BxE"])
    t = estimators.normalized_hsic(z, inputs["t_BxE"])
    np.testing.assert_allclose(loss, 0.5 * (0.3 * c - 0.2 * r - 0.1 * t), rtol=1e-5)
    np.testing.assert_allclose(metrics["infotok/compression"], c, rtol=1e-6)
    for value in (c, r, t):
        assert 0.0 <= float(value) <= 1.0


def test_fixed_bandwidth_is_used():
    config = _config(estimator="hsic", bandwidth="0.7", warmup_steps=0, beta=1.0, lambda_y=0.0, lambda_c=0.0)
    inputs = _inputs()
    loss, _ = infotok.regularizer(config, **inputs, tokenizer_out={}, step=jnp.asarray(0))
    z = inputs["z_BxNxD"].mean(axis=1)
    expected = estimators.normalized_hsic(inputs["x_view_BxF"], z, bandwidth_x=0.7, bandwidth_y=0.7)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_hsic_arm_gradient_reaches_tokens_and_is_finite():
    config = _config(estimator="hsic", warmup_steps=0)
    inputs = _inputs()

    def f(z):
        return infotok.regularizer(config, **{**inputs, "z_BxNxD": z}, tokenizer_out={}, step=jnp.asarray(0))[
            0
        ]

    grad = jax.grad(f)(inputs["z_BxNxD"])
    chex.assert_tree_all_finite(grad)
    assert float(jnp.abs(grad).sum()) > 0


def test_vib_arm_gaussian_rate_is_the_kl_per_token():
    config = _config(estimator="vib", beta=0.01, lambda_c=0.0, warmup_steps=0)
    rng = np.random.default_rng(1)
    mean = jnp.asarray(rng.normal(size=(16, 4, 6)), jnp.float32)
    log_var = jnp.asarray(rng.normal(size=(16, 4, 6)) * 0.3, jnp.float32)
    loss, metrics = infotok.regularizer(
        config, **_inputs(), tokenizer_out={"mean": mean, "log_var": log_var}, step=jnp.asarray(0)
    )
    m, lv = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    kl_per_token = (0.5 * (m**2 + np.exp(lv) - 1 - lv).sum(-1)).mean()
    np.testing.assert_allclose(loss, 0.01 * kl_per_token, rtol=1e-5)
    np.testing.assert_allclose(metrics["infotok/rate_bits_per_token"], kl_per_token / math.log(2), rtol=1e-5)


def test_vib_arm_vq_rate_is_categorical_kl_to_uniform():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(16, 4, 10)), jnp.float32)
    rate = infotok.rate_nats_per_token({"code_logits": logits})
    q = np.asarray(jax.nn.softmax(logits), np.float64)
    expected = (q * (np.log(q) + math.log(10))).sum(-1).mean()
    np.testing.assert_allclose(rate, expected, rtol=1e-4)


@pytest.mark.parametrize(
    "overrides, quantizer, field",
    [
        ({"estimator": "mine"}, "vq", "estimator"),
        ({"beta": -1.0}, "vq", "beta"),
        ({"lambda_c": -0.1}, "vq", "lambda_c"),
        ({"kernel_z": "cosine"}, "vq", "kernel_z"),
        ({"estimator": "vib"}, "fsq", "estimator"),
        ({"bandwidth": "-2.0"}, "vq", "bandwidth"),
        ({"bandwidth": "wide"}, "vq", "bandwidth"),
    ],
)
def test_validate_names_the_field(overrides, quantizer, field):
    with pytest.raises(ValueError, match=f"config.infotok.{field}"):
        infotok.validate(_config(**overrides), quantizer)
