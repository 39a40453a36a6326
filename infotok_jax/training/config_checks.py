"""Fail-fast validation of the generic parts of an experiment config, before anything is written.

Task-specific fields are validated by the task's constructor. Every message names the field and says
what to change.
"""

from __future__ import annotations

import os
import pathlib

import jax
import ml_collections

from infotok_jax import sharding as sharding_lib


class ConfigError(ValueError):
    """An experiment config field has a value the run cannot use."""


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{field}: {message}")


def check_training_config(config: ml_collections.ConfigDict) -> None:
    """Checks step counts, frequencies, optimizer values and the mesh shape."""
    _require(int(config.num_train_steps) > 0, "num_train_steps", f"must be > 0, got {config.num_train_steps}")
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _require(int(config[field]) > 0, field, f"must be > 0, got {config[field]}")
    _require(int(config.num_eval_batches) >= 0, "num_eval_batches", "must be >= 0")
    opt = config.optimizer
    _require(opt.learning_rate > 0, "optimizer.learning_rate", f"must be > 0, got {opt.learning_rate}")
    _require(opt.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
    _require(opt.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    _require(opt.grad_clip_norm > 0, "optimizer.grad_clip_norm", "must be > 0")
    try:
        sharding_lib.fill_mesh_shape(config.mesh_shape, jax.device_count())
    except ValueError as e:
        raise ConfigError(f"config.mesh_shape: {e}") from None


def check_batch_divisibility(global_batch_size: int, mesh, field: str = "data.global_batch_size") -> None:
    """The global batch must split evenly over processes and over the mesh's batch axes."""
    shards = sharding_lib.batch_axis_size(mesh)
    _require(global_batch_size > 0, field, f"must be > 0, got {global_batch_size}")
    _require(
        global_batch_size % shards == 0,
        field,
        f"{global_batch_size} is not divisible by the batch axes of the mesh (data x fsdp = {shards}); "
        f"use a multiple of {shards} or change config.mesh_shape",
    )
    _require(
        global_batch_size % jax.process_count() == 0,
        field,
        f"{global_batch_size} is not divisible by the process count {jax.process_count()}",
    )


def check_workdir_writable(workdir: pathlib.Path) -> None:
    """Creates the workdir if needed and proves it is writable, or raises ConfigError."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_probe_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--workdir {workdir} is not writable ({e.strerror}); choose another directory"
        ) from None
