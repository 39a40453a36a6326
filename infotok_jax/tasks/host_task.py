"""Training task for a unified MLLM host (ar | masked | continuous) with the InfoTok regularizer.

The host's own losses (answer cross-entropy, generation loss, tokenizer reconstruction and tokenizer
terms) form L_host; the InfoTok regularizer is computed on the host's shared-tokenizer output exactly as
for the standalone tokenizer, so it plugs into every host identically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from infotok_jax import infotok
from infotok_jax.mllm import hosts
from infotok_jax.tasks import base
from infotok_jax.training.config_checks import ConfigError

_LENGTH_FIELDS = (
    ("max_caption_len", "caption_length"),
    ("max_question_len", "question_length"),
    ("max_answer_len", "answer_length"),
    ("text_vocab_size", "text_vocab_size"),
)


class HostTask(base.ExperimentTask):
    """Trains `config.host` (a host config with its tokenizer) on `config.data` with `config.infotok`."""

    def __init__(self, config: ml_collections.ConfigDict):
        base.validate_as_config_error("host", lambda: hosts.validate_host_config(config.host))
        quantizer = config.host.tokenizer.quantizer
        base.validate_as_config_error("infotok", lambda: infotok.validate(config.infotok, quantizer))
        if config.data.image_size != config.host.tokenizer.image_size:
            raise ConfigError(
                f"config.host.tokenizer.image_size={config.host.tokenizer.image_size} must equal "
                f"config.data.image_size={config.data.image_size}"
            )
        for host_field, data_field in _LENGTH_FIELDS:
            if config.host[host_field] != config.data[data_field]:
                raise ConfigError(
                    f"config.host.{host_field}={config.host[host_field]} must equal "
                    f"config.data.{data_field}={config.data[data_field]}"
                )
        self.config = config
        self.model = hosts.build_host(config.host)

    def init_variables(self, rng, batch):
        del batch
        return dict(hosts.init_variables(self.model, rng))

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        (host_loss, metrics, tokenizer_out), new_mutable = self.model.apply(
            {"params": params, **mutable},
            batch,
            train=True,
            rngs={"sample": sample_rng, "revive": revive_rng},
            mutable=list(mutable),
        )
        regularizer, ib_metrics = infotok.regularizer(
            self.config.infotok, **self.infotok_views(batch, tokenizer_out), step=step
        )
        return host_loss + regularizer, ({**metrics, **ib_metrics}, dict(new_mutable))

    def eval_metrics(self, variables, batch, rng):
        _, metrics, tokenizer_out = self.model.apply(variables, batch, train=False)
        metrics = dict(metrics)
        if "recon" in tokenizer_out:
            metrics["psnr"] = base.psnr(tokenizer_out["recon"], batch["image"])
        metrics.update(
            infotok.dependence_metrics(self.config.infotok, **self.infotok_views(batch, tokenizer_out))
        )
        return metrics

    def visualize(self, variables, batch):
        captions = batch["caption_tokens"][:8]
        generated = hosts.generate(self.model, variables, captions, jax.random.key(0))["images"]
        images = batch["image"][:8]
        return {"generations": jnp.stack([images, jnp.clip(generated, 0.0, 1.0)])}
