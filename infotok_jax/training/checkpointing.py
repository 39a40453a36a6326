"""Atomic, resumable checkpoints with orbax, and the guard against resuming an incompatible config.

Each checkpoint step holds three items: the sharded train state, the data iterator position (JSON) and a
small metadata record. Orbax writes into `<step>.orbax-checkpoint-tmp` and renames on commit, so a crash
mid-save leaves the previous complete step as `latest_step()`; leftover tmp directories are removed when
a writer opens the manager (never by a read-only reader, which could be deleting a live save). Each
step gets sha256 checksums (`checkpoint_integrity`), written into it before orbax commits it, so a
committed step without them was tampered with or interrupted; a restore tries the newest step that
verifies and restores, falling back step by step with a warning (a step without checksums is refused).
Restores go through an abstract state carrying the *current* mesh's shardings, so a checkpoint written
on 8 devices restores onto 4.

The workdir may be local or gs:// (`infotok_jax.storage`): orbax gets a gs:// path as it is (tensorstore
writes the arrays, epath/gcsfs the small files) and on a bucket commits a step with a
`commit_success.txt` object instead of a rename; a local relative path is made absolute for it.

The experiment config is written to `<workdir>/config.json` on the first start. A later start with a
config that differs in anything but the fields in `RESUMABLE_FIELDS` is refused before anything is
written, so a workdir holding good checkpoints is never overwritten by an incompatible run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from infotok_jax import distributed, storage
from infotok_jax.infotok import views
from infotok_jax.training import checkpoint_integrity, config_checks

PyTree = Any
T = TypeVar("T")

# Config fields (a top-level name covers its whole block) that may change between a run and its
# resumption: schedules of logging and saving, the layout over devices, where the dataset lives, and
# the peak learning rate (the optimizer state's structure does not depend on it), so that the advice
# after a NaN, "lower optimizer.learning_rate", can be followed in the same workdir.
RESUMABLE_FIELDS = frozenset(
    {
        "num_train_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "num_eval_batches",
        "mesh_shape",
        "logical_axis_rules",
        "evaluation",  # read by the evaluation binary only
        "data.data_dir",  # a moved TFDS_DATA_DIR holds the same dataset
        "optimizer.learning_rate",
        "host.lm.unroll_layers",  # how the layer scan is compiled, not what it computes
    }
)

_ITEMS = ("state", "data", "meta")


class IncompatibleWorkdirError(ValueError):
    """The workdir cannot be used by this run (the training binary exits with code 2 on it and its
    subclasses): it holds checkpoints of a config that the current config cannot resume."""


class NoUsableCheckpointError(IncompatibleWorkdirError):
    """Every checkpoint step of a directory failed verification or restoration."""


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """{dotted field name: value} of a nested config dict."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Canonical JSON of a config (tuples become lists)."""
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def _resumable(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in RESUMABLE_FIELDS for i in range(1, len(parts) + 1))


def _with_derived_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` with the fields a config may leave unset to be derived from the data filled in, so that a
    run recorded with the derived value explicitly (e.g. `infotok.x_view_size=8`, the default before it
    was derived) matches a config that leaves it unset."""
    side = flat.get("data.image_size")
    if "infotok.x_view_size" in flat and flat["infotok.x_view_size"] is None and isinstance(side, int):
        return {**flat, "infotok.x_view_size": views.derived_view_size(side, side)}
    return flat


def incompatible_fields(saved: dict, current: dict) -> list[str]:
    """Config fields (dotted names) that differ and are not resumable (derived defaults filled in)."""
    flat_saved = _with_derived_defaults(flatten_config(saved))
    flat_current = _with_derived_defaults(flatten_config(current))
    names = sorted(set(flat_saved) | set(flat_current))
    return [
        n
        for n in names
        if not _resumable(n) and flat_saved.get(n, "<missing>") != flat_current.get(n, "<missing>")
    ]


def check_or_record_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
    """Refuses a workdir whose recorded config is incompatible; records the config on first use.

    Only process 0 writes. Raises IncompatibleWorkdirError naming the differing fields.
    """
    path = epath.Path(workdir) / "config.json"
    current = json.loads(config_to_json(config))
    if path.exists():
        saved = json.loads(path.read_text())
        bad = incompatible_fields(saved, current)
        if bad:
            detail = ", ".join(f"{n}" for n in bad[:10])
            raise IncompatibleWorkdirError(
                f"workdir {workdir} holds a run of a different config (fields differ: {detail}). "
                "Use a new --workdir, or restore the original values of these fields to resume."
            )
    if jax.process_index() == 0:
        storage.write_text_atomic(path, config_to_json(config))


def check_target_step(steps: list[int], num_train_steps: int, directory: epath.PathLike) -> None:
    """Refuses a `num_train_steps` below the newest checkpoint: the run is already past it."""
    if steps and max(steps) > num_train_steps:
        raise config_checks.ConfigError(
            f"config.num_train_steps={num_train_steps} is below the newest checkpoint, step {max(steps)} in "
            f"{directory}: this run is already past it. Set --config.num_train_steps to at least "
            f"{max(steps)}, or use a new --workdir."
        )


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with this project's three checkpoint items.

    A writer (the trainer, holding the workdir lock) creates the directory, removes leftover temporary
    steps and writes a checksum file into each step after it commits. A reader (`read_only=True`: the
    evaluation binary, `init_from`) creates nothing, deletes nothing (another process's save in progress
    stays untouched) and raises FileNotFoundError for a missing directory.
    """

    def __init__(
        self, directory: epath.PathLike, keep: int, async_save: bool = True, read_only: bool = False
    ):
        # orbax's tensorstore backend rejects relative paths; `--workdir=runs/x` must still work.
        self.directory = storage.as_path(directory)
        self._read_only = read_only
        self._saving: int | None = None  # the step of the async save in flight
        if read_only:
            if not self.directory.is_dir():
                raise FileNotFoundError(f"no checkpoint directory {self.directory}")
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, cleanup_tmp_directories=False
            )
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=async_save,
                # hashes the finished files before orbax commits the step (process 0 only)
                async_options=ocp.AsyncOptions(post_finalization_callback=self._hash_before_commit)
                if async_save
                else None,
            )
        self._manager = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=options)
        self._unhashed: list[int] = []
        self._async = async_save and not read_only

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(self, step: int, state: PyTree, data_state: dict, meta: dict) -> None:
        """Starts an (async) save of `step`; returns once the device arrays are safe to donate.

        The previous save is finished first (orbax would wait for it anyway) and then checksummed.
        """
        if self._read_only:
            raise RuntimeError(f"{self.directory} was opened read-only")
        self.wait_until_finished()
        self._saving = step
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self._unhashed.append(step)
        if not self._async:  # no finalization callback: hash right after the (blocking) save
            self._write_pending_checksums()

    def _hash_before_commit(self) -> None:
        """Writes the checksum file into the finished, not yet committed step (orbax's finalization
        callback, on process 0): the step appears with its checksums, so no kill can leave it without."""
        step = self._saving
        try:
            uncommitted = [
                path
                for path in self.directory.iterdir()
                if path.name == str(step) or path.name.startswith(f"{step}.orbax-checkpoint-tmp")
            ]  # a temporary directory on disk; on a bucket the step itself, committed by a marker object
            for path in uncommitted:
                checkpoint_integrity.write_checksums(path)
        except Exception as e:  # the save itself must not fail; the step is then refused on restore
            logging.warning("Could not write checksums of checkpoint step %s: %r", step, e)

    def _write_pending_checksums(self) -> None:
        """Checksums of steps saved without the finalization callback (synchronous saves)."""
        steps, self._unhashed = self._unhashed, []
        if jax.process_index() != 0:
            return
        for step in steps:
            step_dir = self.step_dir(step)
            if not step_dir.exists() or checkpoint_integrity.has_checksums(step_dir):
                continue  # rotated out by max_to_keep, or hashed before its commit
            try:
                checkpoint_integrity.write_checksums(step_dir)
            except Exception as e:  # the step stays, but a restore refuses it (no checksums)
                logging.warning("Could not write checksums of checkpoint step %d: %r", step, e)

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict, dict]:
        """Restores `step` into the layout of `abstract_state` (ShapeDtypeStructs with shardings)."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def restore_variables(self, step: int, abstract_variables: dict[str, PyTree]) -> dict[str, PyTree]:
        """Restores only the model variables of `step` ({"params", mutable collections}): no optimizer
        state is read, so an evaluator needs neither the optimizer nor the train step."""
        target = {
            "params": abstract_variables["params"],
            "mutable": {k: v for k, v in abstract_variables.items() if k != "params"},
        }
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                )
            ),
        )["state"]
        return {"params": restored["params"], **restored["mutable"]}

    def restore_newest_valid(self, restore: Callable[[int], T]) -> tuple[int, T] | None:
        """(step, restore(step)) for the newest step that verifies and restores; None without steps.

        Older steps are tried in turn, each unusable one named in a warning with the reason; a step
        without a checksum file is unusable (`_unverifiable`). A writer moves the unusable steps newer
        than the one used to `<workdir>/corrupt_checkpoints/` (kept for inspection, and so that the run
        can save those steps again). Raises NoUsableCheckpointError when no step is usable.
        """
        failures: list[tuple[int, str]] = []
        for i, step in enumerate(sorted(self.all_steps(), reverse=True)):
            problem = checkpoint_integrity.verify(self.step_dir(step))
            if problem == checkpoint_integrity.NO_CHECKSUMS:
                problem = _unverifiable(step, newest=i == 0)
            if problem is None:
                try:
                    result = restore(step)
                except Exception as e:  # orbax/tensorstore raise many types for damaged files
                    first_line = (str(e).splitlines() or [""])[0][:300]
                    problem = f"restore failed: {type(e).__name__}: {first_line}"
            if problem is None:
                if failures:
                    bad = ", ".join(str(s) for s, _ in failures)
                    logging.warning(
                        "Using checkpoint step %d in %s instead of unusable step(s) %s.",
                        step,
                        self.directory,
                        bad,
                    )
                    if not self._read_only:
                        self._quarantine([s for s, _ in failures])
                return step, result
            logging.warning(
                "Checkpoint step %d in %s is unusable (%s); trying the next older step.",
                step,
                self.directory,
                problem,
            )
            failures.append((step, problem))
        if not failures:
            return None
        detail = "; ".join(f"step {s}: {p}" for s, p in failures)
        unhashed = [s for s, p in failures if checkpoint_integrity.NO_CHECKSUMS in p]
        trust = (
            " A step without a checksum file that you trust can be vouched for with python -m "
            f"infotok_jax.training.checkpoint_integrity {self.step_dir(unhashed[0])}."
            if unhashed
            else ""
        )
        raise NoUsableCheckpointError(
            f"no usable checkpoint in {self.directory} ({detail}). Move the directory aside (or use a new "
            f"--workdir) to start from scratch, or restore the files from a backup.{trust}"
        )

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unusable steps out of the checkpoint directory (process 0), then rereads the step list."""
        if jax.process_index() == 0:
            target_dir = self.directory.parent / "corrupt_checkpoints"
            for step in steps:
                target = target_dir / f"{step}_{int(time.time())}"
                storage.move_tree(self.step_dir(step), target)  # a bucket has no folder to rename into
                logging.warning("Moved unusable checkpoint step %d to %s.", step, target)
        distributed.barrier("quarantined unusable checkpoints")
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """True when the multi-host preemption sync point is reached (always False on one process)."""
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        """Waits for the save in flight, then checksums every step committed since the last call."""
        self._manager.wait_until_finished()
        self._write_pending_checksums()

    def close(self) -> None:
        """Finishes the save in flight and stops orbax's threads, also when that save failed (a full
        disk): left running, they print tracebacks at interpreter exit."""
        try:
            self.wait_until_finished()
        finally:
            self._manager.close()


def _unverifiable(step: int, newest: bool) -> str:
    """Why a step without a checksum file is not restored (its files could hold anything)."""
    if newest:
        return (
            f"{checkpoint_integrity.NO_CHECKSUMS}: its files cannot be verified (a save interrupted "
            "before its hashing, or a deleted file), so it is not restored"
        )
    return (
        f"{checkpoint_integrity.NO_CHECKSUMS}, though it was hashed before any newer step was saved: "
        "the file was deleted, an error"
    )
