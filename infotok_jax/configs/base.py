r"""Base-size pod config: a ViT tokenizer + a 12 x 768 host LM (>= 100M parameters) on ImageNet via TFDS.

The data is `tfds:imagenet2012` read through the generic adapter from array_record files that TFDS
prepared under `config.data.data_dir` ($TFDS_DATA_DIR; on a pod a gcsfuse mount of the bucket); it is never
built here. Captions are "a photo of a <class name>" from the label (the adapter's class captions; ImageNet
has no QA pairs, so the understanding loss has no answer tokens to score). Compute is bfloat16 with
float32 parameters and optimizer state; the mesh is FSDP over all devices.

Ahead-of-time compile for a pod without the hardware or the data (abstract shapes only; needs
jax[tpu] in its own venv, see docs/study.md: on v5e:8x8 it fits with 1.7 GiB/chip, lowered inside the
logical axis rules as the trainer does):
  .tpuvenv/bin/python experiments/aot_compile.py --config=experiments/configs/base.py --topology=v5e:8x8
  python -m infotok_jax.train --config=experiments/configs/base.py --workdir=/tmp/aot --compile_only
Train on a pod (see launch/README.md):
  launch/tpu_pod.sh ... --config experiments/configs/base.py --tfds-data-dir gs://BUCKET/tfds
Variants, as comma-separated arguments after the file name:
  host=ar|masked|continuous   arm=none|vib|hsic|supervised   dataset=imagenet2012|<any tfds:name>
  image=256|128   steps=<int>   batch=<int>   seed=<int>   mesh=fsdp|data
  smoke (the same structure at a few-MB size, for CPU tests of --compile_only)
"""

from __future__ import annotations

import ml_collections

from infotok_jax import config_args, infotok, sharding
from infotok_jax.data import experiment_data
from infotok_jax.mllm import hosts
from infotok_jax.training import optimizer

ARGS = dict(
    host="ar",
    arm="hsic",
    dataset="imagenet2012",
    image=256,
    steps=200_000,
    batch=256,
    seed=0,
    mesh="fsdp",
    smoke=False,
)
MESHES = {"fsdp": (1, -1, 1), "data": (-1, 1, 1)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, ARGS)
    if args["mesh"] not in MESHES:
        raise ValueError(f"config argument mesh={args['mesh']!r}; choose one of {', '.join(MESHES)}")
    config = ml_collections.ConfigDict()
    config.task = "host"  # task registry name (infotok_jax.tasks)
    config.seed = args["seed"]  # base seed: init, per-step keys and data order derive from it
    config.num_train_steps = args["steps"]  # total optimizer steps
    config.log_every_steps = 100  # training metrics and progress period
    config.eval_every_steps = 5000  # evaluation losses, PSNR, nHSIC and a generation grid
    config.num_eval_batches = 4  # batches per in-training evaluation
    config.checkpoint_every_steps = 2000  # checkpoint period (plus the final step and on SIGTERM)
    config.keep_checkpoints = 3  # checkpoints kept on disk
    config.mesh_shape = MESHES[args["mesh"]]  # (data, fsdp, model); -1 takes the remaining devices
    config.logical_axis_rules = sharding.LOGICAL_AXIS_RULES  # logical axis -> mesh axes
    config.init_from = ""  # optional checkpoint dir to take parameters from

    config.data = experiment_data.default_config(f"tfds:{args['dataset']}")  # TFDS array_record in data_dir
    config.data.image_size = args["image"]  # center crop + resize to this side
    config.data.global_batch_size = args["batch"]
    config.data.eval_batch_size = args["batch"]
    config.data.caption_length = 16  # "a photo of a <class name>" + BOS/EOS, with room for long names
    config.data.question_length = 4  # no QA in ImageNet: questions are BOS/EOS + padding
    config.data.answer_length = 4
    config.data.text_vocab_size = 2048  # >= 1000 class-name words + "a photo of a/an" + specials
    config.data.num_classes = 1000  # labels (Y only with infotok.relevance_target="label", privileged)
    config.data.num_threads = 16  # grain decode threads per host (JPEG decode + resize)

    config.host = hosts.default_host_config(args["host"])
    tok = config.host.tokenizer
    tok.image_size = config.data.get_ref("image_size")  # one source for the image size and text lengths
    tok.encoder = "vit"
    tok.patch_size = 16  # 256x256 -> 16x16 = 256 tokens (128x128 -> 64)
    tok.width = 768
    tok.num_blocks = 8  # per encoder and per decoder
    tok.num_heads = 12
    tok.mlp_dim = 3072
    tok.token_dim = 32
    tok.codebook_size = 8192
    tok.dtype = "bfloat16"
    lm = config.host.lm
    lm.num_layers, lm.embed_dim, lm.num_heads, lm.num_kv_heads = 12, 768, 12, 12
    lm.head_dim, lm.mlp_dim = 64, 3072
    lm.dtype = "bfloat16"
    lm.remat = "dots_no_batch"  # keep matmul outputs, recompute the rest (activation memory at 256 tokens)
    lm.unroll_layers = False  # 12 scanned layers compile once; unrolling them is untimed on accelerators
    config.host.projector_hidden = 1536
    config.host.flow.width = 1024
    config.host.flow.depth = 6
    config.host.text_vocab_size = config.data.get_ref("text_vocab_size")
    config.host.max_caption_len = config.data.get_ref("caption_length")
    config.host.max_question_len = config.data.get_ref("question_length")
    config.host.max_answer_len = config.data.get_ref("answer_length")

    config.infotok = infotok.default_config()
    config.infotok.estimator = args["arm"]
    if args["arm"] == "vib":
        config.infotok.beta = 1e-3
    config.infotok.warmup_steps = 5000
    config.infotok.x_view_size = 16  # X view: 16x16x3 average-pooled pixels

    config.optimizer = optimizer.default_config()
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 5000

    config.evaluation = ml_collections.ConfigDict()
    config.evaluation.splits = ("validation",)  # ImageNet has no compositional holdout split
    config.evaluation.batch_size = 64
    config.evaluation.max_batches = 8
    config.evaluation.seed = 0

    if args["smoke"]:  # same structure, tiny dims: CPU tests of --compile_only on simulated devices
        config.data.image_size = 32
        tok.patch_size, tok.width, tok.num_blocks, tok.num_heads, tok.mlp_dim = 8, 32, 1, 2, 64
        tok.token_dim, tok.codebook_size = 8, 64
        lm.num_layers, lm.embed_dim, lm.num_heads, lm.num_kv_heads, lm.head_dim, lm.mlp_dim = (
            1,
            32,
            2,
            2,
            16,
            64,
        )
        config.host.projector_hidden, config.host.flow.width, config.host.flow.depth = 32, 32, 1
        config.data.text_vocab_size = 64
        config.data.num_classes = 10
        config.data.global_batch_size = min(args["batch"], 8)
        config.infotok.x_view_size = 8
    return config
