r"""Shared visual tokenizer trained for reconstruction, with or without the InfoTok regularizer.

Train (default: captioned scenes 32x32, VQ tokenizer, InfoTok with HSIC):
  python -m infotok_jax.train --config=experiments/configs/tokenizer.py --workdir=/tmp/tokenizer
  infotok-train --config=tokenizer.py --workdir=/tmp/tokenizer       # the packaged file, no checkout
Variants, as comma-separated arguments after the file name:
  dataset=scenes|fashion_mnist   arm=none|vib|hsic|supervised   quantizer=vq|fsq|gaussian|none
  encoder=conv|vit   tokens=16|64   nuisance=<0..1>   steps=<int>   batch=<int>   seed=<int>
  tiny (CPU smoke test)
  e.g. --config=experiments/configs/tokenizer.py:dataset=fashion_mnist,arm=vib,quantizer=gaussian
"""

from __future__ import annotations

import ml_collections

from infotok_jax import config_args, infotok, sharding, tokenizer
from infotok_jax.data import experiment_data
from infotok_jax.training import optimizer

ARGS = dict(
    dataset="scenes",
    arm="hsic",
    quantizer="vq",
    encoder="conv",
    tokens=64,
    nuisance=0.5,
    steps=1500,
    batch=64,
    seed=0,
    tiny=False,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, ARGS)
    config = ml_collections.ConfigDict()
    config.task = "tokenizer"  # task registry name (infotok_jax.tasks)
    config.seed = args["seed"]  # base seed: init, per-step keys and data order derive from it
    config.num_train_steps = args["steps"]  # total optimizer steps
    config.log_every_steps = 25  # training metrics and progress period
    config.eval_every_steps = 250  # evaluation (PSNR, rate, nHSIC) and image-grid period
    config.num_eval_batches = 4  # batches per evaluation
    config.checkpoint_every_steps = 250  # checkpoint period (plus the final step and on SIGTERM)
    config.keep_checkpoints = 2  # checkpoints kept on disk
    config.mesh_shape = (-1, 1, 1)  # (data, fsdp, model); one -1 is filled with the remaining devices
    config.logical_axis_rules = sharding.LOGICAL_AXIS_RULES  # logical axis -> mesh axes
    config.init_from = ""  # optional checkpoint dir to take parameters from (resume order in trainer.py)

    config.data = experiment_data.default_config(args["dataset"])  # dataset, batch and text settings
    config.data.global_batch_size = args["batch"]
    if args["dataset"] == "scenes":
        config.data.nuisance = args["nuisance"]

    config.model = tokenizer.default_config()  # the shared tokenizer (fields documented there)
    image_size = config.data.get_ref("image_size")  # one source: a data override reaches the model
    config.model.image_size = image_size
    config.model.encoder = args["encoder"]
    config.model.quantizer = args["quantizer"]
    side = config_args.tokens_per_side(args["tokens"], config.data.image_size)  # refuses an inexact count
    config.model.patch_size = image_size // side  # tokens stay fixed

    config.infotok = infotok.default_config()  # the InfoTok regularizer (fields documented there)
    config.infotok.estimator = args["arm"]
    if args["arm"] == "vib":
        config.infotok.beta = 1e-3  # VIB rate weight (nats/token), Alemi et al. 2016 scale
    config.infotok.x_view_size = 8 if config.data.image_size % 8 == 0 else 7

    config.optimizer = optimizer.default_config()  # AdamW + warm-up + cosine + clipping
    config.optimizer.learning_rate = 2e-3

    if args["tiny"]:
        config.num_train_steps = min(config.num_train_steps, 6)
        config.log_every_steps = 1
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
        config.num_eval_batches = 1
        config.data.global_batch_size = min(args["batch"], 16)
        config.data.eval_batch_size = 16
        config.optimizer.warmup_steps = 2
        config.infotok.warmup_steps = 2
        config.model.width = 16
        config.model.codebook_size = 64
        experiment_data.make_tiny(config.data)
    return config
