"""Tests for the shared decoder backbone, its masks, its KV cache, its sharding and its FLOP count."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infotok_jax import sharding
from infotok_jax.mllm import attention_masks, flops
from infotok_jax.mllm.backbone import Transformer, TransformerConfig, stack_layer_params, unstack_layer_params

TINY = TransformerConfig(
    vocab_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    embed_dim=32,
    mlp_dim=64,
    max_len=16,
    dtype=jnp.float32,
)
B, T = 2, 10


@functools.cache
def _model_and_params(config: TransformerConfig = TINY):
    model = Transformer(config)
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"]
    return model, nn.unbox(params)


@functools.cache
def _forward(config: TransformerConfig = TINY):
    model = Transformer(config)

    @jax.jit
    def fwd(params, tokens, positions, mask):
        return model.apply({"params": params}, tokens, positions_BxT=positions, mask_BxTxT=mask)

    return fwd


def _tokens(seed: int = 1, batch: int = B, length: int = T) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, TINY.vocab_size)


def _arange_positions(batch: int = B, length: int = T) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(length)[None, :], (batch, length))


def test_shapes_hidden_and_embedding_input():
    model, params = _model_and_params()
    tokens = _tokens()
    logits, hidden = jax.jit(functools.partial(model.apply, return_hidden=True))({"params": params}, tokens)
    assert logits.shape == (B, T, TINY.vocab_size) and logits.dtype == jnp.float32
    assert hidden.shape == (B, T, TINY.embed_dim)
    assert bool(jnp.all(jnp.isfinite(logits)))
    emb = model.apply({"params": params}, tokens, method=Transformer.embed)
    from_emb = model.apply({"params": params}, embeddings_BxTxD=emb)
    np.testing.assert_allclose(from_emb, logits, atol=1e-5)
    np.testing.assert_allclose(
        model.apply({"params": params}, hidden, method=Transformer.logits), logits, atol=1e-5
    )


def test_bad_inputs_raise_clear_errors():
    model, params = _model_and_params()
    tokens = _tokens()
    with pytest.raises(ValueError, match="exactly one"):
        model.apply({"params": params}, tokens, embeddings_BxTxD=jnp.zeros((B, T, TINY.embed_dim)))
    with pytest.raises(ValueError, match="mask_BxTxT"):
        model.apply({"params": params}, tokens, mask_BxTxT=jnp.ones((B, T, T + 1), bool))
    with pytest.raises(ValueError, match="positions_BxT is required"):
        model.apply({"params": params}, tokens, decode=True, mutable=["cache"])
    with pytest.raises(ValueError, match="num_kv_heads"):
        dataclasses.replace(TINY, num_kv_heads=3)
    with pytest.raises(ValueError, match="remat"):
        dataclasses.replace(TINY, remat="some")


def test_causal_logits_do_not_depend_on_future_tokens():
    _, params = _model_and_params()
    fwd = _forward()
    tokens = _tokens()
    t0 = 6
    perturbed = tokens.at[:, t0].set((tokens[:, t0] + 1) % TINY.vocab_size)
    mask = attention_masks.causal_mask(B, T)
    a = fwd(params, tokens, _arange_positions(), mask)
    b = fwd(params, perturbed, _arange_positions(), mask)
    np.testing.assert_allclose(a[:, :t0], b[:, :t0], atol=1e-6)
    assert float(jnp.min(jnp.max(jnp.abs(a[:, t0:] - b[:, t0:]), axis=-1))) > 1e-4


def _mask_reference(span: np.ndarray) -> np.ndarray:
    batch, length = span.shape
    ref = np.zeros((batch, length, length), bool)
    for b in range(batch):
        for q in range(length):
            for k in range(length):
                ref[b, q, k] = k <= q or (span[b, q] > 0 and span[b, q] == span[b, k])
    return ref


def test_mask_builders_match_loop_references():
    is_image = np.array([[0, 1, 1, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 1, 0, 1]], bool)
    span = np.asarray(attention_masks.image_span_ids(jnp.asarray(is_image)))
    np.testing.assert_array_equal(span, [[0, 1, 1, 0, 2, 2, 2, 0], [1, 1, 0, 0, 0, 2, 0, 3]])
    np.testing.assert_array_equal(attention_masks.omni_mask(jnp.asarray(span)), _mask_reference(span))
    valid = jnp.array([[0, 1, 1, 1], [1, 1, 1, 0]], bool)
    slots = jnp.array([[2, 3], [2, 3]])
    ref = np.array([[[bool(valid[b, s]) and s <= q for s in range(4)] for q in (2, 3)] for b in range(2)])
    np.testing.assert_array_equal(attention_masks.decode_mask(slots, valid), ref)


def test_omni_mask_lets_image_tokens_see_each_other_and_keeps_text_causal():
    _, params = _model_and_params()
    fwd = _forward()
    is_image = jnp.broadcast_to(jnp.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)[None], (B, T))
    omni = attention_masks.omni_mask(attention_masks.image_span_ids(is_image))
    tokens = _tokens()
    pos = _arange_positions()

    def delta(mask, t_changed, t_seen):
        perturbed = tokens.at[:, t_changed].set((tokens[:, t_changed] + 1) % TINY.vocab_size)
        diff = fwd(params, tokens, pos, mask) - fwd(params, perturbed, pos, mask)
        return float(jnp.max(jnp.abs(diff[:, t_seen])))

    assert delta(omni, 6, 3) > 1e-4  # the last image token reaches the first one
    assert delta(attention_masks.causal_mask(B, T), 6, 3) < 1e-6  # but not under a causal mask
    assert delta(omni, 6, 2) < 1e-6  # text before the image does not see it
    assert delta(omni, 8, 7) < 1e-6  # text after the image stays causal
    assert delta(omni, 3, 8) > 1e-4  # and sees the image


def test_rope_is_relative():
    _, params = _model_and_params()
    fwd = _forward()
    tokens, pos = _tokens(), _arange_positions()
    mask = attention_masks.causal_mask(B, T)
    base = fwd(params, tokens, pos, mask)
    np.testing.assert_allclose(fwd(params, tokens, pos + 37, mask), base, atol=2e-5)
    assert float(jnp.max(jnp.abs(fwd(params, tokens, 2 * pos, mask) - base))) > 1e-3  # positions matter


def test_scan_layers_equals_unrolled_with_converted_params():
    _, params = _model_and_params()
    unrolled_cfg = dataclasses.replace(TINY, scan_layers=False)
    unrolled_params = unstack_layer_params(params, TINY.num_layers)
    ref_shapes = jax.tree_util.tree_map(jnp.shape, _model_and_params(unrolled_cfg)[1])
    assert jax.tree_util.tree_map(jnp.shape, unrolled_params) == ref_shapes
    tokens, pos = _tokens(), _arange_positions()
    mask = attention_masks.causal_mask(B, T)
    np.testing.assert_allclose(
        _forward(unrolled_cfg)(unrolled_params, tokens, pos, mask),
        _forward()(params, tokens, pos, mask),
        atol=1e-5,
    )
    restacked = stack_layer_params(unrolled_params, TINY.num_layers)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restacked, params)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_same_loss_and_grads(remat):
    _, params = _model_and_params()
    tokens = _tokens()

    def loss_fn(config):
        model = Transformer(config)
        return lambda p: jnp.mean(model.apply({"params": p}, tokens) ** 2)

    ref = jax.jit(jax.value_and_grad(loss_fn(TINY)))(params)
    got = jax.jit(jax.value_and_grad(loss_fn(dataclasses.replace(TINY, remat=remat))))(params)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), got, ref)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_prefill_and_steps_match_full_forward(scan_layers):
    config = dataclasses.replace(TINY, scan_layers=scan_layers)
    model, params = _model_and_params(config)
    tokens, pos = _tokens(), _arange_positions()
    full = _forward(config)(params, tokens, pos, attention_masks.causal_mask(B, T))
    cache = {}  # the first decode call creates the zero cache of max_len slots
    cached_model = model.clone(config=dataclasses.replace(config, max_len=T))

    @jax.jit
    def step(cache, tok, p):
        return cached_model.apply(
            {"params": params, "cache": cache}, tok, positions_BxT=p, decode=True, mutable=["cache"]
        )

    pieces = []
    for start, stop in [(0, 4), (4, 6), (6, 7), (7, 8), (8, 10)]:  # prefill, multi-token and 1-token steps
        logits, mutated = step(cache, tokens[:, start:stop], pos[:, start:stop])
        cache = mutated["cache"]
        pieces.append(logits)
    indices = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache) if path[-1].key == "index"]
    assert indices and all(np.all(np.asarray(i) == T) for i in indices)  # every layer's next slot
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


def test_params_shard_and_sharded_forward_matches():
    mesh = sharding.make_mesh((2, 2, 2))
    model = Transformer(TINY)
    tokens = _tokens(batch=4)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
    boxed = jax.tree_util.tree_leaves(
        abstract["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    assert boxed and all(
        isinstance(x, nn.LogicallyPartitioned) and len(x.names) == x.value.ndim for x in boxed
    )
    specs = nn.get_partition_spec(abstract)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, sharding.LOGICAL_AXIS_RULES)
    params = jax.jit(model.init, out_shardings=shardings)(jax.random.PRNGKey(0), tokens)["params"]
    query = params["layers"]["attn"]["query"].value
    assert query.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "model", None)
    assert params["embedding"].value.sharding.spec == jax.sharding.PartitionSpec("model", "fsdp")
    unsharded = jax.jit(model.apply)({"params": jax.device_get(nn.unbox(params))}, np.asarray(tokens))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
        tokens_sharded = jax.device_put(tokens, sharding.batch_sharding(mesh, 2))
        out = jax.jit(model.apply)({"params": params}, tokens_sharded)
    assert out.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(out, unsharded, atol=1e-5)


def test_flops_match_hand_count_and_param_tree():
    cfg = TransformerConfig(
        vocab_size=10,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=2,
        embed_dim=8,
        mlp_dim=16,
        dtype=jnp.float32,
    )
    # hand count per layer: q 8*4*2 + o 4*2*8 + k 8*2*2 + v 8*2*2 + MLP 3*8*16; plus unembedding 8*10
    hand_params = 2 * (64 + 64 + 32 + 32 + 384) + 80
    assert flops.matmul_params(cfg) == hand_params
    assert flops.flops_per_token(cfg, 5) == 6 * hand_params + 12 * 2 * 5**2 * 8 / 2 / 5
    assert (
        flops.flops_per_token(cfg, 5, training=False, causal=False) == 2 * hand_params + 4 * 2 * 5**2 * 8 / 5
    )
    assert flops.flops_per_step(cfg, 3, 5) == 15 * flops.flops_per_token(cfg, 5)
    assert flops.mfu(cfg, 3, 5, 2.0, flops.flops_per_step(cfg, 3, 5)) == pytest.approx(0.5)
    for tied in (False, True):  # independent reference: every >=2-D parameter except the embedding lookup
        c = dataclasses.replace(TINY, logits_via_embedding=tied)
        tree = _model_and_params(c)[1]
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        count = sum(
            x.size for p, x in leaves if x.ndim - (p[0].key == "layers") >= 2 and p[0].key != "embedding"
        )
        assert flops.matmul_params(c) == count + (c.embed_dim * c.vocab_size if tied else 0)


def test_forward_flops_agree_with_xla_cost_analysis():
    # XLA counts 2*M*N*K per dot plus elementwise work, and the full (unmasked) attention; layers are
    # unrolled because XLA counts a while-loop body once.
    cfg = dataclasses.replace(TINY, vocab_size=256, head_dim=16, embed_dim=64, mlp_dim=128, scan_layers=False)
    model, params = _model_and_params(cfg)
    tokens = jnp.zeros((2, 32), jnp.int32)
    xla_flops = jax.jit(model.apply).lower({"params": params}, tokens).compile().cost_analysis()["flops"]
    ours = flops.flops_per_step(cfg, 2, 32, causal=False, training=False)
    assert 1.0 <= xla_flops / ours < 1.05, (xla_flops, ours)


def test_dropout_only_acts_when_not_deterministic():
    _, params = _model_and_params()
    model = Transformer(dataclasses.replace(TINY, dropout_rate=0.5))
    tokens = _tokens()
    ref = _forward()(params, tokens, _arange_positions(), None)
    np.testing.assert_allclose(model.apply({"params": params}, tokens), ref, atol=1e-5)
    drop = jax.jit(
        lambda k: model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": k})
    )
    a, b = drop(jax.random.PRNGKey(1)), drop(jax.random.PRNGKey(2))
    assert float(jnp.max(jnp.abs(a - ref))) > 1e-3 and float(jnp.max(jnp.abs(a - b))) > 1e-3
    np.testing.assert_array_equal(a, drop(jax.random.PRNGKey(1)))


def test_bf16_compute_tracks_f32():
    _, params = _model_and_params()
    model = Transformer(dataclasses.replace(TINY, dtype=jnp.bfloat16))
    tokens = _tokens()
    logits, hidden = jax.jit(functools.partial(model.apply, return_hidden=True))({"params": params}, tokens)
    assert logits.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
    ref = _forward()(params, tokens, _arange_positions(), None)
    rel = float(jnp.linalg.norm(logits - ref) / jnp.linalg.norm(ref))
    assert rel < 0.05, rel


def test_adam_steps_reduce_loss_on_a_tiny_sequence_task():
    config = dataclasses.replace(TINY, logits_via_embedding=True)
    model, params = _model_and_params(config)
    # a learnable rule: each next token is the previous one plus 3 (mod V)
    start = jax.random.randint(jax.random.PRNGKey(5), (8, 1), 0, config.vocab_size)
    seq = (start + 3 * jnp.arange(12)[None, :]) % config.vocab_size
    opt = optax.adam(1e-2)

    def loss_fn(p):
        logits = model.apply({"params": p}, seq[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:]))

    @jax.jit
    def train_step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = opt.init(params)
    losses = []
    for _ in range(25):
        params, state, loss = train_step(params, state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
