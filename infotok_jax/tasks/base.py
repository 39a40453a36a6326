"""What the tokenizer and host tasks share: config-driven data, the InfoTok views, PSNR, validation.

Both tasks read `config.data` through `experiment_data` and feed the same (X, Z, Y, T) views of a batch
and of the shared tokenizer's output to the InfoTok regularizer, so the regularizer plugs into every
model identically.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from infotok_jax import infotok
from infotok_jax.data import experiment_data as data_lib
from infotok_jax.training.config_checks import ConfigError


def psnr(recon: jax.Array, images: jax.Array) -> jax.Array:
    """Mean per-image PSNR (peak 1.0) of reconstructions clipped to [0, 1]."""
    mse_B = jnp.mean(jnp.square(jnp.clip(recon, 0.0, 1.0) - images), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse_B, 1e-10)))


def validate_as_config_error(field: str, validate: Callable[[], None]) -> None:
    """Runs a model's own validation; re-raises its ValueError as a ConfigError under `config.<field>`."""
    try:
        validate()
    except ValueError as e:
        message = str(e)
        raise ConfigError(
            message if message.startswith("config.") else f"config.{field}: {message}"
        ) from None


class ExperimentTask:
    """Data and InfoTok plumbing for tasks trained on `config.data` with `config.infotok`."""

    config: ml_collections.ConfigDict

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

    def infotok_views(self, batch, tokenizer_out) -> dict:
        """Keyword arguments of `infotok.regularizer` / `dependence_metrics` for this batch."""
        c = self.config
        return dict(
            x_view_BxF=infotok.pixel_view(batch["image"], c.infotok.x_view_size),
            z_BxNxD=tokenizer_out[c.infotok.z_source],
            y_BxE=infotok.target_embedding(batch, c.data.num_classes),
            t_BxE=infotok.caption_embedding(batch["caption_tokens"], c.data.text_vocab_size),
            tokenizer_out=tokenizer_out,
        )

    def information_plane_keys(self) -> tuple[str, str]:
        return ("eval/nhsic_xz", "eval/nhsic_zy")
