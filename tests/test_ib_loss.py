"""`infotok.ib_loss`, the plain-function InfoTok objective, and the config adapter built on it.

Sharded cases use the 8 simulated CPU devices of conftest.py, as tests/test_estimators_sharding.py does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from infotok_jax import estimators, infotok
from infotok_jax.sharding import make_mesh


def _views(seed=0, b=16, n=4, d=6):
    rng = np.random.default_rng(seed)
    return dict(
        x=jnp.asarray(rng.normal(size=(b, 12)), jnp.float32),
        z=jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32),
        y=jnp.asarray(rng.integers(0, 2, size=(b, 5)), jnp.float32),
        t=jnp.asarray(rng.normal(size=(b, 7)), jnp.float32),
    )


# (config overrides, tokenizer_out maker, step) -> (loss, sum |d loss / d z|, metrics) from the
# config-driven `infotok.regularizer` at 5031a63, before it called `ib_loss`, on `_views()`.
_RATE_RNG_SEED = 9
OLD_PATH = {
    "hsic_default": (
        dict(estimator="hsic"),
        None,
        150,
        -0.03493092209100723,
        0.08686935901641846,
        {
            "infotok/compression": 0.5577413439750671,
            "infotok/consistency": 0.5292143225669861,
            "infotok/regularizer": -0.046574562788009644,
            "infotok/relevance": 0.4692058563232422,
            "infotok/weight": 0.75,
        },
    ),
    "hsic_flat_unbiased_kernels": (
        dict(
            estimator="hsic",
            z_view="flat",
            hsic_estimator="unbiased",
            normalized=False,
            kernel_x="laplacian",
            kernel_y="linear",
            kernel_t="inverse_multiquadric",
            beta=0.3,
            lambda_y=0.2,
            lambda_c=0.1,
            warmup_steps=0,
        ),
        None,
        0,
        0.00045547643094323575,
        0.014235176146030426,
        {
            "infotok/compression": 0.00013882460189051926,
            "infotok/consistency": 0.0009481850429438055,
            "infotok/regularizer": 0.00045547643094323575,
            "infotok/relevance": -0.0025432375259697437,
            "infotok/weight": 1.0,
        },
    ),
    "hsic_fixed_bandwidth_no_relevance": (
        dict(estimator="hsic", bandwidth="0.7", lambda_y=0.0, warmup_steps=10),
        None,
        5,
        -0.019270529970526695,
        0.016112439334392548,
        {
            "infotok/compression": 0.92676842212677,
            "infotok/consistency": 0.8820334076881409,
            "infotok/regularizer": -0.03854105994105339,
            "infotok/weight": 0.5,
        },
    ),
    "vib_gaussian": (
        dict(estimator="vib", beta=0.01, lambda_c=0.2, warmup_steps=0),
        "gaussian",
        0,
        -0.07484446465969086,
        0.2903936803340912,
        {
            "infotok/consistency": 0.5292143225669861,
            "infotok/rate_bits_per_token": 4.472124099731445,
            "infotok/regularizer": -0.07484446465969086,
            "infotok/weight": 1.0,
        },
    ),
    "vib_vq_warmup": (
        dict(estimator="vib", beta=0.02, lambda_c=0.1, warmup_steps=100),
        "vq",
        40,
        -0.018275588750839233,
        0.058078739792108536,
        {
            "infotok/consistency": 0.5292143225669861,
            "infotok/rate_bits_per_token": 0.5217117071151733,
            "infotok/regularizer": -0.045688971877098083,
            "infotok/weight": 0.4000000059604645,
        },
    ),
}


def _tokenizer_out(kind):
    rng = np.random.default_rng(_RATE_RNG_SEED)
    mean = jnp.asarray(rng.normal(size=(16, 4, 6)), jnp.float32)
    log_var = jnp.asarray(rng.normal(size=(16, 4, 6)) * 0.3, jnp.float32)
    logits = jnp.asarray(rng.normal(size=(16, 4, 10)), jnp.float32)
    return {None: {}, "gaussian": {"mean": mean, "log_var": log_var}, "vq": {"code_logits": logits}}[kind]


@pytest.mark.parametrize("case", sorted(OLD_PATH))
def test_config_adapter_reproduces_the_old_regularizer(case):
    overrides, tokenizer_kind, step, loss_old, grad_old, metrics_old = OLD_PATH[case]
    config = infotok.default_config()
    config.update(overrides)
    v = _views()
    inputs = dict(x_view_BxF=v["x"], y_BxE=v["y"], t_BxE=v["t"], tokenizer_out=_tokenizer_out(tokenizer_kind))

    def f(z):
        return infotok.regularizer(config, **inputs, z_BxNxD=z, step=jnp.asarray(step))

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(v["z"])
    np.testing.assert_allclose(loss, loss_old, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jnp.abs(grad).sum(), grad_old, rtol=1e-5)
    assert metrics.keys() == metrics_old.keys()
    for name, value in metrics_old.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("z_view", ["pooled", "flat"])
def test_hsic_terms_are_the_normalized_hsic_of_each_view(z_view):
    v = _views()
    loss, terms = infotok.ib_loss(
        v["z"], x=v["x"], y=v["y"], t=v["t"], beta=0.3, lambda_y=0.2, lambda_c=0.1, z_view=z_view
    )
    z = v["z"].mean(axis=1) if z_view == "pooled" else v["z"].reshape(16, -1)
    expected = {
        "compression": estimators.normalized_hsic(v["x"], z),
        "relevance": estimators.normalized_hsic(z, v["y"]),
        "consistency": estimators.normalized_hsic(z, v["t"]),
    }
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=1e-5)
    c, r, t = expected.values()
    np.testing.assert_allclose(loss, 0.3 * c - 0.2 * r - 0.1 * t, rtol=1e-5)


def test_a_rank_2_latent_is_one_token_per_example():
    v = _views()
    z_BxD = v["z"].reshape(16, -1)
    flat = infotok.ib_loss(v["z"], t=v["t"], z_view="flat")
    direct = infotok.ib_loss(z_BxD, t=v["t"])
    np.testing.assert_allclose(direct[0], flat[0], rtol=1e-6)
    np.testing.assert_allclose(direct[0], -0.05 * estimators.normalized_hsic(z_BxD, v["t"]), rtol=1e-5)


def test_terms_are_on_only_when_their_input_is_given():
    v = _views()
    loss, terms = infotok.ib_loss(v["z"], t=v["t"])
    assert terms.keys() == {"consistency"}
    np.testing.assert_allclose(loss, -0.05 * terms["consistency"], rtol=1e-6)
    loss, terms = infotok.ib_loss(v["z"])
    assert float(loss) == 0.0 and terms == {}
    # a 0 weight computes nothing: a NaN input there cannot reach the loss or the gradient
    poisoned_y = jnp.full((16, 5), jnp.nan)
    value, grad = jax.value_and_grad(lambda z: infotok.ib_loss(z, y=poisoned_y, t=v["t"], lambda_y=0.0)[0])(
        v["z"]
    )
    assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))


def test_vib_adds_the_callers_rate():
    v = _views()
    rng = np.random.default_rng(1)
    mean = jnp.asarray(rng.normal(size=(16, 4, 6)), jnp.float32)
    log_var = jnp.asarray(rng.normal(size=(16, 4, 6)) * 0.3, jnp.float32)
    rate = estimators.gaussian_kl(mean, log_var).mean()
    loss, terms = infotok.ib_loss(mean, t=v["t"], rate=rate, estimator="vib", beta=0.01)
    assert terms.keys() == {"consistency", "rate"}
    np.testing.assert_allclose(loss, 0.01 * rate - 0.05 * terms["consistency"], rtol=1e-6)
    grad = jax.grad(
        lambda lv: infotok.ib_loss(mean, rate=estimators.gaussian_kl(mean, lv).mean(), estimator="vib")[0]
    )(log_var)
    assert float(jnp.abs(grad).sum()) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(estimator="mine"), r"estimator must be one of \('vib', 'hsic'\)"),
        (dict(z_view="mean"), r"z_view must be one of \('pooled', 'flat'\)"),
        (dict(kernel="cosine"), "kernel_x must be one of"),
        (dict(kernel_t="rbf"), "kernel_t must be one of"),
        (dict(hsic_estimator="plugin"), "hsic_estimator must be one of"),
        (dict(bandwidth="wide"), "bandwidth must be"),
        (dict(bandwidth=-1.0), "bandwidth must be"),
        (dict(beta=-0.1), "beta must be >= 0"),
        (dict(lambda_c="0.1x"), "lambda_c must be a number"),
        (dict(rate=1.0), "rate= is the compression of estimator='vib'"),
        (dict(estimator="vib", x="x"), "estimator='vib' takes its compression from rate="),
        (dict(estimator="vib", rate=jnp.ones(3)), "rate must be a scalar"),
        (dict(t=jnp.ones((8, 3))), "same number of samples"),
        (dict(t=jnp.ones((16,))), "t must have rank 2"),
    ],
)
def test_every_choice_is_checked_with_the_valid_values(kwargs, match):
    v = _views()
    kwargs = {k: v["x"] if a == "x" else a for k, a in kwargs.items()}
    kwargs.setdefault("t", v["t"])
    with pytest.raises((ValueError, TypeError), match=match):
        infotok.ib_loss(v["z"], **kwargs)


def test_bad_latent_rank_and_unknown_token_view_fail():
    with pytest.raises(ValueError, match=r"\(B, D\) or \(B, N, D\)"):
        infotok.ib_loss(jnp.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="z_view must be one of"):
        infotok.token_view(jnp.ones((2, 3, 4)), "max")


def test_unvalidated_config_with_unknown_estimator_fails_instead_of_running_hsic():
    config = infotok.default_config()
    config.estimator = "mine"
    v = _views()
    with pytest.raises(ValueError, match=r"config.infotok.estimator: .*'mine'.*'none', 'vib', 'hsic'"):
        infotok.regularizer(
            config, x_view_BxF=v["x"], z_BxNxD=v["z"], y_BxE=v["y"], t_BxE=v["t"], tokenizer_out={}, step=0
        )


def test_jit_and_vmap_match_the_eager_value():
    v = _views()
    f = lambda z: infotok.ib_loss(z, x=v["x"], y=v["y"], t=v["t"])[0]
    eager = f(v["z"])
    np.testing.assert_allclose(jax.jit(f)(v["z"]), eager, rtol=1e-6)
    z_stack = jnp.stack([v["z"], 2.0 * v["z"] + 1.0, _views(seed=3)["z"]])
    batched = jax.vmap(f)(z_stack)
    for i in range(3):
        np.testing.assert_allclose(batched[i], f(z_stack[i]), rtol=1e-5)


def test_sharded_global_batch_equals_single_device():
    assert jax.device_count() == 8
    mesh = make_mesh((8, 1, 1))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    v = _views(b=32)

    def f(z, x, y, t):
        return infotok.ib_loss(z, x=x, y=y, t=t, beta=0.3, lambda_y=0.2, lambda_c=0.1)[0]

    args = (v["z"], v["x"], v["y"], v["t"])
    single, grad_single = jax.jit(jax.value_and_grad(f))(*args)
    sharded_args = [jax.device_put(a, rows) for a in args]
    assert len(sharded_args[0].sharding.device_set) == 8
    sharded, grad_sharded = jax.jit(jax.value_and_grad(f))(*sharded_args)
    np.testing.assert_allclose(sharded, single, rtol=1e-6)
    np.testing.assert_allclose(
        grad_sharded, grad_single, rtol=1e-4, atol=1e-5 * float(jnp.abs(grad_single).max())
    )
