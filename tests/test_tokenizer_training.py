"""A few Adam steps of reconstruction on a fixed tiny batch reduce the eval MSE (conv+vq, vit+fsq) and keep
the VQ codebook in use; the jitted train step threads the "state" collection like a real training loop."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from infotok_jax import tokenizer as tok

STEPS = 40


def tiny_config(encoder, quantizer):
    c = tok.default_config()
    c.image_size, c.patch_size, c.width, c.norm_groups = 16, 4, 16, 4
    c.num_heads, c.mlp_dim, c.token_dim, c.codebook_size = 2, 32, 8, 64
    c.fsq_levels = (5, 5, 5)
    c.encoder, c.quantizer = encoder, quantizer
    return c


def smooth_images(batch=8, size=16, seed=0):
    """Piecewise-smooth colour images: 4x4 random colours upsampled bilinearly (learnable at 16 tokens)."""
    low = np.random.default_rng(seed).uniform(size=(batch, 4, 4, 3)).astype(np.float32)
    return jax.image.resize(jnp.asarray(low), (batch, size, size, 3), "bilinear")


class ReconstructionTrainingTest(parameterized.TestCase):
    @parameterized.parameters(("conv", "vq"), ("vit", "fsq"))
    def test_adam_steps_reduce_reconstruction_error(self, encoder, quantizer):
        model = tok.build_tokenizer(tiny_config(encoder, quantizer))
        variables = nn.unbox(tok.init_variables(model, jax.random.key(0)))
        params, state = variables["params"], variables.get("state", {})
        tx = optax.adam(3e-3)
        opt_state = tx.init(params)
        x = smooth_images()

        def loss_fn(p, s, key):
            out, new = model.apply(
                {"params": p, "state": s}, x, train=True, mutable=["state"], rngs={"revive": key}
            )
            mse = jnp.mean(jnp.square(out["recon"] - x))
            return mse + sum(out["losses"].values()), (new.get("state", s), out["metrics"])

        @jax.jit
        def train_step(p, s, o, key):
            (_, (s, metrics)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, key)
            updates, o = tx.update(g, o, p)
            return optax.apply_updates(p, updates), s, o, metrics

        @jax.jit
        def eval_mse(p, s):
            out = model.apply({"params": p, "state": s}, x, train=False)
            return jnp.mean(jnp.square(out["recon"] - x))

        # The VQ codebook starts as noise; the first train step seeds it from the encoder outputs.
        params, state, opt_state, _ = train_step(params, state, opt_state, jax.random.key(0))
        before = float(eval_mse(params, state))
        for i in range(1, STEPS):
            params, state, opt_state, metrics = train_step(params, state, opt_state, jax.random.key(i))
        after = float(eval_mse(params, state))
        chex.assert_tree_all_finite((params, state))
        self.assertLess(after, 0.6 * before, f"MSE {before:.4f} -> {after:.4f}")
        self.assertGreater(float(metrics["codebook_usage"]) * tok.num_codes(model.config), 4.0)
        if quantizer == "vq":
            self.assertEqual(int(state["quantizer"]["steps"]), STEPS)


if __name__ == "__main__":
    absltest.main()
