"""The InfoTok objective against direct computations with the estimators and NumPy."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infotok_jax import estimators, infotok
from infotok_jax.data import scenes_spec
from infotok_jax.tasks import base


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


def test_relevance_embedding_privileged_variants_are_the_old_targets():
    batch = {"label": jnp.asarray([2, 0]), "objects": jnp.asarray([[[1, 2, 0, 3], [-1] * 4, [-1] * 4]] * 2)}
    label = infotok.relevance_embedding(batch, "label", vocab_size=8, num_classes=3)
    np.testing.assert_array_equal(label, [[0, 0, 1], [1, 0, 0]])
    attributes = infotok.relevance_embedding(batch, "attributes", vocab_size=8, num_classes=0)
    np.testing.assert_array_equal(attributes, infotok.scene_attribute_embedding(batch["objects"]))


def test_text_relevance_is_question_and_answer_bags_of_words():
    batch = {"question_tokens": jnp.asarray([[1, 4, 5, 2, 0]]), "answer_tokens": jnp.asarray([[1, 6, 2, 0]])}
    y = np.asarray(infotok.relevance_embedding(batch, "text", vocab_size=8, num_classes=0))[0]
    q, a = np.zeros(8), np.zeros(8)
    q[[1, 4, 5, 2]] = 0.5  # four words, unit norm
    a[[1, 6, 2]] = 1 / math.sqrt(3)
    np.testing.assert_allclose(y, np.concatenate([q, a]) / math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(y), 1.0, rtol=1e-6)


def _task_config(target: str):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(name="scenes32", text_vocab_size=16, num_classes=0))
    config.infotok = _config(estimator="hsic", relevance_target=target, warmup_steps=0)
    return config


def _scene_batch(seed=0, b=16):
    rng = np.random.default_rng(seed)
    objects = rng.integers(0, 4, size=(b, 3, 4)).astype(np.int32)
    return {
        "image": jnp.asarray(rng.random((b, 8, 8, 3)), jnp.float32),
        "caption_tokens": jnp.asarray(rng.integers(3, 16, size=(b, 6)), jnp.int32),
        "question_tokens": jnp.asarray(rng.integers(3, 16, size=(b, 5)), jnp.int32),
        "answer_tokens": jnp.asarray(rng.integers(3, 16, size=(b, 3)), jnp.int32),
        "objects": jnp.asarray(objects),
        "label": jnp.asarray(rng.integers(0, 3, size=(b,)), jnp.int32),
    }


@pytest.mark.parametrize("target, reads_objects", [("text", False), ("attributes", True)])
def test_label_free_default_never_reads_the_annotation(target, reads_objects):
    """The default Y uses no `objects`/`label`: scrambling them leaves the regularizer unchanged."""
    task = base.ExperimentTask()
    task.config = _task_config(target)
    batch = _scene_batch()
    scrambled = {**batch, "objects": batch["objects"][::-1], "label": batch["label"][::-1] + 1}
    z = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4, 6)), jnp.float32)
    values = [
        infotok.regularizer(task.config.infotok, **task.infotok_views(b, {"z_pre": z}), step=jnp.asarray(0))[
            0
        ]
        for b in (batch, scrambled)
    ]
    assert (float(values[0]) != float(values[1])) == reads_objects


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
        ({"relevance_target": "objects"}, "vq", "relevance_target"),
        ({"control_temperature": 0.0}, "vq", "control_temperature"),
    ],
)
def test_validate_names_the_field(overrides, quantizer, field):
    with pytest.raises(ValueError, match=f"config.infotok.{field}"):
        infotok.validate(_config(**overrides), quantizer)


@pytest.mark.parametrize("hsic_estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("normalized", [True, False])
def test_shared_gram_path_equals_the_per_pair_path(hsic_estimator, normalized):
    """The three dependences from one shared Z side == three separate (n)HSIC calls (the old path)."""
    config = _config(
        estimator="hsic",
        hsic_estimator=hsic_estimator,
        normalized=normalized,
        kernel_x="laplacian",
        kernel_y="linear",
        kernel_t="inverse_multiquadric",
        beta=0.3,
        lambda_y=0.2,
        lambda_c=0.1,
        warmup_steps=0,
    )
    inputs = _inputs(b=24)
    loss, metrics = infotok.regularizer(config, **inputs, tokenizer_out={}, step=jnp.asarray(0))
    z = inputs["z_BxNxD"].mean(axis=1)
    pair = estimators.normalized_hsic if normalized else estimators.hsic
    kw = dict(estimator=hsic_estimator)
    expected = {
        "compression": pair(inputs["x_view_BxF"], z, kernel_x="laplacian", **kw),
        "relevance": pair(z, inputs["y_BxE"], kernel_y="linear", **kw),
        "consistency": pair(z, inputs["t_BxE"], kernel_y="inverse_multiquadric", **kw),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[f"infotok/{name}"], value, rtol=1e-5, atol=1e-7)
    c, r, t = expected.values()
    np.testing.assert_allclose(loss, 0.3 * c - 0.2 * r - 0.1 * t, rtol=1e-5, atol=1e-7)


def test_dependence_metrics_equal_separate_normalized_hsic():
    inputs = _inputs(b=20)
    metrics = infotok.dependence_metrics(_config(), **inputs, tokenizer_out={})
    z = inputs["z_BxNxD"].mean(axis=1)
    np.testing.assert_allclose(
        metrics["nhsic_xz"], estimators.normalized_hsic(inputs["x_view_BxF"], z), rtol=1e-5
    )
    np.testing.assert_allclose(metrics["nhsic_zy"], estimators.normalized_hsic(z, inputs["y_BxE"]), rtol=1e-5)
    np.testing.assert_allclose(metrics["nhsic_zt"], estimators.normalized_hsic(z, inputs["t_BxE"]), rtol=1e-5)


@pytest.mark.parametrize("zeroed, kept", [("lambda_y", "relevance"), ("beta", "compression")])
def test_zero_weight_drops_the_term_and_its_gradient(zeroed, kept):
    """Per-term arms are weight overrides: a 0 weight computes nothing for that term (a NaN input
    there cannot leak) and the gradient is the one of the remaining terms."""
    weights = dict(beta=0.3, lambda_y=0.2, lambda_c=0.1)
    config = _config(estimator="hsic", warmup_steps=0, **{**weights, zeroed: 0.0})
    inputs = _inputs()
    poisoned = {**inputs, {"lambda_y": "y_BxE", "beta": "x_view_BxF"}[zeroed]: jnp.full((16, 3), jnp.nan)}

    def f(z, views):
        return infotok.regularizer(config, **{**views, "z_BxNxD": z}, tokenizer_out={}, step=jnp.asarray(0))

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(inputs["z_BxNxD"], poisoned)
    assert f"infotok/{kept}" not in metrics and "infotok/consistency" in metrics

    def reference(z):
        zp = z.mean(axis=1)
        out = -0.1 * estimators.normalized_hsic(zp, inputs["t_BxE"])
        if zeroed == "lambda_y":
            return out + 0.3 * estimators.normalized_hsic(inputs["x_view_BxF"], zp)
        return out - 0.2 * estimators.normalized_hsic(zp, inputs["y_BxE"])

    np.testing.assert_allclose(loss, reference(inputs["z_BxNxD"]), rtol=1e-5)
    np.testing.assert_allclose(grad, jax.grad(reference)(inputs["z_BxNxD"]), rtol=1e-4, atol=1e-7)


def test_vib_without_its_rate_is_hsic_with_consistency_alone():
    """The study trains "vib: consistency only" once, as "hsic: consistency only" (protocol.same_run_as):
    with beta=0 VIB keeps only the consistency term, as HSIC does with beta=lambda_y=0."""
    inputs = _inputs()
    tokenizer_out = {
        "code_logits": jnp.asarray(np.random.default_rng(3).normal(size=(16, 4, 10)), jnp.float32)
    }

    def f(config, z):
        return infotok.regularizer(
            config, **{**inputs, "z_BxNxD": z}, tokenizer_out=tokenizer_out, step=jnp.asarray(7)
        )

    vib = _config(estimator="vib", beta=0.0)
    hsic = _config(estimator="hsic", beta=0.0, lambda_y=0.0)
    (vib_loss, vib_metrics), vib_grad = jax.value_and_grad(lambda z: f(vib, z), has_aux=True)(
        inputs["z_BxNxD"]
    )
    (hsic_loss, hsic_metrics), hsic_grad = jax.value_and_grad(lambda z: f(hsic, z), has_aux=True)(
        inputs["z_BxNxD"]
    )
    assert float(vib_loss) == float(hsic_loss) != 0.0 and vib_metrics.keys() == hsic_metrics.keys()
    np.testing.assert_array_equal(vib_grad, hsic_grad)


def test_all_weights_zero_is_a_zero_regularizer():
    config = _config(estimator="hsic", beta=0.0, lambda_y=0.0, lambda_c=0.0)
    loss, metrics = infotok.regularizer(config, **_inputs(), tokenizer_out={}, step=jnp.asarray(500))
    assert float(loss) == 0.0 and "infotok/compression" not in metrics


def test_supervised_arm_weights_the_control_losses():
    config = _config(estimator="supervised", lambda_y=0.2, lambda_c=0.1, warmup_steps=10)
    losses = {"probe": jnp.asarray(2.0), "alignment": jnp.asarray(3.0)}
    loss, metrics = infotok.regularizer(
        config, **_inputs(), tokenizer_out={}, step=jnp.asarray(5), control_losses=losses
    )
    np.testing.assert_allclose(loss, 0.5 * (0.2 * 2.0 + 0.1 * 3.0), rtol=1e-6)
    assert metrics["infotok/probe_loss"] == 2.0 and "infotok/compression" not in metrics
    with pytest.raises(ValueError, match="supervised"):
        infotok.regularizer(config, **_inputs(), tokenizer_out={}, step=jnp.asarray(5))


def test_supervised_controls_train_on_a_tiny_problem():
    """Probe and caption InfoNCE heads (plus a trainable encoder) reduce both losses."""
    import optax

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(32, 4)).astype(np.float32)
    images = jnp.asarray(latent @ rng.normal(size=(4, 10)).astype(np.float32))
    y = jnp.asarray(np.abs(latent[:, :3]))
    t = jnp.asarray(np.eye(32, dtype=np.float32)[:, :16] + np.abs(latent[:, :1]))
    heads = infotok.SupervisedControls(y_dim=3, proj_dim=8, temperature=0.1)
    params = {
        "encoder": jnp.asarray(rng.normal(size=(10, 6)).astype(np.float32) * 0.3),
        "heads": heads.init(jax.random.key(0), jnp.zeros((32, 6)), y, t)["params"],
    }

    def losses(p):
        out = heads.apply({"params": p["heads"]}, images @ p["encoder"], y, t)
        return out["probe"] + out["alignment"], out

    opt = optax.adam(1e-2)
    state = opt.init(params)
    first = losses(params)[1]

    @jax.jit
    def step(p, s):
        updates, s = opt.update(jax.grad(lambda q: losses(q)[0])(p), s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(150):
        params, state = step(params, state)
    last = losses(params)[1]
    assert float(last["probe"]) < 0.5 * float(first["probe"])
    assert float(last["alignment"]) < float(first["alignment"]) - 0.5
