"""Host shared pieces: sequence layouts, config checks, token masks, reveal schedule, the flow head's Euler
sampler against closed-form velocities. Also the tiny configs / scene batches / training loop the other
test_hosts_*.py files import."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.data.text_tokenizer import WordTokenizer, batch_encode
from infotok_jax.mllm import hosts
from infotok_jax.mllm.hosts import continuous_host, flow_head, masked_host, sequences
from infotok_jax.training import train_state


def tiny_config(kind: str, **overrides):
    """32x32 images -> 16 tokens, a 2-layer 32-wide LM."""
    c = hosts.default_host_config(kind)
    t = c.tokenizer
    t.patch_size, t.width, t.norm_groups, t.codebook_size, t.token_dim = 8, 16, 4, 32, 8
    c.lm.num_layers, c.lm.embed_dim, c.lm.num_heads, c.lm.num_kv_heads = 2, 32, 2, 2
    c.lm.head_dim, c.lm.mlp_dim = 16, 64
    c.text_vocab_size = 48
    c.projector_hidden, c.flow.width, c.flow.depth = 32, 32, 2
    c.sampling.num_steps, c.sampling.flow_steps = 4, 4
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c


@functools.cache
def _scene_batch_np(batch: int, seed: int) -> dict:
    tok = WordTokenizer(scenes_spec.vocabulary())
    ex = [scenes_render.render_example(seed, "train", i, 32, 0.0) for i in range(batch)]
    qa = [e["qa"][i % len(e["qa"])] for i, e in enumerate(ex)]
    return {
        "image": np.stack([e["image"] for e in ex]).astype(np.float32) / 255.0,
        "caption_tokens": batch_encode(tok, [e["caption"] for e in ex], 32),
        "question_tokens": batch_encode(tok, [q for q, _, _ in qa], 16),
        "answer_tokens": batch_encode(tok, [a for _, a, _ in qa], 8),
    }


def scene_batch(batch: int = 8, seed: int = 0) -> dict:
    """Rendered scenes with their caption and one question/answer each, tokenized as the pipeline does."""
    return {k: jnp.asarray(v) for k, v in _scene_batch_np(batch, seed).items()}


def init_host(config):
    model = hosts.build_host(config)
    options = train_state.initializer_compiler_options()  # as the trainer compiles its initializer
    init = jax.jit(lambda k: hosts.init_variables(model, k), compiler_options=options)
    return model, nn.unbox(init(jax.random.PRNGKey(0)))


def forward(model, variables, batch, *, train: bool, rngs=None):
    """One jitted host forward with the VQ state mutable: ((loss, metrics, aux), updated state).

    Jitted because an eager forward dispatches (and compiles) every operation on its own, which costs
    more than compiling the whole forward once."""
    rngs = {"sample": jax.random.PRNGKey(0)} if rngs is None else rngs
    apply = functools.partial(model.apply, train=train, mutable=["state"])
    return jax.jit(apply)(variables, batch, rngs=rngs)


def train(model, variables, batch, steps: int, lr: float = 3e-3):
    """Adam on a fixed batch and fixed rng (a deterministic objective); returns (variables, losses)."""
    tx = optax.adam(lr)
    rngs = {"sample": jax.random.PRNGKey(1), "revive": jax.random.PRNGKey(2)}

    @jax.jit
    def step(params, state, opt_state):
        def loss_fn(p):
            (loss, _, _), mut = model.apply(
                {"params": p, **state}, batch, train=True, rngs=rngs, mutable=list(state)
            )
            return loss, mut

        (loss, mut), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), dict(mut), opt_state, loss

    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    opt_state, losses = tx.init(params), []
    for _ in range(steps):
        params, state, opt_state, loss = step(params, state, opt_state)
        losses.append(float(loss))
    return {"params": params, **state}, losses


@functools.cache
def initial_host(kind: str):
    """The tiny host of `kind` at initialization, (model, variables), built once per test process."""
    return init_host(tiny_config(kind))


@functools.cache
def trained_host(kind: str):
    """`initial_host(kind)` after 20 steps on one scene batch: (model, variables, losses)."""
    model, variables = initial_host(kind)
    variables, losses = train(model, variables, scene_batch(), steps=20)
    return model, variables, losses


def understanding_grads(model, variables) -> tuple[float, float]:
    """Global norms of d(understanding CE)/d(tokenizer encoder) and /d(tokenizer decoder)."""
    batch = scene_batch()

    def loss_fn(params):
        (_, metrics, _), _ = model.apply(
            {**variables, "params": params},
            batch,
            train=True,
            mutable=["state"],
            rngs={"sample": jax.random.PRNGKey(0)},
        )
        return metrics["loss/understanding"]

    grads = jax.jit(jax.grad(loss_fn))(variables["params"])["tokenizer"]
    return float(optax.tree.norm(grads["encoder"])), float(optax.tree.norm(grads["decoder"]))


def greedy_answer_reference(model, variables, images, question, max_answer_len):
    """Uncached greedy decoding: recompute the whole understanding sequence for every answer token."""
    c = model.config
    b = question.shape[0]
    ans = jnp.zeros((b, max_answer_len), jnp.int32).at[:, 0].set(c.bos_id)
    a0 = c.max_question_len + model.num_image_tokens + 2
    banned = np.zeros(c.text_vocab_size, bool)
    banned[[c.pad_id, c.bos_id]] = True
    fn = jax.jit(lambda a: model.apply(variables, images, question, a, method="understanding_logits"))
    for j in range(max_answer_len - 1):
        logits = np.array(fn(ans)[:, a0 + j, : c.text_vocab_size])
        logits[:, banned] = -np.inf
        ans = ans.at[:, j + 1].set(jnp.asarray(logits.argmax(-1), jnp.int32))
    out = np.array(ans)
    for row in out:
        eos = np.flatnonzero(row[1:] == c.eos_id)
        if eos.size:
            row[eos[0] + 2 :] = c.pad_id
    return out


def check_answer_format(ans: np.ndarray, c) -> None:
    """BOS first; after the first EOS only pad; no pad or BOS before it."""
    assert np.all(ans[:, 0] == c.bos_id)
    for row in ans:
        eos = np.flatnonzero(row == c.eos_id)
        end = eos[0] if eos.size else len(row)
        assert np.all(row[end + 1 :] == c.pad_id), row
        assert not np.any(np.isin(row[1:end], [c.pad_id, c.bos_id])), row


# ---------------------------------------------------------------------------------------------------------


def test_understanding_layout_targets_positions_and_mask():
    c = tiny_config("ar")
    v = sequences.vocab_for(c)
    q = jnp.array([[1, 9, 10, 2, 0, 0]])
    a = jnp.array([[1, 7, 8, 2, 0]])
    lay = sequences.understanding_layout(q, a, 3, v, c.pad_id)
    np.testing.assert_array_equal(lay["tokens"], [[1, 9, 10, 2, 0, 0, v.boi, 0, 0, 0, v.eoi, 1, 7, 8, 2, 0]])
    np.testing.assert_array_equal(lay["modality"][0], [0] * 7 + [1] * 3 + [0] * 6)
    # Positions count valid tokens only: as if the question padding were removed.
    np.testing.assert_array_equal(lay["positions"][0], [0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12])
    # The answer BOS (slot 11) predicts "7", then "8", then EOS; nothing else is scored.
    np.testing.assert_array_equal(np.flatnonzero(lay["loss_mask"][0]), [11, 12, 13])
    np.testing.assert_array_equal(lay["targets"][0, 11:14], [7, 8, 2])
    omni = sequences.attention_mask("omni", lay)[0]
    causal = sequences.attention_mask("causal", lay)[0]
    assert bool(omni[7, 9]) and not bool(causal[7, 9])  # image slot 0 sees image slot 2 only under omni
    assert not bool(omni[3, 11]) and not bool(omni[9, 4])  # text never sees the future; pad is never seen
    assert v.size == c.text_vocab_size + 32 + 2


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="tokenizer.quantizer"):
        hosts.validate_host_config(tiny_config("continuous", **{"tokenizer.quantizer": "vq"}))
    with pytest.raises(ValueError, match="cfg_dropout"):
        hosts.validate_host_config(tiny_config("ar", cfg_dropout=1.0))
    with pytest.raises(ValueError, match="kind"):
        hosts.default_host_config("diffusion")
    with pytest.raises(ValueError, match="caption_tokens"):
        sequences.sampling_rows(tiny_config("ar"), jnp.zeros((2, 5), jnp.int32), 1, None)


def test_random_token_mask_and_reveal_schedule():
    m = np.asarray(masked_host.random_token_mask(jax.random.PRNGKey(0), 512, 16))
    counts = m.sum(1)
    assert counts.min() >= 1 and counts.max() == 16
    # ratio = cos(pi/2 u): E[ratio] = 2/pi, so the mean count is about 16 * 2/pi (+ ceil's half token).
    assert abs(counts.mean() - (16 * 2 / np.pi + 0.5)) < 0.6
    known = np.asarray(continuous_host.reveal_counts(16, 5))
    assert known[-1] == 16 and np.all(np.diff(known) >= 1)
    np.testing.assert_array_equal(known[:-1], 16 - np.floor(16 * np.cos(np.pi / 2 * np.arange(1, 5) / 5)))
    with pytest.raises(ValueError, match="num_steps"):
        continuous_host.reveal_counts(4, 5)


@pytest.mark.parametrize("num_steps", [1, 3, 16])
def test_euler_with_the_exact_velocity_of_a_point_mass_recovers_it(num_steps):
    z_star = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3))
    noise = jax.random.normal(jax.random.PRNGKey(1), z_star.shape)
    # For data = z*, x_t = (1 - t) eps + t z* and the marginal velocity is (z* - x) / (1 - t).
    out = flow_head.euler_sample(lambda x, t: (z_star - x) / (1.0 - t)[..., None], noise, num_steps)
    np.testing.assert_allclose(out, z_star, atol=1e-5)


def test_euler_with_the_exact_velocity_of_a_gaussian_matches_its_moments():
    mu, s = 1.5, 0.5
    noise = jax.random.normal(jax.random.PRNGKey(2), (64, 256, 1))

    def velocity(x, t):  # E[z - eps | x_t = x] for z ~ N(mu, s^2), eps ~ N(0, 1)
        t = t[..., None]
        var = (1.0 - t) ** 2 + t**2 * s**2
        return mu + (t * s**2 - (1.0 - t)) / var * (x - t * mu)

    out = np.asarray(flow_head.euler_sample(velocity, noise, 64))
    assert abs(out.mean() - mu) < 0.01 and abs(out.std() - s) < 0.02


def test_flow_head_starts_at_zero_and_matching_loss_is_the_velocity_error():
    head = flow_head.FlowHead(token_dim=3, width=16, depth=2)
    x, t, cond = jnp.ones((2, 4, 3)), jnp.full((2, 4), 0.3), jnp.ones((2, 4, 8))
    params = head.init(jax.random.PRNGKey(0), x, t, cond)
    np.testing.assert_array_equal(head.apply(params, x, t, cond), 0.0)
    z, eps = jnp.full((1, 2, 3), 2.0), jnp.full((1, 2, 3), 0.5)
    v = jnp.zeros((1, 2, 3))
    w = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(flow_head.flow_matching_loss(v, z, eps, w), 1.5**2)
    np.testing.assert_allclose(flow_head.interpolate(z, eps, jnp.full((1, 2), 0.25)), 0.75 * 0.5 + 0.25 * 2.0)


@pytest.mark.parametrize("kind", ["ar", "masked", "continuous"])
def test_every_host_parameter_has_logical_axes_that_map_to_the_mesh(kind):
    from infotok_jax import sharding

    model = hosts.build_host(tiny_config(kind))
    boxed = jax.eval_shape(lambda: hosts.init_variables(model, jax.random.PRNGKey(0)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    known = {name for name, _ in sharding.LOGICAL_AXIS_RULES}
    names = {n for x in leaves for n in x.names if n is not None}
    assert names <= known, names - known
    expected = {"image_pos"} | ({"mask_embedding"} if kind != "ar" else set())
    assert expected <= set(boxed)
    mesh = sharding.make_mesh((2, 2, 2))
    specs = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, sharding.LOGICAL_AXIS_RULES)
    assert len(jax.tree.leaves(specs)) == len(leaves)


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_lm_grad_to_tokenizer_scales_only_the_lm_gradient_into_the_encoder(scale):
    base_model, variables = init_host(tiny_config("ar", lm_grad_to_tokenizer=1.0))
    scaled_model = hosts.build_host(tiny_config("ar", lm_grad_to_tokenizer=scale))
    batch = scene_batch()

    def grads(model, name):
        def loss_fn(params):
            (_, metrics, _), _ = model.apply(
                {**variables, "params": params},
                batch,
                train=True,
                mutable=["state"],
                rngs={"sample": jax.random.PRNGKey(0)},
            )
            return metrics[name]

        return jax.jit(jax.grad(loss_fn))(variables["params"])

    for name in ("loss/understanding", "loss/generation"):
        full, scaled = grads(base_model, name), grads(scaled_model, name)
        encoder_full = optax.tree.norm(full["tokenizer"]["encoder"])
        np.testing.assert_allclose(
            optax.tree.norm(scaled["tokenizer"]["encoder"]), scale * encoder_full, rtol=1e-4, atol=1e-8
        )
        np.testing.assert_allclose(optax.tree.norm(scaled["lm"]), optax.tree.norm(full["lm"]), rtol=1e-5)
    recon_full = grads(base_model, "loss/reconstruction")["tokenizer"]["encoder"]
    recon_scaled = grads(scaled_model, "loss/reconstruction")["tokenizer"]["encoder"]
    np.testing.assert_allclose(optax.tree.norm(recon_scaled), optax.tree.norm(recon_full), rtol=1e-6)
