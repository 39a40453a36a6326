"""What the evaluation binary checks before it reads a checkpoint: that the config is the run's.

A run records its config in `<workdir>/config.json`. Evaluating with a config that differs in a field
that shapes the model or the data would score the checkpoint on another dataset (a different
`data.nuisance`) or fail deep inside a restore (another width or host), and would overwrite that step's
report; such a config is refused naming the fields. What may differ is what the evaluation does not
read from the run: the training-loop knobs the trainer may change on resume
(`checkpointing.RESUMABLE_FIELDS`, which include `evaluation.*` and the mesh), the optimizer,
`init_from`, the host's sampling knobs and the data fields that only size or place the input (batch
sizes, threads, `data_dir`). All checks only read files: nothing is created in the workdir.
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from infotok_jax.data import registry
from infotok_jax.training import checkpointing, config_checks

# Fields (dotted names or prefixes) that may differ between the run and its evaluation, on top of
# checkpointing.RESUMABLE_FIELDS.
EVALUATION_MAY_DIFFER = (
    "optimizer",
    "init_from",
    "host.sampling",  # decoding knobs: they change the samples scored, not the model
    "data.global_batch_size",
    "data.eval_batch_size",
    "data.num_threads",
    "data.data_dir",
)


def _may_differ(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in EVALUATION_MAY_DIFFER)


def differing_fields(saved: dict, current: dict) -> list[str]:
    """Dotted config fields that differ between the run's config and the evaluation's and matter."""
    return [n for n in checkpointing.incompatible_fields(saved, current) if not _may_differ(n)]


def check_run(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
    """Refuses (ConfigError) a workdir without a recorded config or a checkpoint, or another config."""
    config_checks.check_workdir_flag(workdir)
    workdir = epath.Path(workdir)
    recorded = workdir / "config.json"
    if not recorded.exists():
        raise config_checks.ConfigError(
            f"--workdir {workdir} holds no config.json, so it is not a training run's workdir; give the "
            "--workdir the training binary wrote"
        )
    if not config_checks.committed_steps(workdir / "checkpoints"):
        raise config_checks.ConfigError(
            f"--workdir {workdir} holds no complete checkpoint under checkpoints/; train first (or let the "
            "run reach its first checkpoint_every_steps)"
        )
    saved = json.loads(recorded.read_text())
    current = json.loads(checkpointing.config_to_json(config))
    bad = differing_fields(saved, current)
    if bad:
        run, given = checkpointing.flatten_config(saved), checkpointing.flatten_config(current)
        detail = ", ".join(
            f"{n} (run: {run.get(n, '<missing>')!r}, given: {given.get(n, '<missing>')!r})" for n in bad[:8]
        )
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise config_checks.ConfigError(
            f"the config differs from the run's {recorded} in fields that change the model or the data: "
            f"{detail}{more}. Evaluate with the run's config (the same --config arguments and overrides "
            "as its training); only evaluation.*, host.sampling.*, the mesh and batch sizes may differ"
        )


def check_evaluation_config(config: ml_collections.ConfigDict, mesh) -> None:
    """The `config.evaluation` block: splits of the dataset, batch size that splits over the mesh."""
    ev = config.evaluation
    if config.task != "host":
        raise config_checks.ConfigError(
            f"config.task={config.task!r}: the evaluation binary scores MLLM hosts; use a host config "
            "(experiments/configs/host.py or base.py)"
        )
    config_checks.check_batch_divisibility(int(ev.batch_size), mesh, "evaluation.batch_size")
    if int(ev.max_batches) < 1:
        raise config_checks.ConfigError(f"config.evaluation.max_batches: must be >= 1, got {ev.max_batches}")
    if not registry.is_external_tfds(config.data.name):
        splits = registry.get_spec(config.data.name).splits
        unknown = [s for s in ev.splits if s not in splits]
        if unknown or not ev.splits:
            raise config_checks.ConfigError(
                f"config.evaluation.splits: {tuple(ev.splits)} must be a non-empty subset of "
                f"{config.data.name}'s splits {splits}"
            )
    shift = ev.get("shift_nuisance")
    if shift is not None:
        if not config.data.name.startswith("scenes") or not 0.0 <= float(shift) <= 1.0:
            raise config_checks.ConfigError(
                f"config.evaluation.shift_nuisance={shift}: the nuisance shift needs a scenes dataset and a "
                "strength in [0, 1]; leave it unset for other data"
            )
