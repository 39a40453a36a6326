"""AR host: joint training lowers the loss, VQ state updates, understanding gradients reach the tokenizer
encoder only when lm_grad_to_tokenizer > 0, KV-cached code sampling equals uncached recomputation,
answer() equals uncached greedy decoding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax.mllm import hosts, sampling
from infotok_jax.mllm.hosts import sequences
from tests.test_hosts_common import (
    check_answer_format,
    forward,
    greedy_answer_reference,
    init_host,
    initial_host,
    scene_batch,
    tiny_config,
    trained_host,
    understanding_grads,
)


@pytest.mark.slow
def test_losses_finite_and_training_lowers_them():
    model, variables, losses = trained_host("ar")
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    (_, metrics, aux), _ = forward(model, variables, scene_batch(), train=True)
    for name in ("loss/understanding", "loss/generation", "loss/reconstruction", "loss/tokenizer_commitment"):
        assert np.isfinite(float(metrics[name])), name
    assert aux["z_pre"].shape == (8, 16, 8) and aux["indices"].shape == (8, 16)


def test_vq_state_updates_only_when_training_with_mutable_state():
    model, variables = initial_host("ar")
    batch = scene_batch()
    rngs = {"sample": jax.random.PRNGKey(0)}
    _, mut = forward(model, variables, batch, train=True, rngs=rngs)
    before, after = variables["state"]["tokenizer"]["quantizer"], mut["state"]["tokenizer"]["quantizer"]
    assert int(after["steps"]) == int(before["steps"]) + 1
    assert not np.allclose(after["codebook"], before["codebook"])
    _, mut_eval = forward(model, variables, batch, train=False)
    np.testing.assert_array_equal(mut_eval["state"]["tokenizer"]["quantizer"]["codebook"], before["codebook"])


def test_understanding_gradients_reach_the_tokenizer_encoder_only_when_enabled():
    assert understanding_grads(*initial_host("ar")) == (0.0, 0.0)  # AR default: lm_grad_to_tokenizer = 0
    encoder, decoder = understanding_grads(*init_host(tiny_config("ar", lm_grad_to_tokenizer=1.0)))
    assert encoder > 0.0
    assert decoder == 0.0  # control: the decoder is not on the understanding path


def _uncached_generate(model, variables, captions, key, temperature, top_k, cfg_scale):
    """Recomputes the whole [caption | BOI | codes] sequence for every code; same per-step keys."""
    c, n = model.config, model.num_image_tokens
    rows, scale = sequences.sampling_rows(c, captions, 1, cfg_scale)
    b = captions.shape[0]
    logits_fn = jax.jit(lambda codes: model.apply(variables, rows, codes, method="code_generation_logits"))
    codes = jnp.zeros((b, n), jnp.int32)
    v = model.vocab
    for i in range(n):
        logits = logits_fn(jnp.concatenate([codes, codes]) if scale else codes)[:, i]
        if scale:
            logits = sampling.cfg_combine(logits[:b], logits[b:], scale)
        # The sampler draws over the whole LM vocabulary with non-code ids at -inf: same distribution, and
        # the same draw only when laid out the same way.
        full = jnp.full((b, v.size), -1e30).at[:, v.code_offset : v.code_offset + v.codes].set(logits)
        tok = sampling.sample_logits(jax.random.fold_in(key, i), full, temperature=temperature, top_k=top_k)
        codes = codes.at[:, i].set(tok - v.code_offset)
    return codes


def test_cached_generation_equals_uncached_recomputation():
    model, variables, _ = trained_host("ar")
    captions = scene_batch()["caption_tokens"][:3]
    key = jax.random.PRNGKey(7)
    gen = jax.jit(functools.partial(model.generate, temperature=1.0, top_k=8, cfg_scale=2.0))
    out = gen(variables, captions, key)
    ref = _uncached_generate(model, variables, captions, key, 1.0, 8, 2.0)
    np.testing.assert_array_equal(out["codes"], ref)
    greedy = model.generate(variables, captions, key, temperature=0.0, cfg_scale=1.0)
    ref = _uncached_generate(model, variables, captions, key, 0.0, 0, 1.0)
    np.testing.assert_array_equal(greedy["codes"], ref)


def test_generate_is_deterministic_per_key_and_decodes_images():
    model, variables, _ = trained_host("ar")
    captions = scene_batch()["caption_tokens"][:2]
    gen = jax.jit(functools.partial(hosts.generate, model, num_samples=2))
    a, b = gen(variables, captions, jax.random.PRNGKey(0)), gen(variables, captions, jax.random.PRNGKey(0))
    other = gen(variables, captions, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["codes"], b["codes"])
    assert np.any(np.asarray(a["codes"]) != np.asarray(other["codes"]))
    assert a["codes"].shape == (4, 16) and 0 <= int(a["codes"].min()) and int(a["codes"].max()) < 32
    assert a["images"].shape == (4, 32, 32, 3)
    assert 0.0 <= float(a["images"].min()) and float(a["images"].max()) <= 1.0
    decoded = model.apply(variables, a["codes"], method="decode_codes")
    np.testing.assert_allclose(a["images"], decoded, atol=1e-6)


def test_answer_is_cached_greedy_decoding_with_eos_and_padding():
    model, variables, _ = trained_host("ar")
    batch = scene_batch()
    ans_fn = jax.jit(functools.partial(hosts.answer, model, max_answer_len=8))
    ans = np.asarray(ans_fn(variables, batch["image"], batch["question_tokens"]))
    np.testing.assert_array_equal(ans, ans_fn(variables, batch["image"], batch["question_tokens"]))
    ref = greedy_answer_reference(model, variables, batch["image"], batch["question_tokens"], 8)
    np.testing.assert_array_equal(ans, ref)
    check_answer_format(ans, model.config)
    assert np.any(ans[:, 1:] == model.config.eos_id)
