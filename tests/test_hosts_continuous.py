"""Continuous (Harmon / MAR style) host: joint training lowers the loss (Gaussian and plain tokenizers),
understanding gradients reach the encoder, the flow loss does not move its target, MAR generation is
deterministic per key and fills every slot, answer() equals uncached greedy decoding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infotok_jax.mllm import hosts
from tests.test_hosts_common import (
    check_answer_format,
    forward,
    greedy_answer_reference,
    initial_host,
    scene_batch,
    tiny_config,
    trained_host,
    understanding_grads,
)


@pytest.mark.slow
def test_losses_finite_and_training_lowers_them():
    model, variables, losses = trained_host("continuous")
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    (_, metrics, aux), _ = forward(model, variables, scene_batch(), train=True)
    assert np.isfinite(float(metrics["loss/generation"]))
    assert {"mean", "log_var", "z"} <= set(aux)  # the InfoTok task reads the Gaussian head from aux


def test_plain_continuous_tokenizer_traces_with_the_same_contract():
    model = hosts.build_host(tiny_config("continuous", **{"tokenizer.quantizer": "none"}))
    variables = jax.eval_shape(lambda: hosts.init_variables(model, jax.random.PRNGKey(0)))
    (loss, metrics, aux), _ = jax.eval_shape(
        lambda v: model.apply(
            v, scene_batch(), train=True, mutable=["state"], rngs={"sample": jax.random.PRNGKey(0)}
        ),
        variables,
    )
    assert loss.shape == () and aux["z"].shape == (8, 16, 8) and "loss/generation" in metrics


def test_understanding_gradients_reach_the_tokenizer_encoder():
    encoder, decoder = understanding_grads(*initial_host("continuous"))
    assert encoder > 0.0
    assert decoder == 0.0


def test_flow_loss_reaches_the_encoder_only_through_the_lm_inputs():
    """With every slot masked the LM sees no latent, so only the stop-gradient target would be left."""
    # trained: the zero-initialized flow output layer has moved
    model, variables, _ = trained_host("continuous")
    batch = scene_batch()

    @jax.jit
    def encoder_grad_norm(params, masked_N):
        def loss(p):
            def fn(m):
                z = m.tokenizer(batch["image"], train=True)["z"]
                masked = jnp.broadcast_to(masked_N[None], z.shape[:2])
                return m.mar_loss(batch["caption_tokens"], z, masked, True)

            return model.apply({**variables, "params": p}, method=fn, rngs={"sample": jax.random.PRNGKey(0)})

        return optax.tree.norm(jax.grad(loss)(params)["tokenizer"]["encoder"])

    assert float(encoder_grad_norm(variables["params"], jnp.ones(16, bool))) == 0.0
    assert float(encoder_grad_norm(variables["params"], jnp.arange(16) % 2 == 0)) > 0.0


def test_generate_is_deterministic_per_key_and_fills_every_slot():
    model, variables, _ = trained_host("continuous")
    captions = scene_batch()["caption_tokens"][:2]
    gen = jax.jit(functools.partial(hosts.generate, model, num_samples=2, num_steps=4, flow_steps=3))
    a, b = gen(variables, captions, jax.random.PRNGKey(0)), gen(variables, captions, jax.random.PRNGKey(0))
    other = gen(variables, captions, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["latents"], b["latents"])
    assert not np.allclose(a["latents"], other["latents"])
    lat = np.asarray(a["latents"])
    assert lat.shape == (4, 16, 8) and np.all(np.abs(lat).max(-1) > 0)  # every slot was sampled
    assert a["images"].shape == (4, 32, 32, 3)
    np.testing.assert_allclose(
        a["images"], model.apply(variables, a["latents"], method="decode_latents"), atol=1e-6
    )


def test_answer_is_cached_greedy_decoding_with_eos_and_padding():
    model, variables, _ = trained_host("continuous")
    batch = scene_batch()
    ans_fn = jax.jit(functools.partial(hosts.answer, model, max_answer_len=8))
    ans = np.asarray(ans_fn(variables, batch["image"], batch["question_tokens"]))
    ref = greedy_answer_reference(model, variables, batch["image"], batch["question_tokens"], 8)
    np.testing.assert_array_equal(ans, ref)
    check_answer_format(ans, model.config)
