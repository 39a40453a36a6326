"""Atomic, resumable checkpoints with orbax, and the guard against resuming an incompatible config.

Each checkpoint step holds three items: the sharded train state, the data iterator position (JSON) and a
small metadata record. Orbax writes into `<step>.orbax-checkpoint-tmp` and renames on commit, so a crash
mid-save leaves the previous complete step as `latest_step()`; leftover tmp directories are removed when
the manager opens. Restores go through an abstract state carrying the *current* mesh's shardings, so a
checkpoint written on 8 devices restores onto 4.

The workdir may be local or gs:// (`infotok_jax.storage`): orbax gets a gs:// path as it is (tensorstore
writes the arrays, epath/gcsfs the small files) and on a bucket commits a step with a
`commit_success.txt` object instead of a rename; a local relative path is made absolute for it.

The experiment config is written to `<workdir>/config.json` on the first start. A later start with a
config that differs in anything but the fields in `RESUMABLE_FIELDS` is refused before anything is
written, so a workdir holding good checkpoints is never overwritten by an incompatible run.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from infotok_jax import storage

PyTree = Any

# Top-level config fields that may change between a run and its resumption.
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
    }
)

_ITEMS = ("state", "data", "meta")


class IncompatibleWorkdirError(ValueError):
    """The workdir holds checkpoints of a config that the current config cannot resume."""


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Canonical JSON of a config (tuples become lists)."""
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def incompatible_fields(saved: dict, current: dict) -> list[str]:
    """Config fields (dotted names) that differ and are not resumable."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    names = sorted(set(flat_saved) | set(flat_current))
    return [
        n
        for n in names
        if n.split(".")[0] not in RESUMABLE_FIELDS
        and flat_saved.get(n, "<missing>") != flat_current.get(n, "<missing>")
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


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with this project's three checkpoint items."""

    def __init__(self, directory: epath.PathLike, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        # orbax's tensorstore backend rejects relative paths; `--workdir=runs/x` must still work.
        directory = storage.as_path(directory)
        self._manager = ocp.CheckpointManager(directory, item_names=_ITEMS, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: PyTree, data_state: dict, meta: dict) -> None:
        """Starts an (async) save of `step`; returns once the device arrays are safe to donate."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

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

    def reached_preemption(self, step: int) -> bool:
        """True when the multi-host preemption sync point is reached (always False on one process)."""
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
