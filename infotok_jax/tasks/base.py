"""What the tokenizer and host tasks share: config-driven data, the InfoTok views, PSNR, validation.

Both tasks read `config.data` through `experiment_data` and feed the same (X, Z, Y, T) views of a batch
and of the shared tokenizer's output to the InfoTok regularizer, so the regularizer plugs into every
model identically. The supervised control arm's heads (`infotok.SupervisedControls`) are created and
applied here, under `params["controls"]`, only when `config.infotok.estimator == "supervised"`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from infotok_jax import infotok
from infotok_jax import tokenizer as tokenizer_lib
from infotok_jax.data import experiment_data as data_lib
from infotok_jax.data import pipeline
from infotok_jax.infotok import controls as controls_lib
from infotok_jax.infotok import views as views_lib
from infotok_jax.training.config_checks import ConfigError

T = TypeVar("T")


def psnr(recon: jax.Array, images: jax.Array) -> jax.Array:
    """Mean per-image PSNR (peak 1.0) of reconstructions clipped to [0, 1]."""
    mse_B = jnp.mean(jnp.square(jnp.clip(recon, 0.0, 1.0) - images), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse_B, 1e-10)))


def validate_as_config_error(field: str, validate: Callable[[], T]) -> T:
    """Runs a model's own validation (or a builder that validates); returns its result and re-raises its
    ValueError as a ConfigError under `config.<field>`."""
    try:
        return validate()
    except ValueError as e:
        message = str(e)
        raise ConfigError(
            message if message.startswith("config.") else f"config.{field}: {message}"
        ) from None


def check_data(config: ml_collections.ConfigDict) -> None:
    """The `config.data` block (name, builder settings, splits, batch sizes, vocabulary), read-only."""
    validate_as_config_error("data", lambda: data_lib.validate_config(config.data))


def check_relevance_target(config: ml_collections.ConfigDict) -> None:
    """The privileged Y variants need the field they read: `label` classes, or the scenes `objects`."""
    target = config.infotok.relevance_target
    if target == "label" and config.data.num_classes <= 0:
        raise ConfigError(
            "config.infotok.relevance_target='label' needs a labeled dataset (config.data.num_classes > 0); "
            "use 'text' (label-free) or 'attributes' (scenes)"
        )
    if target == "attributes" and not config.data.name.startswith("scenes"):
        raise ConfigError(
            f"config.infotok.relevance_target='attributes' reads the scene annotation, which "
            f"config.data.name={config.data.name!r} does not have; use 'text' or 'label'"
        )


def check_x_view_size(config: ml_collections.ConfigDict) -> None:
    """An explicit `infotok.x_view_size` must divide the image side (None is derived from it)."""
    size, side = config.infotok.x_view_size, config.data.image_size
    error = None if size is None else views_lib.view_size_error(size, side, side)
    if error:
        raise ConfigError(error)


class ExperimentTask:
    """Data and InfoTok plumbing for tasks trained on `config.data` with `config.infotok`.

    Subclasses set `config`, `model` and `tokenizer_config` (the shared tokenizer's config).
    """

    config: ml_collections.ConfigDict
    tokenizer_config: ml_collections.ConfigDict

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        return data_lib.abstract_batch(self.config.data)

    def check_data_available(self) -> None:
        """Before anything is written: a `tfds:` dataset is prepared under data_dir (read-only)."""
        validate_as_config_error("data", lambda: data_lib.check_available(self.config.data))

    def train_iterator(self, mesh: Mesh):
        data = self.config.data
        data_lib.ensure_prepared(data)  # builds the dataset on first use; --compile_only never gets here
        args = data_lib.pipeline_args(data)
        return pipeline.make_pipeline(**args, split=data.train_split, mesh=mesh, seed=self.config.seed)

    def eval_iterator(self, mesh: Mesh):
        data = self.config.data
        return pipeline.make_pipeline(
            **data_lib.pipeline_args(data, batch_size=data.eval_batch_size),
            split=data.eval_split,
            mesh=mesh,
            seed=self.config.seed,
            shuffle=False,
            num_epochs=1,
        )

    def infotok_views(self, batch, tokenizer_out) -> dict:
        """Keyword arguments of `infotok.regularizer` / `dependence_metrics` for this batch."""
        c = self.config
        return dict(
            x_view_BxF=infotok.pixel_view(batch["image"], c.infotok.x_view_size),
            z_BxNxD=tokenizer_out[c.infotok.z_source],
            y_BxE=infotok.relevance_embedding(
                batch,
                c.infotok.relevance_target,
                vocab_size=c.data.text_vocab_size,
                num_classes=c.data.num_classes,
            ),
            t_BxE=infotok.caption_embedding(batch["caption_tokens"], c.data.text_vocab_size),
            tokenizer_out=tokenizer_out,
        )

    # The supervised control arm's heads.

    def controls_enabled(self) -> bool:
        return self.config.infotok.estimator == "supervised"

    def _controls(self, y_dim: int) -> controls_lib.SupervisedControls:
        c = self.config.infotok
        return controls_lib.SupervisedControls(y_dim, c.control_proj_dim, c.control_temperature)

    def add_controls(self, variables: dict, rng: jax.Array, batch) -> dict:
        """Adds `params["controls"]` in the supervised arm (own key and rng: the model init is unchanged)."""
        if not self.controls_enabled():
            return variables
        tc = self.tokenizer_config
        z_dim = tc.token_dim * (tokenizer_lib.num_tokens(tc) if self.config.infotok.z_view == "flat" else 1)
        v = self.infotok_views(batch, {self.config.infotok.z_source: jnp.zeros((1, 1, z_dim))})
        b = v["y_BxE"].shape[0]
        heads = self._controls(v["y_BxE"].shape[-1]).init(
            jax.random.fold_in(rng, 1), jnp.zeros((b, z_dim)), v["y_BxE"], v["t_BxE"]
        )
        return {**variables, "params": {**variables["params"], controls_lib.PARAMS_KEY: heads["params"]}}

    @staticmethod
    def model_params(params: dict) -> dict:
        """The model's parameters without the control heads."""
        return {k: v for k, v in params.items() if k != controls_lib.PARAMS_KEY}

    def regularizer(self, params, batch, tokenizer_out, step) -> tuple[jax.Array, dict]:
        """The InfoTok term of the loss (with the control heads' losses in the supervised arm)."""
        with jax.named_scope("infotok_regularizer"):  # names the ops for benchmarks/step_profile.py
            return self._regularizer(params, batch, tokenizer_out, step)

    def _regularizer(self, params, batch, tokenizer_out, step) -> tuple[jax.Array, dict]:
        views = self.infotok_views(batch, tokenizer_out)
        control_losses = None
        if self.controls_enabled():
            z_view = infotok.token_view(views["z_BxNxD"].astype(jnp.float32), self.config.infotok.z_view)
            control_losses = self._controls(views["y_BxE"].shape[-1]).apply(
                {"params": params[controls_lib.PARAMS_KEY]}, z_view, views["y_BxE"], views["t_BxE"]
            )
        return infotok.regularizer(self.config.infotok, **views, step=step, control_losses=control_losses)

    def information_plane_keys(self) -> tuple[str, str]:
        return ("eval/nhsic_xz", "eval/nhsic_zy")
