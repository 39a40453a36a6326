"""Config of the toy regression task used by the training-loop tests.

python -m infotok_jax.train --config=tests/configs/toy_regression.py --workdir=/tmp/toy
Arguments (comma-separated key=value): steps, ckpt, eval, nan_at, batch,
mesh (e.g. mesh=4.1.1), lr, delay (seconds per batch), startup_delay (seconds before the first batch),
hidden.
"""

import ml_collections

from infotok_jax.training import optimizer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = dict(kv.split("=") for kv in arg.split(",")) if arg else {}
    config = ml_collections.ConfigDict()
    config.task = "tests.toy_task:ToyRegressionTask"  # a task class outside the package, by import path
    config.seed = 0  # base seed: init and per-step keys derive from it
    config.num_train_steps = int(args.get("steps", 20))  # total optimizer steps
    config.log_every_steps = 1  # metrics to JSONL/TensorBoard every step
    config.eval_every_steps = int(args.get("eval", 1000))  # evaluation period
    config.num_eval_batches = 2  # evaluation batches per evaluation
    config.checkpoint_every_steps = int(args.get("ckpt", 5))  # checkpoint period
    config.keep_checkpoints = 3  # checkpoints kept on disk
    config.mesh_shape = tuple(int(s) for s in args.get("mesh", "-1.1.1").split("."))  # (data, fsdp, model)
    config.init_from = ""  # another run's checkpoint dir to take parameters from
    config.data = ml_collections.ConfigDict()
    config.data.global_batch_size = int(args.get("batch", 16))  # examples per step over all processes
    config.data.dim = 8  # input dimension
    config.data.nan_at_step = int(args.get("nan_at", -1))  # inject NaN inputs from this step on (-1: never)
    config.data.delay_seconds = float(args.get("delay", 0.0))  # sleep per batch (simulated slow input)
    config.data.startup_delay_seconds = float(args.get("startup_delay", 0.0))  # sleep opening the input
    config.model = ml_collections.ConfigDict({"hidden": int(args.get("hidden", 32))})  # MLP width
    config.optimizer = optimizer.default_config()
    config.optimizer.learning_rate = float(args.get("lr", 3e-3))
    config.optimizer.warmup_steps = 2
    return config
