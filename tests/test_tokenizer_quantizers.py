"""Bottleneck tests against numpy references: VQ nearest code and EMA step, dead-code revival, FSQ grid and
index bijection, straight-through gradients, and the Gaussian head's mean/variance."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from infotok_jax.tokenizer.gaussian_head import GaussianHead
from infotok_jax.tokenizer.quantizers import FiniteScalarQuantizer, VectorQuantizer, fsq_basis

K, D = 12, 3


def vq_state(codebook, usage, sums, steps=0):
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return {
        "state": {
            "codebook": f32(codebook),
            "ema_usage": f32(usage),
            "ema_sums": f32(sums),
            "steps": jnp.asarray(steps, jnp.int32),
        }
    }


def np_nearest(z_MxD, codebook_KxD):
    dist = ((z_MxD[:, None, :].astype(np.float64) - codebook_KxD[None].astype(np.float64)) ** 2).sum(-1)
    return dist, dist.argmin(-1)


class VectorQuantizerTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.codebook = rng.normal(size=(K, D)).astype(np.float32)
        self.usage = rng.uniform(0.05, 0.2, size=K).astype(np.float32)
        self.sums = rng.normal(size=(K, D)).astype(np.float32)
        self.z = rng.normal(size=(4, 5, D)).astype(np.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_nearest_code_logits_and_commitment_match_numpy(self):
        vq = VectorQuantizer(K, D, commitment=0.25, logit_temperature=2.0)
        variables = vq_state(self.codebook, self.usage, self.sums)
        out = self.variant(lambda z: vq.apply(variables, z, train=False))(self.z)
        dist, idx = np_nearest(self.z.reshape(-1, D), self.codebook)
        np.testing.assert_array_equal(np.asarray(out["indices"]).reshape(-1), idx)
        chex.assert_type(out["indices"], jnp.int32)
        np.testing.assert_allclose(np.asarray(out["z"]).reshape(-1, D), self.codebook[idx], atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(out["code_logits"]).reshape(-1, K), -dist / 2.0, rtol=1e-4, atol=1e-4
        )
        commit = 0.25 * np.mean((self.z.reshape(-1, D) - self.codebook[idx]) ** 2)
        np.testing.assert_allclose(float(out["losses"]["commitment"]), commit, rtol=1e-5)
        self.assertEqual(float(out["losses"]["codebook"]), 0.0)
        counts = np.bincount(idx, minlength=K)
        p = counts / counts.sum()
        nz = p[p > 0]
        perplexity = np.exp(-(nz * np.log(nz)).sum())
        np.testing.assert_allclose(float(out["metrics"]["codebook_perplexity"]), perplexity, rtol=1e-5)
        np.testing.assert_allclose(float(out["metrics"]["codebook_usage"]), (counts > 0).mean(), rtol=1e-6)
        np.testing.assert_allclose(float(out["metrics"]["codebook_max_ratio"]), p.max(), rtol=1e-6)

    def test_straight_through_gradient_is_identity(self):
        vq = VectorQuantizer(K, D)
        w = np.random.default_rng(1).normal(size=self.z.shape).astype(np.float32)
        grad = jax.grad(
            lambda z: jnp.sum(
                vq.apply(vq_state(self.codebook, self.usage, self.sums), z, train=False)["z"] * w
            )
        )(jnp.asarray(self.z))
        np.testing.assert_allclose(np.asarray(grad), w, rtol=1e-6)

    def test_ema_step_matches_numpy(self):
        decay = 0.9
        vq = VectorQuantizer(K, D, ema_decay=decay, dead_code_threshold=0.0)
        self.usage[3] = 0.0  # a code with no mass that is never nearest must keep its vector
        self.sums[3] = 0.0
        self.codebook[3] = 50.0
        variables = vq_state(self.codebook, self.usage, self.sums)
        out, new = vq.apply(variables, self.z, train=True, mutable=["state"])
        z = self.z.reshape(-1, D).astype(np.float64)
        _, idx = np_nearest(z, self.codebook)
        m = z.shape[0]
        onehot = np.eye(K)[idx]
        usage = decay * self.usage + (1 - decay) * onehot.sum(0) / m
        sums = decay * self.sums + (1 - decay) * onehot.T @ z / m
        codebook = np.where(
            usage[:, None] > 1e-12, sums / np.where(usage > 1e-12, usage, 1.0)[:, None], self.codebook
        )
        st = new["state"]
        np.testing.assert_allclose(np.asarray(st["ema_usage"]), usage, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(st["ema_sums"]), sums, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(st["codebook"]), codebook, rtol=1e-4, atol=1e-5)
        self.assertEqual(int(st["steps"]), 1)
        self.assertNotIn(3, idx)
        np.testing.assert_array_equal(np.asarray(st["codebook"])[3], self.codebook[3])
        # The quantization of this step used the old codebook.
        np.testing.assert_array_equal(np.asarray(out["indices"]).reshape(-1), idx)

    def test_no_update_without_train_or_mutable(self):
        vq = VectorQuantizer(K, D, ema_decay=0.5)
        variables = vq_state(self.codebook, self.usage, self.sums)
        _, new = vq.apply(variables, self.z, train=False, mutable=["state"])
        chex.assert_trees_all_equal(new, variables)
        out = vq.apply(variables, self.z, train=True)  # immutable state: pure forward
        chex.assert_tree_all_finite(out)

    def test_dead_codes_are_revived_with_batch_tokens(self):
        codebook = self.codebook.copy()
        dead = np.array([1, 4, 7])
        codebook[dead] = 100.0  # never nearest
        usage = np.full(K, 1.0 / K, np.float32)
        usage[dead] = 1e-6
        threshold = 0.5
        vq = VectorQuantizer(K, D, ema_decay=0.99, dead_code_threshold=threshold)
        for rngs in ({"revive": jax.random.key(3)}, {}):
            out, new = vq.apply(
                vq_state(codebook, usage, codebook * usage[:, None]),
                self.z,
                train=True,
                mutable=["state"],
                rngs=rngs,
            )
            st = jax.tree.map(np.asarray, new["state"])
            tokens = self.z.reshape(-1, D)
            for k in dead:
                match = np.abs(tokens - st["codebook"][k][None]).max(-1)
                self.assertLess(match.min(), 1e-6, f"code {k} was not replaced by a batch token")
                self.assertAlmostEqual(float(st["ema_usage"][k]), 1.0 / K, places=7)
                np.testing.assert_allclose(
                    st["codebook"][k], st["ema_sums"][k] / st["ema_usage"][k], rtol=1e-5
                )
            self.assertEqual(float(out["metrics"]["dead_codes"]), float(len(dead)))
            # After revival no code is below the threshold.
            self.assertTrue(np.all(st["ema_usage"] >= threshold / K))


class FiniteScalarQuantizerTest(chex.TestCase):
    levels = (8, 5, 3)

    def test_codes_lie_on_the_level_grid_and_cover_it(self):
        fsq = FiniteScalarQuantizer(self.levels, dim=len(self.levels))
        z = 3.0 * jax.random.normal(jax.random.key(0), (64, 50, len(self.levels)))
        out = fsq.apply({}, z, train=True)
        codes = np.asarray(out["codes"])
        for i, level in enumerate(self.levels):
            half = level // 2
            scaled = codes[..., i] * half
            np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-5)
            expected = np.arange(level) - half  # e.g. 8 -> -4..3, 5 -> -2..2
            np.testing.assert_array_equal(np.unique(np.round(scaled)), expected)
        np.testing.assert_array_equal(np.asarray(out["z"]), codes)  # D == d: no projection

    def test_indices_codes_bijection(self):
        fsq = FiniteScalarQuantizer(self.levels, dim=len(self.levels))
        k = int(np.prod(self.levels))
        all_idx = jnp.arange(k, dtype=jnp.int32)[None]
        codes = fsq.apply({}, all_idx, method=fsq.indices_to_codes)
        back = fsq.apply({}, codes, method=fsq.codes_to_indices)
        np.testing.assert_array_equal(np.asarray(back), np.asarray(all_idx))
        self.assertEqual(len(np.unique(np.asarray(codes)[0], axis=0)), k)
        # Mixed-radix digits, numpy reference.
        digits = (np.arange(k)[:, None] // fsq_basis(self.levels)[None]) % np.asarray(self.levels)[None]
        half = np.asarray([lv // 2 for lv in self.levels])
        np.testing.assert_allclose(np.asarray(codes)[0], (digits - half[None]) / half[None], atol=1e-6)
        z = jax.random.normal(jax.random.key(1), (2, 7, len(self.levels)))
        out = fsq.apply({}, z, train=False)
        np.testing.assert_allclose(
            np.asarray(fsq.apply({}, out["indices"], method=fsq.indices_to_codes)),
            np.asarray(out["codes"]),
            atol=1e-6,
        )

    def test_projection_and_straight_through_gradient(self):
        fsq = FiniteScalarQuantizer(self.levels, dim=6)
        z = jax.random.normal(jax.random.key(2), (2, 4, 6))
        params = fsq.init(jax.random.key(0), z, train=False)
        out = fsq.apply(params, z, train=False)
        chex.assert_shape(out["z"], (2, 4, 6))
        chex.assert_shape(out["codes"], (2, 4, len(self.levels)))
        np.testing.assert_allclose(
            np.asarray(fsq.apply(params, out["indices"], method=fsq.indices_to_z)),
            np.asarray(out["z"]),
            atol=1e-5,
        )
        grad = jax.grad(lambda x: jnp.sum(fsq.apply(params, x, train=True)["z"]))(z)
        self.assertGreater(float(jnp.min(jnp.sum(jnp.abs(grad), axis=-1))), 0.0)
        chex.assert_tree_all_finite(grad)


class GaussianHeadTest(chex.TestCase):
    def test_mean_at_eval_and_sample_variance_at_train(self):
        b, n, d, c = 4000, 2, 3, 5
        head = GaussianHead(d, init_log_var=-1.0)
        feat_1xNxC = jax.random.normal(jax.random.key(0), (1, n, c))
        mean_1xNxD = jax.random.normal(jax.random.key(1), (1, n, d))
        feats, mean = jnp.tile(feat_1xNxC, (b, 1, 1)), jnp.tile(mean_1xNxD, (b, 1, 1))
        params = head.init(jax.random.key(2), mean, feats, train=False)
        ev = head.apply(params, mean, feats, train=False)
        np.testing.assert_array_equal(np.asarray(ev["z"]), np.asarray(mean))
        tr = head.apply(params, mean, feats, train=True, rngs={"sample": jax.random.key(3)})
        z = np.asarray(tr["z"], np.float64)
        var = np.exp(np.asarray(tr["log_var"][0], np.float64))
        self.assertGreater(float(np.std(np.asarray(tr["log_var"][0]))), 0.0)  # log_var depends on features
        # Relative s.e. of a sample variance is sqrt(2/b) ~ 0.022: 0.12 is > 5 standard errors.
        np.testing.assert_allclose(z.var(axis=0), var, rtol=0.12)
        np.testing.assert_allclose(z.mean(axis=0), np.asarray(mean_1xNxD[0]), atol=5 * np.sqrt(var.max() / b))
        kl = 0.5 * np.sum(np.asarray(mean[0]) ** 2 + var - 1 - np.log(var), -1).mean()
        np.testing.assert_allclose(float(tr["metrics"]["kl_nats_per_token"]), kl, rtol=1e-4)

    def test_train_without_sample_rng_fails_clearly(self):
        head = GaussianHead(2)
        x = jnp.ones((1, 2, 2))
        params = head.init(jax.random.key(0), x, x, train=False)
        with self.assertRaisesRegex(ValueError, "sample"):
            head.apply(params, x, x, train=True)

    def test_reparameterization_gradient(self):
        head = GaussianHead(2)
        x = jnp.ones((3, 2, 2))
        params = nn.unbox(head.init(jax.random.key(0), x, x, train=False))
        rngs = {"sample": jax.random.key(1)}
        g = jax.grad(lambda m: jnp.sum(head.apply(params, m, x, train=True, rngs=rngs)["z"]))(x)
        np.testing.assert_allclose(np.asarray(g), np.ones_like(x))


if __name__ == "__main__":
    absltest.main()
