"""InfoTok added to a small VQ tokenizer written in flax.linen, trained on Fashion-MNIST.

    python examples/flax_linen_vq.py

Trains the same tokenizer twice (same init, same batches), without and with InfoTok (HSIC arm:
compress what the tokens keep of a pooled pixel view, keep what the paired caption says), then prints
nHSIC(Z, T) on held-out images and a linear label probe on the quantized tokens. The InfoTok part is
the block marked `# --- InfoTok`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from infotok_jax import infotok

import common

NUM_TOKENS, TOKEN_DIM, CODEBOOK_SIZE = 4, 8, 64


class VQTokenizer(nn.Module):
    """MLP encoder -> NUM_TOKENS vectors -> nearest codebook entry (straight-through) -> MLP decoder."""

    @nn.compact
    def __call__(self, images_BxHxW):
        b = images_BxHxW.shape[0]
        h = nn.gelu(nn.Dense(256)(images_BxHxW.reshape(b, -1)))
        z_pre = nn.Dense(NUM_TOKENS * TOKEN_DIM)(h).reshape(b, NUM_TOKENS, TOKEN_DIM)
        codebook = self.param("codebook", nn.initializers.normal(1.0), (CODEBOOK_SIZE, TOKEN_DIM))
        distances = jnp.sum((z_pre[..., None, :] - codebook[None, None]) ** 2, axis=-1)
        z_q = codebook[jnp.argmin(distances, axis=-1)]
        commitment = jnp.mean((jax.lax.stop_gradient(z_pre) - z_q) ** 2)
        commitment += 0.25 * jnp.mean((z_pre - jax.lax.stop_gradient(z_q)) ** 2)
        z = z_pre + jax.lax.stop_gradient(z_q - z_pre)
        h = nn.gelu(nn.Dense(256)(z.reshape(b, -1)))
        recon = nn.sigmoid(nn.Dense(images_BxHxW.shape[1] * images_BxHxW.shape[2])(h))
        return {
            "z_pre": z_pre,
            "z": z_q,
            "recon": recon.reshape(images_BxHxW.shape),
            "commitment": commitment,
        }


def train(use_infotok: bool, data: dict, steps: int, seed: int = 0):
    model = VQTokenizer()
    params = model.init(jax.random.key(seed), jnp.asarray(data["image"][:2]))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, batch):
        out = model.apply(params, batch["image"])
        loss = jnp.mean((out["recon"] - batch["image"]) ** 2) + out["commitment"]
        # --- InfoTok: compress nHSIC(X, Z) of a 7x7 pixel view, keep nHSIC(Z, T) with the caption
        if use_infotok:
            x_view = infotok.pixel_view(batch["image"][..., None], 7)
            ib, _ = infotok.ib_loss(out["z_pre"], x=x_view, t=batch["caption"], beta=0.05, lambda_c=0.5)
            loss = loss + ib
        # --- end InfoTok
        return loss

    @jax.jit
    def step(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for batch in common.batches(data, batch_size=128, steps=steps, seed=seed):
        params, opt_state = step(params, opt_state, batch)
    return lambda images: model.apply(params, jnp.asarray(images))


def main(steps: int = 300) -> dict[str, dict[str, float]]:
    train_data, test_data = common.load("train", 6000), common.load("test", 1000)
    rows = {}
    for name, use_infotok in (("without InfoTok", False), ("with InfoTok", True)):
        tokenize = train(use_infotok, train_data, steps)
        train_out, test_out = tokenize(train_data["image"][:2000]), tokenize(test_data["image"])
        rows[name] = {
            "nHSIC(Z,T)": common.nhsic(test_out["z_pre"], test_data["caption"]),
            "probe accuracy": common.linear_probe_accuracy(
                train_out["z"], train_data["label"][:2000], test_out["z"], test_data["label"]
            ),
        }
    common.report(f"flax.linen VQ tokenizer, Fashion-MNIST, {steps} steps (held-out test images)", rows)
    return rows


if __name__ == "__main__":
    main()
