"""SharedTokenizer tests: output contract for each encoder x quantizer, logical partitioning and sharded init,
EMA statistics equal under sharding, straight-through gradients, index round-trips, bf16, config errors."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from infotok_jax import sharding
from infotok_jax import tokenizer as tok

B = 8


def tiny_config(encoder="conv", quantizer="vq", **overrides):
    c = tok.default_config()
    c.image_size, c.patch_size, c.width, c.norm_groups = 16, 4, 16, 4
    c.num_heads, c.mlp_dim, c.token_dim, c.codebook_size = 2, 32, 8, 32
    c.fsq_levels = (5, 4, 3)
    c.encoder, c.quantizer = encoder, quantizer
    for k, v in overrides.items():
        c[k] = v
    return c


def images(seed=0, batch=B, size=16):
    return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def setup_model(config, seed=0):
    model = tok.build_tokenizer(config)
    return model, nn.unbox(tok.init_variables(model, jax.random.key(seed)))


COMBOS = [(e, q) for e in tok.ENCODERS for q in tok.QUANTIZERS]


class ContractTest(parameterized.TestCase):
    @parameterized.parameters(*COMBOS)
    def test_output_shapes(self, encoder, quantizer):
        config = tiny_config(encoder, quantizer)
        model = tok.build_tokenizer(config)
        variables = jax.eval_shape(lambda: tok.init_variables(model, jax.random.key(0)))
        x = images()
        out, _ = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["state"], rngs={"sample": jax.random.key(1)}),
            variables,
            x,
        )
        n, d = tok.num_tokens(config), config.token_dim
        self.assertEqual(n, 16)
        chex.assert_shape(out["recon"], x.shape)
        chex.assert_shape([out["z_pre"], out["z"]], (B, n, d))
        chex.assert_shape(out["indices"], (B, n))
        self.assertEqual(out["indices"].dtype, jnp.int32)
        self.assertEqual(out["recon"].dtype, jnp.float32)
        self.assertEqual(out["z"].dtype, jnp.float32)
        self.assertEqual("code_logits" in out, quantizer == "vq")
        if quantizer == "vq":
            chex.assert_shape(out["code_logits"], (B, n, config.codebook_size))
            self.assertEqual(set(out["losses"]), {"commitment", "codebook"})
            self.assertIn("state", variables)
        if quantizer == "gaussian":
            chex.assert_shape([out["mean"], out["log_var"]], (B, n, d))
        for k in ("codebook_perplexity", "codebook_usage", "codebook_max_ratio", "codebook_zeros_ratio"):
            self.assertEqual(k in out["metrics"], quantizer in ("vq", "fsq"))
        for tree in (out["losses"], out["metrics"]):
            for value in jax.tree.leaves(tree):
                chex.assert_shape(value, ())
        enc = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.encode), variables, x)
        self.assertNotIn("recon", enc)
        dec = jax.eval_shape(lambda v, z: model.apply(v, z, method=model.decode), variables, out["z"])
        chex.assert_shape(dec, x.shape)

    @parameterized.parameters(("vit", "conv"), ("conv", "vit"))
    def test_mixed_encoder_decoder(self, encoder, decoder):
        model = tok.build_tokenizer(tiny_config(encoder, "fsq", decoder=decoder))
        variables = jax.eval_shape(lambda: tok.init_variables(model, jax.random.key(0)))
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images())
        chex.assert_shape(out["recon"], (B, 16, 16, 3))

    @parameterized.parameters(*COMBOS)
    def test_every_variable_has_logical_axis_names(self, encoder, quantizer):
        model = tok.build_tokenizer(tiny_config(encoder, quantizer))
        boxed = jax.eval_shape(lambda: tok.init_variables(model, jax.random.key(0)))
        leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        self.assertNotEmpty(leaves)
        known = {name for name, _ in sharding.LOGICAL_AXIS_RULES}
        for leaf in leaves:
            self.assertIsInstance(leaf, nn.LogicallyPartitioned)
            self.assertLen(leaf.names, leaf.value.ndim)
            self.assertTrue(set(leaf.names) - {None} <= known, leaf.names)
        specs = nn.get_partition_spec(boxed)
        spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
        self.assertLen(spec_leaves, len(leaves))


class ShardingTest(parameterized.TestCase):
    @parameterized.parameters(("conv", "vq"), ("vit", "fsq"))
    def test_sharded_init_and_train_step_match_single_device(self, encoder, quantizer):
        config = tiny_config(encoder, quantizer)
        model = tok.build_tokenizer(config)
        mesh = sharding.make_mesh((4, 1, 2))
        init = lambda rng: tok.init_variables(model, rng)
        specs = nn.get_partition_spec(jax.eval_shape(init, jax.random.key(0)))
        shardings = nn.logical_to_mesh_sharding(specs, mesh, sharding.LOGICAL_AXIS_RULES)

        def step(variables, x):
            out, new = model.apply(variables, x, train=True, mutable=["state"])
            return out["recon"], out["z"], new

        x = images(3)
        ref_vars = nn.unbox(jax.jit(init)(jax.random.key(0)))
        ref = jax.jit(step)(ref_vars, x)
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_AXIS_RULES):
            variables = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
            x_sharded = jax.device_put(x, sharding.batch_sharding(mesh, 4))
            got = jax.jit(step)(nn.unbox(variables), x_sharded)
        kernels = [
            leaf
            for leaf in jax.tree.leaves(variables, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
            if leaf.names and leaf.names[-1] in ("conv_out", "mlp")
        ]
        self.assertNotEmpty(kernels)
        for leaf in kernels:
            self.assertEqual(leaf.value.sharding.spec[-1], "model")
        chex.assert_trees_all_close(nn.unbox(variables), ref_vars, atol=1e-6, rtol=1e-6)
        chex.assert_trees_all_close(got, ref, atol=1e-5, rtol=1e-5)


class BehaviourTest(parameterized.TestCase):
    @parameterized.parameters(("conv", "vq"), ("vit", "fsq"))
    def test_straight_through_gradient_reaches_encoder(self, encoder, quantizer):
        model, variables = setup_model(tiny_config(encoder, quantizer))
        x = images(1)

        def recon_loss(params):
            out = model.apply({**variables, "params": params}, x, train=False)
            return jnp.mean(jnp.square(out["recon"] - x))

        grads = jax.jit(jax.grad(recon_loss))(variables["params"])
        chex.assert_tree_all_finite(grads)
        for part in ("encoder", "to_latent"):
            norm = sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads[part]))
            self.assertGreater(norm, 0.0, f"no reconstruction gradient reaches {part}")

    @parameterized.parameters("vq", "fsq")
    def test_index_round_trip(self, quantizer):
        model, variables = setup_model(tiny_config("conv", quantizer))
        x = images(2)
        if quantizer == "vq":  # seed the codebook from data first (first train step revives all codes)
            _, new = model.apply(variables, x, train=True, mutable=["state"])
            variables = {**variables, **new}
        out = model.apply(variables, x, train=False)
        idx = model.apply(variables, x, method=model.encode_to_indices)
        np.testing.assert_array_equal(np.asarray(idx), np.asarray(out["indices"]))
        codebook = model.apply(variables, method=model.codebook)
        chex.assert_shape(codebook, (tok.num_codes(model.config), model.config.token_dim))
        np.testing.assert_allclose(np.asarray(codebook)[np.asarray(idx)], np.asarray(out["z"]), atol=1e-5)
        from_idx = model.apply(variables, idx, method=model.decode_from_indices)
        from_z = model.apply(variables, out["z"], method=model.decode)
        np.testing.assert_allclose(np.asarray(from_idx), np.asarray(from_z), atol=1e-5)
        np.testing.assert_allclose(np.asarray(from_z), np.asarray(out["recon"]), atol=1e-5)
        if quantizer == "vq":
            self.assertGreater(float(out["metrics"]["codebook_usage"]), 1.0 / model.config.codebook_size)

    @parameterized.parameters(("conv", "vq"), ("vit", "gaussian"))
    def test_bfloat16_compute_is_finite_with_float32_params(self, encoder, quantizer):
        model, variables = setup_model(tiny_config(encoder, quantizer, dtype="bfloat16"))
        for leaf in jax.tree.leaves(variables["params"]):
            self.assertEqual(leaf.dtype, jnp.float32)
        out, new = jax.jit(
            lambda v, x: model.apply(v, x, train=True, mutable=["state"], rngs={"sample": jax.random.key(0)})
        )(variables, images())
        chex.assert_tree_all_finite((out, new))
        self.assertEqual(out["recon"].dtype, jnp.float32)
        self.assertLess(float(jnp.mean(jnp.abs(out["recon"] - 0.5))), 10.0)

    def test_gaussian_eval_is_deterministic_mean(self):
        model, variables = setup_model(tiny_config("conv", "gaussian"))
        out = model.apply(variables, images(), train=False)
        np.testing.assert_array_equal(np.asarray(out["z"]), np.asarray(out["mean"]))
        np.testing.assert_array_equal(np.asarray(out["z"]), np.asarray(out["z_pre"]))
        np.testing.assert_array_equal(np.asarray(out["indices"]), -1)


class ValidationTest(parameterized.TestCase):
    @parameterized.parameters(
        ("quantizer", "rvq"),
        ("encoder", "mlp"),
        ("patch_size", 3),
        ("patch_size", 5),
        ("dtype", "float16"),
        ("ema_decay", 1.0),
        ("dead_code_threshold", -1.0),
        ("fsq_levels", (1, 4)),
        ("num_heads", 3),
        ("vq_commitment", -0.1),
        ("codebook_size", 1),
        ("norm_groups", 3),
    )
    def test_invalid_field_is_named(self, field, value):
        quantizer = "fsq" if field == "fsq_levels" else "vq"
        encoder = "vit" if field == "num_heads" else "conv"
        config = tiny_config(encoder, quantizer)
        config[field] = value
        with self.assertRaisesRegex(ValueError, field):
            tok.build_tokenizer(config)

    def test_wrong_image_shape_and_continuous_indices_fail_clearly(self):
        model, variables = setup_model(tiny_config("conv", "gaussian"))
        with self.assertRaisesRegex(ValueError, "image_size"):
            model.apply(variables, jnp.zeros((2, 8, 8, 3)), train=False)
        with self.assertRaisesRegex(ValueError, "quantizer"):
            model.apply(variables, images(), method=model.encode_to_indices)

    def test_default_config_builds_with_64_tokens(self):
        config = tok.default_config()
        tok.validate_config(config)
        self.assertEqual(tok.num_tokens(config), 64)
        self.assertEqual(tok.num_codes(config), config.codebook_size)


if __name__ == "__main__":
    absltest.main()
