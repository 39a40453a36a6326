"""Fail-fast validation of the generic parts of an experiment config, before anything is written.

Task-specific fields (model, data, InfoTok) are validated by the task's constructor; `check_before_writing`
adds what needs the mesh or the filesystem (batch divisibility, `init_from`, the workdir flag), all of it
read-only, so a refused config leaves the workdir as it was (absent, or untouched). Every message names
the field and says what to change.
"""

from __future__ import annotations

import math
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from infotok_jax import sharding as sharding_lib
from infotok_jax import storage


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
    _require(
        math.isfinite(opt.learning_rate) and opt.learning_rate > 0,
        "optimizer.learning_rate",
        f"must be a finite number > 0, got {opt.learning_rate}",
    )
    _require(opt.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
    _require(opt.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    _require(opt.grad_clip_norm > 0, "optimizer.grad_clip_norm", "must be > 0")
    try:
        sharding_lib.fill_mesh_shape(config.mesh_shape, jax.device_count())
    except ValueError as e:
        raise ConfigError(f"config.mesh_shape: {e}") from None
    if config.get("data") is not None and "data_dir" in config.data:
        check_local_data_dir(config.data.data_dir)


def check_before_writing(config: ml_collections.ConfigDict, workdir: epath.PathLike, mesh) -> None:
    """Every generic check of a training run that needs the mesh or reads files; writes nothing.

    Run after the task was built (its constructor validates the task's own fields) and before the workdir
    is created or `config.json` recorded.
    """
    check_workdir_flag(workdir)
    data = config.get("data")
    if data is not None and data.get("eval_batch_size") is not None:
        check_batch_divisibility(int(data.eval_batch_size), mesh, "data.eval_batch_size")
    if config.get("init_from"):
        check_checkpoint_dir(config.init_from, "init_from")


def check_workdir_flag(workdir: epath.PathLike | None) -> None:
    """An empty --workdir would resolve to the current directory: refuse it."""
    if workdir is None or not str(workdir).strip():
        raise ConfigError(
            "--workdir is empty (it would mean the current directory); pass a directory, e.g. "
            "--workdir=/tmp/run or gs://bucket/run"
        )


def committed_steps(directory: epath.PathLike) -> list[int]:
    """Steps of complete orbax checkpoints under `directory`, read-only ([] when it does not exist)."""
    path = storage.as_path(directory)
    if not path.is_dir():
        return []
    return sorted(ocp.path.step.checkpoint_steps(path))


def check_checkpoint_dir(directory: str, field: str) -> None:
    """`directory` must hold at least one complete checkpoint (checked read-only, nothing created)."""
    if committed_steps(directory):
        return
    hint = ""
    if committed_steps(epath.Path(directory) / "checkpoints"):
        hint = f"; it is a run's workdir, so use {epath.Path(directory) / 'checkpoints'}"
    elif not epath.Path(directory).exists():
        hint = "; the directory does not exist"
    raise ConfigError(
        f"config.{field}: no complete checkpoint under {directory}{hint}. Give the checkpoints/ directory of "
        "a finished run, or leave it empty to start from scratch"
    )


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


def check_local_data_dir(data_dir: str, field: str = "data.data_dir") -> None:
    """A gs:// (or other URI) data dir is refused: array_record files are read by local path."""
    _require(
        not storage.is_remote(data_dir),
        field,
        f"{data_dir} is not a local path. Datasets are array_record files read with random access from a "
        "local (or mounted) directory: mount the bucket with gcsfuse (gcsfuse --implicit-dirs BUCKET "
        "/mnt/BUCKET) and set TFDS_DATA_DIR or config.data.data_dir to the mount point (docs/training.md, "
        "Storage)",
    )


def check_workdir_writable(workdir: epath.PathLike) -> None:
    """Creates the workdir if needed and proves it is writable, or raises ConfigError.

    A local path or gs://bucket/path (through etils.epath and gcsfs; nothing is created on local disk
    for a gs:// workdir).
    """
    check_workdir_flag(workdir)
    missing = storage.missing_remote_support(workdir)
    if missing:
        raise ConfigError(f"--workdir {workdir}: {missing}")
    path = epath.Path(workdir)
    probe = path / f".write_probe_{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--workdir {workdir} is not writable ({e.strerror or e}); choose another directory"
        ) from None
    except Exception as e:  # gcsfs / google-auth errors on a bucket (credentials, missing bucket)
        if not storage.is_remote(workdir):
            raise
        raise ConfigError(
            f"--workdir {workdir} is not writable ({type(e).__name__}: {e}); check that the bucket exists "
            "and that this machine's credentials may write to it (gcloud auth application-default login)"
        ) from None


def check_existing_dir_writable(directory: epath.PathLike, flag: str, why: str) -> None:
    """A local `directory` that exists must be writable (checked without writing: an evaluation must
    not create a workdir); a missing one, or a gs:// one, is left to the caller's own checks."""
    path = os.fspath(directory)
    if storage.is_remote(path) or not os.path.isdir(path):
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path} is not writable, and {why}; make it writable or copy the run")
