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
from infotok_jax.data import experiment_data as data_lib
from infotok_jax.data import preparation, scene_oracle, text_tokenizer
from infotok_jax.mllm import hosts
from infotok_jax.tasks import base


class HostTask(base.ExperimentTask):
    """Trains `config.host` (a host config with its tokenizer) on `config.data` with `config.infotok`."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.model = base.validate_as_config_error("host", lambda: hosts.build_host(config.host))
        quantizer = config.host.tokenizer.quantizer
        base.validate_as_config_error("infotok", lambda: infotok.validate(config.infotok, quantizer))
        base.check_data(config)
        base.check_relevance_target(config)
        base.check_x_view_size(config)
        self.config = config
        self.tokenizer_config = config.host.tokenizer

    def init_variables(self, rng, batch):
        return self.add_controls(dict(hosts.init_variables(self.model, rng)), rng, batch)

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        (host_loss, metrics, tokenizer_out), new_mutable = self.model.apply(
            {"params": self.model_params(params), **mutable},
            batch,
            train=True,
            rngs={"sample": sample_rng, "revive": revive_rng},
            mutable=list(mutable),
        )
        regularizer, ib_metrics = self.regularizer(params, batch, tokenizer_out, step)
        return host_loss + regularizer, ({**metrics, **ib_metrics}, dict(new_mutable))

    def eval_metrics(self, variables, batch, rng):
        variables = {**variables, "params": self.model_params(variables["params"])}
        _, metrics, tokenizer_out = self.model.apply(variables, batch, train=False)
        metrics = dict(metrics)
        if "recon" in tokenizer_out:
            metrics["psnr"] = base.psnr(tokenizer_out["recon"], batch["image"])
        metrics.update(
            infotok.dependence_metrics(self.config.infotok, **self.infotok_views(batch, tokenizer_out))
        )
        return metrics

    def visualize(self, variables, batch):
        variables = {**variables, "params": self.model_params(variables["params"])}
        captions = batch["caption_tokens"][:8]
        generated = hosts.generate(self.model, variables, captions, jax.random.key(0))["images"]
        images, objects = batch["image"][:8], batch["objects"][:8]
        grid = jnp.stack([images, jnp.clip(generated, 0.0, 1.0)])
        # `<grid>.<key>` entries annotate the grid: see plots.publish_pictures and picture_captions
        return {"generations": grid, "generations.caption_tokens": captions, "generations.objects": objects}

    def picture_captions(self, name: str, rows_RxBxHxWx3, annotations: dict) -> list[str]:
        """Captions of the generation grid's columns with the scene oracle's verdict on each generated
        image ([] without a vocabulary; no verdict on data without scene objects)."""
        c = self.config.data
        if name != "generations" or c.name.startswith("tfds:"):
            return []
        if getattr(self, "_text_tokenizer", None) is None:
            prepared = preparation.open_prepared(c.name, c.data_dir, **data_lib.builder_kwargs(c))
            self._text_tokenizer = text_tokenizer.WordTokenizer.load(prepared.tokenizer_path)
        vocab = self._text_tokenizer.vocab_size
        tokens = annotations["caption_tokens"].tolist()
        texts = [self._text_tokenizer.decode([i for i in row if 0 <= i < vocab]) for row in tokens]
        objects_BxOx4 = annotations["objects"]
        if not (objects_BxOx4[:, 0, 0] >= 0).all():
            return texts
        correct = scene_oracle.score_batch(rows_RxBxHxWx3[1], objects_BxOx4, c.image_size)["all_correct"]
        return [
            f"{t}  [oracle: {'correct' if ok else 'wrong'}]" for t, ok in zip(texts, correct, strict=True)
        ]
