"""Training task for the shared visual tokenizer: reconstruction + tokenizer losses + the InfoTok term.

Per step: images -> SharedTokenizer (train=True, VQ state mutable) -> MSE reconstruction loss, the
tokenizer's own loss terms (commitment, ...) and, for the vib/hsic arms, the InfoTok regularizer on
(X view, Z, Y = task targets, T = caption). Evaluation reports PSNR, codebook usage, the rate and the
dependence measurements that feed the information plane.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from infotok_jax import infotok, tokenizer
from infotok_jax.data import experiment_data as data_lib
from infotok_jax.training.config_checks import ConfigError


def psnr(recon: jax.Array, images: jax.Array) -> jax.Array:
    """Mean per-image PSNR (peak 1.0) of reconstructions clipped to [0, 1]."""
    mse_B = jnp.mean(jnp.square(jnp.clip(recon, 0.0, 1.0) - images), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse_B, 1e-10)))


class TokenizerTask:
    """Trains `config.model` (a tokenizer config) on `config.data` with `config.infotok`."""

    def __init__(self, config: ml_collections.ConfigDict):
        try:
            tokenizer.validate_config(config.model)
            infotok.validate(config.infotok, config.model.quantizer)
        except ValueError as e:
            message = str(e)
            raise ConfigError(
                message if message.startswith("config.") else f"config.model: {message}"
            ) from None
        if config.data.image_size != config.model.image_size:
            raise ConfigError(
                f"config.model.image_size={config.model.image_size} must equal "
                f"config.data.image_size={config.data.image_size}"
            )
        self.config = config
        self.model = tokenizer.SharedTokenizer(config.model)

    # Data --------------------------------------------------------------------------------------------
    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        return data_lib.abstract_batch(self.config.data)

    def train_iterator(self, mesh: Mesh):
        data = self.config.data
        data_lib.ensure_prepared(data)  # builds the dataset on first use; --compile_only never gets here
        return data_lib.make_pipeline(data, split=data.train_split, mesh=mesh, seed=self.config.seed)

    def eval_iterator(self, mesh: Mesh):
        data = self.config.data
        return data_lib.make_pipeline(
            data,
            split=data.eval_split,
            mesh=mesh,
            seed=self.config.seed,
            shuffle=False,
            num_epochs=1,
            batch_size=data.eval_batch_size,
        )

    # Model -------------------------------------------------------------------------------------------
    def init_variables(self, rng, batch):
        del batch
        return dict(tokenizer.init_variables(self.model, rng))

    def _views(self, batch, out):
        c = self.config
        return dict(
            x_view_BxF=infotok.pixel_view(batch["image"], c.infotok.x_view_size),
            z_BxNxD=out[c.infotok.z_source],
            y_BxE=infotok.target_embedding(batch, c.data.num_classes),
            t_BxE=infotok.caption_embedding(batch["caption_tokens"], c.data.text_vocab_size),
            tokenizer_out=out,
        )

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        out, new_mutable = self.model.apply(
            {"params": params, **mutable},
            batch["image"],
            train=True,
            rngs={"sample": sample_rng, "revive": revive_rng},
            mutable=list(mutable),
        )
        reconstruction = jnp.mean(jnp.square(out["recon"] - batch["image"]))
        tokenizer_losses = sum(out["losses"].values(), jnp.zeros((), jnp.float32))
        regularizer, ib_metrics = infotok.regularizer(
            self.config.infotok, **self._views(batch, out), step=step
        )
        loss = reconstruction + tokenizer_losses + regularizer
        metrics = {
            "reconstruction_mse": reconstruction,
            **{f"tokenizer/{k}": v for k, v in out["losses"].items()},
            **{f"tokenizer/{k}": v for k, v in out["metrics"].items()},
            **ib_metrics,
        }
        return loss, (metrics, dict(new_mutable))

    def eval_metrics(self, variables, batch, rng):
        out = self.model.apply(variables, batch["image"], train=False, rngs={"sample": rng})
        metrics = {
            "psnr": psnr(out["recon"], batch["image"]),
            "reconstruction_mse": jnp.mean(jnp.square(out["recon"] - batch["image"])),
            **out["metrics"],
        }
        metrics.update(infotok.dependence_metrics(self.config.infotok, **self._views(batch, out)))
        return metrics

    def visualize(self, variables, batch):
        images = batch["image"][:16]
        recon = self.model.apply(variables, images, train=False, rngs={"sample": jax.random.key(0)})["recon"]
        return {"reconstructions": jnp.stack([images, jnp.clip(recon, 0.0, 1.0)])}

    def information_plane_keys(self) -> tuple[str, str]:
        return ("eval/nhsic_xz", "eval/nhsic_zy")
