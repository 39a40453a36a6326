r"""A unified MLLM host trained jointly for understanding and generation through the shared tokenizer.

Train (default: masked host on captioned scenes 32x32 with InfoTok(HSIC)):
  python -m infotok_jax.train --config=experiments/configs/host.py --workdir=/tmp/host_masked
Evaluate a trained run (understanding accuracy, oracle-scored generation, PSNR, grids):
  python -m infotok_jax.evaluate --config=experiments/configs/host.py --workdir=/tmp/host_masked
Variants, as comma-separated arguments after the file name:
  host=ar|masked|continuous   arm=none|vib|hsic   tokens=16|64   nuisance=<0..1>   steps=<int>
  batch=<int>   seed=<int>   eval_every=<int>   tiny (CPU smoke test)
  e.g. --config=experiments/configs/host.py:host=masked,arm=vib
"""

from __future__ import annotations

import ml_collections

from infotok_jax import config_args, infotok
from infotok_jax.data import experiment_data
from infotok_jax.mllm import hosts
from infotok_jax.training import optimizer

ARGS = dict(host="masked", arm="hsic", tokens=16, nuisance=0.5, steps=1500, batch=64, seed=0, eval_every=500,
            tiny=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, ARGS)
    config = ml_collections.ConfigDict()
    config.task = "host"  # task registry name (infotok_jax.tasks)
    config.seed = args["seed"]  # base seed: init, per-step keys and data order derive from it
    config.num_train_steps = args["steps"]  # total optimizer steps
    config.log_every_steps = 25  # training metrics and progress period
    config.eval_every_steps = args["eval_every"]  # evaluation losses, PSNR, nHSIC and a generation grid
    config.num_eval_batches = 2  # batches per in-training evaluation
    config.checkpoint_every_steps = 250  # checkpoint period (plus the final step and on SIGTERM)
    config.keep_checkpoints = 2  # checkpoints kept on disk
    config.mesh_shape = (-1, 1, 1)  # (data, fsdp, model); one -1 is filled with the remaining devices
    config.init_from = ""  # optional checkpoint dir to take parameters from (resume order in trainer.py)

    config.data = experiment_data.default_config("scenes")  # dataset, batch and text settings
    config.data.global_batch_size = args["batch"]
    config.data.nuisance = args["nuisance"]
    config.data.text_vocab_size = 64  # >= the scenes vocabulary (44 words)

    config.host = hosts.default_host_config(args["host"])  # host LM + its shared tokenizer
    config.host.tokenizer.image_size = config.data.image_size
    config.host.tokenizer.patch_size = config.data.image_size // int(round(args["tokens"] ** 0.5))
    config.host.text_vocab_size = config.data.text_vocab_size
    config.host.max_caption_len = config.data.caption_length
    config.host.max_question_len = config.data.question_length
    config.host.max_answer_len = config.data.answer_length

    config.infotok = infotok.default_config()  # the InfoTok regularizer (fields documented there)
    config.infotok.estimator = args["arm"]
    if args["arm"] == "vib":
        config.infotok.beta = 1e-3  # VIB rate weight (nats/token), Alemi et al. 2016 scale

    config.optimizer = optimizer.default_config()  # AdamW + warm-up + cosine + clipping
    config.optimizer.learning_rate = 1e-3

    config.evaluation = ml_collections.ConfigDict()  # the evaluation binary (python -m infotok_jax.evaluate)
    config.evaluation.splits = ("validation", "holdout")  # splits scored
    config.evaluation.batch_size = 128  # prompts / questions per batch
    config.evaluation.max_batches = 4  # batches per split and evaluator (512 examples)
    config.evaluation.seed = 0  # generation key

    if args["tiny"]:
        config.num_train_steps = min(config.num_train_steps, 4)
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.num_eval_batches = 1
        config.data.global_batch_size = min(args["batch"], 8)
        config.data.eval_batch_size = 8
        config.optimizer.warmup_steps = 1
        config.infotok.warmup_steps = 1
        config.host.lm.num_layers = 1
        config.host.lm.embed_dim = 32
        config.host.lm.num_heads = 2
        config.host.lm.num_kv_heads = 2
        config.host.lm.head_dim = 16
        config.host.lm.mlp_dim = 64
        config.host.tokenizer.width = 16
        config.host.tokenizer.codebook_size = 32
        config.host.flow.width = 32
        config.host.flow.depth = 1
        config.evaluation.batch_size = 8
        config.evaluation.max_batches = 1
        experiment_data.make_tiny(config.data)
    return config
