"""InfoTok added to a small Gaussian (VAE-style) tokenizer written in equinox, trained on Fashion-MNIST.

    python examples/equinox_gaussian.py

Trains the same tokenizer twice (same init, same batches, same noise), without and with InfoTok (VIB
arm: pay the rate KL(q(z|x) || N(0, I)) and keep what the paired caption says), then prints the rate in
bits per token and a linear label probe on the token means of held-out images. The InfoTok part is the
block marked `# --- InfoTok`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from infotok_jax import estimators, infotok

import common

NUM_TOKENS, TOKEN_DIM = 4, 8


class GaussianTokenizer(eqx.Module):
    """MLP encoder -> NUM_TOKENS Gaussian tokens (mean, log-variance), sampled -> MLP decoder."""

    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP

    def __init__(self, key: jax.Array, pixels: int = 28 * 28):
        k1, k2 = jax.random.split(key)
        self.encoder = eqx.nn.MLP(pixels, 2 * NUM_TOKENS * TOKEN_DIM, 256, 1, activation=jax.nn.gelu, key=k1)
        self.decoder = eqx.nn.MLP(NUM_TOKENS * TOKEN_DIM, pixels, 256, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, images_BxHxW, key):
        b = images_BxHxW.shape[0]
        stats = jax.vmap(self.encoder)(images_BxHxW.reshape(b, -1)).reshape(b, NUM_TOKENS, 2 * TOKEN_DIM)
        mean, log_var = stats[..., :TOKEN_DIM], stats[..., TOKEN_DIM:]
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        recon = jax.nn.sigmoid(jax.vmap(self.decoder)(z.reshape(b, -1))).reshape(images_BxHxW.shape)
        return {"mean": mean, "log_var": log_var, "z": z, "recon": recon}


def train(use_infotok: bool, data: dict, steps: int, seed: int = 0) -> GaussianTokenizer:
    model = GaussianTokenizer(jax.random.key(seed))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    def loss_fn(model, batch, key):
        out = model(batch["image"], key)
        loss = jnp.mean((out["recon"] - batch["image"]) ** 2)
        # --- InfoTok: pay the rate in nats per token, keep nHSIC(Z, T) with the caption
        if use_infotok:
            rate = estimators.gaussian_kl(out["mean"], out["log_var"]).mean()
            ib, _ = infotok.ib_loss(
                out["z"],
                t=batch["caption"],
                rate=rate,
                estimator="vib",
                beta=0.003,
                lambda_c=0.5,
                z_view="flat",
            )
            loss = loss + ib
        # --- end InfoTok
        return loss

    @eqx.filter_jit
    def step(model, opt_state, batch, key):
        grads = eqx.filter_grad(loss_fn)(model, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    keys = jax.random.split(jax.random.key(seed + 1), steps)
    for key, batch in zip(keys, common.batches(data, batch_size=128, steps=steps, seed=seed), strict=True):
        model, opt_state = step(model, opt_state, batch, key)
    return model


def main(steps: int = 300) -> dict[str, dict[str, float]]:
    train_data, test_data = common.load("train", 6000), common.load("test", 1000)
    key = jax.random.key(123)
    rows = {}
    for name, use_infotok in (("without InfoTok", False), ("with InfoTok", True)):
        model = train(use_infotok, train_data, steps)
        train_out = model(jnp.asarray(train_data["image"][:2000]), key)
        test_out = model(jnp.asarray(test_data["image"]), key)
        rate = estimators.gaussian_kl(test_out["mean"], test_out["log_var"]).mean()
        rows[name] = {
            "rate bits/token": float(estimators.nats_to_bits(rate)),
            "probe accuracy": common.linear_probe_accuracy(
                train_out["mean"], train_data["label"][:2000], test_out["mean"], test_data["label"]
            ),
        }
    common.report(f"equinox Gaussian tokenizer, Fashion-MNIST, {steps} steps (held-out test images)", rows)
    return rows


if __name__ == "__main__":
    main()
