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

from infotok_jax import infotok, tokenizer
from infotok_jax.tasks import base


class TokenizerTask(base.ExperimentTask):
    """Trains `config.model` (a tokenizer config) on `config.data` with `config.infotok`."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.model = base.validate_as_config_error("model", lambda: tokenizer.build_tokenizer(config.model))
        base.validate_as_config_error(
            "infotok", lambda: infotok.validate(config.infotok, config.model.quantizer)
        )
        base.check_data(config)
        base.check_relevance_target(config)
        base.check_x_view_size(config)
        self.config = config
        self.tokenizer_config = config.model

    def init_variables(self, rng, batch):
        return self.add_controls(dict(tokenizer.init_variables(self.model, rng)), rng, batch)

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        out, new_mutable = self.model.apply(
            {"params": self.model_params(params), **mutable},
            batch["image"],
            train=True,
            rngs={"sample": sample_rng, "revive": revive_rng},
            mutable=list(mutable),
        )
        reconstruction = jnp.mean(jnp.square(out["recon"] - batch["image"]))
        tokenizer_losses = sum(out["losses"].values(), jnp.zeros((), jnp.float32))
        regularizer, ib_metrics = self.regularizer(params, batch, out, step)
        loss = reconstruction + tokenizer_losses + regularizer
        metrics = {
            "reconstruction_mse": reconstruction,
            **{f"tokenizer/{k}": v for k, v in out["losses"].items()},
            **{f"tokenizer/{k}": v for k, v in out["metrics"].items()},
            **ib_metrics,
        }
        return loss, (metrics, dict(new_mutable))

    def eval_metrics(self, variables, batch, rng):
        variables = {**variables, "params": self.model_params(variables["params"])}
        out = self.model.apply(variables, batch["image"], train=False, rngs={"sample": rng})
        metrics = {
            "psnr": base.psnr(out["recon"], batch["image"]),
            "reconstruction_mse": jnp.mean(jnp.square(out["recon"] - batch["image"])),
            **out["metrics"],
        }
        metrics.update(infotok.dependence_metrics(self.config.infotok, **self.infotok_views(batch, out)))
        return metrics

    def visualize(self, variables, batch):
        variables = {**variables, "params": self.model_params(variables["params"])}
        images = batch["image"][:16]
        recon = self.model.apply(variables, images, train=False, rngs={"sample": jax.random.key(0)})["recon"]
        return {"reconstructions": jnp.stack([images, jnp.clip(recon, 0.0, 1.0)])}
