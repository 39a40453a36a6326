"""Tests for sampling and decoding: filters, guidance, KV-cached AR decoding (`decoding.cached_decode` on the
backbone) against uncached recomputation, MaskGIT."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax.mllm import attention_masks, decoding, kv_cache, sampling
from infotok_jax.mllm.backbone import Transformer, TransformerConfig

TINY = TransformerConfig(
    vocab_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    embed_dim=32,
    mlp_dim=64,
    max_len=64,
    dtype=jnp.float32,
)
P, N = 5, 6  # prompt length, generated tokens


@functools.cache
def _model_and_params():
    model = Transformer(TINY)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    return model, nn.unbox(params)


def _logits(seed: int, shape=(4, 11)) -> jax.Array:
    return 2.0 * jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_sampling_is_deterministic_for_a_key_and_varies_across_keys():
    logits = _logits(0, (64, 11))
    sample = jax.jit(functools.partial(sampling.sample_logits, temperature=1.0, top_k=5, top_p=0.9))
    a, b = sample(jax.random.PRNGKey(1), logits), sample(jax.random.PRNGKey(1), logits)
    np.testing.assert_array_equal(a, b)
    assert bool(jnp.any(a != sample(jax.random.PRNGKey(2), logits)))


def test_top_k_one_and_temperature_zero_equal_greedy():
    logits = _logits(1, (32, 11))
    greedy = sampling.greedy(logits)
    np.testing.assert_array_equal(greedy, np.argmax(np.asarray(logits), axis=-1))
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        np.testing.assert_array_equal(sampling.sample_logits(key, logits, temperature=1.5, top_k=1), greedy)
    np.testing.assert_array_equal(sampling.sample_logits(key, logits, temperature=0.0), greedy)


def test_filters_match_numpy_references_and_samples_stay_inside():
    logits = _logits(2, (6, 11))
    lg = np.asarray(logits)
    kept_k = np.asarray(sampling.top_k_filter(logits, 3)) > -1e29
    np.testing.assert_array_equal(kept_k, lg >= np.sort(lg, axis=-1)[:, -3:-2])
    p = 0.7
    kept_p = np.asarray(sampling.top_p_filter(logits, p)) > -1e29
    for row, kept in zip(lg, kept_p, strict=True):
        order = np.argsort(-row)
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        n_keep = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)  # smallest prefix with mass >= p
        np.testing.assert_array_equal(np.flatnonzero(kept), np.sort(order[:n_keep]))
    keys = jax.random.split(jax.random.PRNGKey(3), 200)
    draws = jax.vmap(lambda k: sampling.sample_logits(k, logits, top_k=3, top_p=p))(keys)
    inside = np.take_along_axis(kept_k & kept_p, np.asarray(draws).T, axis=1)
    assert inside.all()


def test_temperature_one_samples_follow_softmax():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.PRNGKey(4), 20000)
    draws = np.asarray(jax.vmap(lambda k: sampling.sample_logits(k, logits))(keys))[:, 0]
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_cfg_combine_formula():
    cond, uncond = _logits(5), _logits(6)
    np.testing.assert_allclose(sampling.cfg_combine(cond, uncond, 1.0), cond, atol=1e-6)
    np.testing.assert_allclose(sampling.cfg_combine(cond, uncond, 0.0), uncond, atol=1e-6)
    np.testing.assert_allclose(sampling.cfg_combine(cond, uncond, 3.0), 3 * cond - 2 * uncond, atol=1e-5)


def _prefill(m, prompt_BxP, valid_BxP):
    """Writes left-padded prompts to the backbone's cache: (last logits, last position, valid)."""
    rows, length = prompt_BxP.shape
    key_valid_BxS = jnp.concatenate([valid_BxP, jnp.ones((rows, m.config.max_len - length), bool)], axis=1)
    positions_BxP = kv_cache.positions_from_valid(valid_BxP)
    slots_BxP = jnp.broadcast_to(jnp.arange(length)[None, :], (rows, length))
    mask = attention_masks.decode_mask(slots_BxP, key_valid_BxS)
    logits_BxPxV = m(prompt_BxP, positions_BxT=positions_BxP, mask_BxTxT=mask, decode=True)
    return logits_BxPxV[:, -1], positions_BxP[:, -1], valid_BxP


def _step(m, tokens_Bx1, step, positions_Bx1, mask_Bx1xS):
    del step
    return m(tokens_Bx1, positions_BxT=positions_Bx1, mask_BxTxT=mask_Bx1xS, decode=True)[:, 0]


def _generate(
    model,
    params,
    prompt_BxP,
    key,
    num_steps,
    sampler,
    *,
    prompt_valid_BxP=None,
    uncond_prompt_BxP=None,
    uncond_valid_BxP=None,
    allowed_V=None,
):
    """Cached generation on the bare backbone: prompts [cond; uncond] through `decoding.cached_decode`."""
    valid_BxP = jnp.ones(prompt_BxP.shape, bool) if prompt_valid_BxP is None else prompt_valid_BxP
    if uncond_prompt_BxP is not None:
        prompt_BxP = jnp.concatenate([prompt_BxP, uncond_prompt_BxP])
        valid_BxP = jnp.concatenate([valid_BxP, uncond_valid_BxP])
    cache_len = prompt_BxP.shape[1] + num_steps - 1
    cached_model = model.clone(config=dataclasses.replace(model.config, max_len=cache_len))
    return decoding.cached_decode(
        cached_model,
        {"params": params},
        prefill=_prefill,
        prefill_args=(prompt_BxP, valid_BxP),
        step=_step,
        num_steps=num_steps,
        cache_len=cache_len,
        key=key,
        sampler=sampler,
        allowed_V=allowed_V,
    )


def _uncached_generate(params, prompt, valid, key, sampler, uncond=None, uncond_valid=None, allowed=None):
    """Reference: recompute the whole sequence with the plain (non-decode) forward at every step."""
    model, _ = _model_and_params()
    if uncond is not None:
        prompt, valid = jnp.concatenate([prompt, uncond]), jnp.concatenate([valid, uncond_valid])
    rows = prompt.shape[0]
    seq = jnp.concatenate([prompt, jnp.zeros((rows, N), jnp.int32)], axis=1)
    seq_valid = jnp.concatenate([valid, jnp.ones((rows, N), bool)], axis=1)
    mask = attention_masks.causal_mask(rows, P + N) & attention_masks.padding_mask(seq_valid)
    positions = kv_cache.positions_from_valid(seq_valid)
    fwd = jax.jit(lambda s: model.apply({"params": params}, s, positions_BxT=positions, mask_BxTxT=mask))
    out = []
    for i in range(N):
        logits = fwd(seq)[:, P - 1 + i]
        if sampler.cfg_scale is not None:
            logits = sampling.cfg_combine(logits[: rows // 2], logits[rows // 2 :], sampler.cfg_scale)
        if allowed is not None:
            logits = jnp.where(allowed[None], logits, -1e30)
        tok = sampling.sample_logits(
            jax.random.fold_in(key, i),
            logits,
            temperature=sampler.temperature,
            top_k=sampler.top_k,
            top_p=sampler.top_p,
        )
        out.append(tok)
        feed = tok if sampler.cfg_scale is None else jnp.concatenate([tok, tok])
        seq = seq.at[:, P + i].set(feed)
    return jnp.stack(out, axis=1)


def _prompts():
    prompt = jax.random.randint(jax.random.PRNGKey(7), (2, P), 0, TINY.vocab_size)
    valid = jnp.array([[True] * P, [False, False] + [True] * (P - 2)])  # second row left-padded
    return prompt, valid


@pytest.mark.parametrize(
    "sampler",
    [sampling.SamplerConfig(temperature=0.0), sampling.SamplerConfig(temperature=1.0, top_k=20)],
    ids=["greedy", "sampled"],
)
def test_kv_cached_generation_equals_uncached_recomputation(sampler):
    model, params = _model_and_params()
    prompt, valid = _prompts()
    key = jax.random.PRNGKey(11)
    gen = jax.jit(lambda p, pr, v, k: _generate(model, p, pr, k, N, sampler, prompt_valid_BxP=v))
    cached = gen(params, prompt, valid, key)
    assert cached.shape == (2, N) and cached.dtype == jnp.int32
    np.testing.assert_array_equal(cached, _uncached_generate(params, prompt, valid, key, sampler))
    np.testing.assert_array_equal(cached, gen(params, prompt, valid, key))  # deterministic for a key
    if sampler.temperature > 0:
        assert bool(jnp.any(cached != gen(params, prompt, valid, jax.random.PRNGKey(12))))


def test_cfg_generation_with_allowed_tokens_equals_uncached():
    model, params = _model_and_params()
    prompt, valid = _prompts()
    uncond = jnp.zeros_like(prompt)
    uncond_valid = jnp.zeros_like(valid).at[:, -1].set(True)  # unconditional: a single null token
    allowed = jnp.arange(TINY.vocab_size) >= 32  # e.g. the image-code range
    sampler = sampling.SamplerConfig(temperature=1.0, cfg_scale=3.0)
    key = jax.random.PRNGKey(13)
    cached = jax.jit(
        lambda p: _generate(
            model,
            p,
            prompt,
            key,
            N,
            sampler,
            prompt_valid_BxP=valid,
            uncond_prompt_BxP=uncond,
            uncond_valid_BxP=uncond_valid,
            allowed_V=allowed,
        )
    )(params)
    assert bool(jnp.all(cached >= 32))
    ref = _uncached_generate(params, prompt, valid, key, sampler, uncond, uncond_valid, allowed)
    np.testing.assert_array_equal(cached, ref)


def test_cosine_schedule_is_monotone_from_one_to_zero():
    r = jnp.linspace(0.0, 1.0, 101)
    s = np.asarray(sampling.cosine_schedule(r))
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(s) < 0)


def _toy_logits_fn(tokens_BxN):
    """A fixed bidirectional 'model': each position's logits depend on all tokens of the row."""
    table = jax.random.normal(jax.random.PRNGKey(21), (17, 16))
    bias = jax.random.normal(jax.random.PRNGKey(22), (tokens_BxN.shape[1], 16))
    context_Bx16 = jnp.mean(table[tokens_BxN], axis=1)
    return 3.0 * (context_Bx16[:, None, :] + bias[None])


def test_maskgit_fills_every_mask_following_the_schedule():
    mask_id, steps, length = 16, 5, 12
    tokens = jnp.full((3, length), mask_id).at[0, :4].set(jnp.array([1, 2, 3, 4])).at[2, 5].set(7)
    decode = jax.jit(
        functools.partial(
            sampling.maskgit_decode, _toy_logits_fn, mask_id=mask_id, num_steps=steps, return_history=True
        )
    )
    final, history = decode(tokens, jax.random.PRNGKey(0))
    assert not bool(jnp.any(final == mask_id)) and history.shape == (steps, 3, length)
    np.testing.assert_array_equal(final[0, :4], [1, 2, 3, 4])
    assert int(final[2, 5]) == 7
    np.testing.assert_array_equal(history[-1], final)
    masked = np.asarray(jnp.sum(history == mask_id, axis=-1))  # steps x rows
    for row in range(3):
        n0 = int(jnp.sum(tokens[row] == mask_id))
        expect, remaining = [], n0
        for i in range(steps):
            want = math.floor(n0 * math.cos(math.pi / 2 * (i + 1) / steps))
            remaining = 0 if i == steps - 1 else max(1, min(remaining - 1, want))
            expect.append(remaining)
        np.testing.assert_array_equal(masked[:, row], expect)
    np.testing.assert_array_equal(decode(tokens, jax.random.PRNGKey(0))[0], final)
    assert bool(jnp.any(decode(tokens, jax.random.PRNGKey(1))[0] != final))


def test_maskgit_single_step_greedy_is_argmax_of_the_model():
    mask_id = 16
    tokens = jnp.full((2, 6), mask_id).at[:, 0].set(3)
    final = sampling.maskgit_decode(
        _toy_logits_fn, tokens, jax.random.PRNGKey(0), mask_id=mask_id, num_steps=1, temperature=0.0
    )
    expect = jnp.argmax(_toy_logits_fn(tokens), axis=-1).at[:, 0].set(3)
    np.testing.assert_array_equal(final, expect)
