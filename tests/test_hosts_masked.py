"""Masked (Show-o style) host: joint training lowers the loss, the omni mask through the host (image slots
see each other, text stays causal), understanding gradients reach the encoder, MaskGIT generation is
deterministic per key, answer() equals uncached greedy decoding after an omni-masked prefill."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax.mllm import hosts
from tests.test_hosts_common import (
    check_answer_format,
    forward,
    greedy_answer_reference,
    initial_host,
    scene_batch,
    trained_host,
    understanding_grads,
)


@pytest.mark.slow
def test_losses_finite_and_training_lowers_them():
    model, variables, losses = trained_host("masked")
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    (_, metrics, _), _ = forward(model, variables, scene_batch(), train=False)
    assert 0.0 < float(metrics["generation/mask_ratio"]) <= 1.0
    assert np.isfinite(float(metrics["loss/generation"]))


def test_image_slots_see_each_other_and_text_stays_causal():
    model, variables = initial_host("masked")
    c, k, n = model.config, model.vocab.codes, model.num_image_tokens
    caption = scene_batch()["caption_tokens"][:2]
    codes = jax.random.randint(jax.random.PRNGKey(0), (2, n), 0, k)
    z = model.apply(variables, codes, method=lambda m, i: jnp.take(m.tokenizer.codebook(), i, axis=0))
    none = jnp.zeros((2, n), bool)

    @jax.jit
    def full_logits(caption, z):
        return model.apply(variables, caption, z, none, method="masked_code_logits")[1]

    base = np.asarray(full_logits(caption, z))
    s = c.max_caption_len + 1  # first image slot
    # Change the last image token: every earlier image slot changes (bidirectional), the caption does not.
    changed = np.asarray(full_logits(caption, z.at[:, -1].set(z[:, -1] + 1.0)))
    np.testing.assert_array_equal(changed[:, :s], base[:, :s])
    assert np.all(np.abs(changed[:, s : s + n - 1] - base[:, s : s + n - 1]).max(-1) > 1e-6)
    # Change caption word 3: positions before it are untouched (causal text), later ones (and the image) move.
    changed = np.asarray(full_logits(caption.at[:, 3].set(caption[:, 3] % 40 + 4), z))
    np.testing.assert_array_equal(changed[:, :3], base[:, :3])
    moved = np.abs(changed - base).max(-1) > 1e-6
    valid_caption = np.asarray(caption != c.pad_id)
    assert np.all(moved[:, 3 : s - 1][valid_caption[:, 3:]]) and np.all(moved[:, s : s + n])
    assert not np.any(moved[:, : s - 1][~valid_caption])  # padding slots see only themselves


def test_understanding_gradients_reach_the_tokenizer_encoder():
    encoder, decoder = understanding_grads(*initial_host("masked"))
    assert encoder > 0.0
    assert decoder == 0.0


def test_generate_is_deterministic_per_key_and_fills_every_slot():
    model, variables, _ = trained_host("masked")
    captions = scene_batch()["caption_tokens"][:2]
    gen = jax.jit(functools.partial(hosts.generate, model, num_samples=2, num_steps=4))
    a, b = gen(variables, captions, jax.random.PRNGKey(0)), gen(variables, captions, jax.random.PRNGKey(0))
    other = gen(variables, captions, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["codes"], b["codes"])
    np.testing.assert_array_equal(a["images"], b["images"])
    assert np.any(np.asarray(a["codes"]) != np.asarray(other["codes"]))
    codes = np.asarray(a["codes"])
    assert codes.shape == (4, 16) and codes.min() >= 0 and codes.max() < model.vocab.codes  # no [MASK] left
    assert a["images"].shape == (4, 32, 32, 3)
    assert 0.0 <= float(a["images"].min()) and float(a["images"].max()) <= 1.0


def test_answer_is_cached_greedy_decoding_with_eos_and_padding():
    model, variables, _ = trained_host("masked")
    batch = scene_batch()
    ans_fn = jax.jit(functools.partial(hosts.answer, model, max_answer_len=8))
    ans = np.asarray(ans_fn(variables, batch["image"], batch["question_tokens"]))
    np.testing.assert_array_equal(ans, ans_fn(variables, batch["image"], batch["question_tokens"]))
    ref = greedy_answer_reference(model, variables, batch["image"], batch["question_tokens"], 8)
    np.testing.assert_array_equal(ans, ref)
    check_answer_format(ans, model.config)
    assert np.any(ans[:, 1:] == model.config.eos_id)
