"""InfoTok added to a small VQ tokenizer written in flax.nnx, trained on Fashion-MNIST.

    python examples/flax_nnx_vq.py

Trains the same tokenizer twice (same init, same batches), without and with InfoTok (HSIC arm, the
caption term only: keep what the paired caption says), then prints nHSIC(Z, T) on held-out images and a
linear label probe on the quantized tokens. The InfoTok part is the block marked `# --- InfoTok`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from infotok_jax import infotok

import common

NUM_TOKENS, TOKEN_DIM, CODEBOOK_SIZE = 4, 8, 64


class VQTokenizer(nnx.Module):
    """MLP encoder -> NUM_TOKENS vectors -> nearest codebook entry (straight-through) -> MLP decoder."""

    def __init__(self, rngs: nnx.Rngs, pixels: int = 28 * 28):
        self.encoder = nnx.Sequential(
            nnx.Linear(pixels, 256, rngs=rngs), nnx.gelu, nnx.Linear(256, NUM_TOKENS * TOKEN_DIM, rngs=rngs)
        )
        self.codebook = nnx.Param(jax.random.normal(rngs.params(), (CODEBOOK_SIZE, TOKEN_DIM)))
        self.decoder = nnx.Sequential(
            nnx.Linear(NUM_TOKENS * TOKEN_DIM, 256, rngs=rngs), nnx.gelu, nnx.Linear(256, pixels, rngs=rngs)
        )

    def __call__(self, images_BxHxW):
        b = images_BxHxW.shape[0]
        z_pre = self.encoder(images_BxHxW.reshape(b, -1)).reshape(b, NUM_TOKENS, TOKEN_DIM)
        codebook = self.codebook[...]
        distances = jnp.sum((z_pre[..., None, :] - codebook[None, None]) ** 2, axis=-1)
        z_q = codebook[jnp.argmin(distances, axis=-1)]
        commitment = jnp.mean((jax.lax.stop_gradient(z_pre) - z_q) ** 2)
        commitment += 0.25 * jnp.mean((z_pre - jax.lax.stop_gradient(z_q)) ** 2)
        z = z_pre + jax.lax.stop_gradient(z_q - z_pre)
        recon = jax.nn.sigmoid(self.decoder(z.reshape(b, -1))).reshape(images_BxHxW.shape)
        return {"z_pre": z_pre, "z": z_q, "recon": recon, "commitment": commitment}


def train(use_infotok: bool, data: dict, steps: int, seed: int = 0) -> VQTokenizer:
    model = VQTokenizer(nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def loss_fn(model, batch):
        out = model(batch["image"])
        loss = jnp.mean((out["recon"] - batch["image"]) ** 2) + out["commitment"]
        # --- InfoTok: keep nHSIC(Z, T), what the tokens share with the paired caption
        if use_infotok:
            ib, _ = infotok.ib_loss(out["z_pre"], t=batch["caption"], lambda_c=0.5, z_view="flat")
            loss = loss + ib
        # --- end InfoTok
        return loss

    @nnx.jit
    def step(model, optimizer, batch):
        optimizer.update(model, nnx.grad(loss_fn)(model, batch))

    for batch in common.batches(data, batch_size=128, steps=steps, seed=seed):
        step(model, optimizer, batch)
    return model


def main(steps: int = 300) -> dict[str, dict[str, float]]:
    train_data, test_data = common.load("train", 6000), common.load("test", 1000)
    rows = {}
    for name, use_infotok in (("without InfoTok", False), ("with InfoTok", True)):
        model = train(use_infotok, train_data, steps)
        train_out, test_out = (
            model(jnp.asarray(train_data["image"][:2000])),
            model(jnp.asarray(test_data["image"])),
        )
        rows[name] = {
            "nHSIC(Z,T)": common.nhsic(test_out["z_pre"], test_data["caption"]),
            "probe accuracy": common.linear_probe_accuracy(
                train_out["z"], train_data["label"][:2000], test_out["z"], test_data["label"]
            ),
        }
    common.report(f"flax.nnx VQ tokenizer, Fashion-MNIST, {steps} steps (held-out test images)", rows)
    return rows


if __name__ == "__main__":
    main()
