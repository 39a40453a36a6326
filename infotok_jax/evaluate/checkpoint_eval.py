"""Evaluates a trained host checkpoint: understanding, oracle-scored generation and reconstruction.

`evaluate_checkpoint(config, task, workdir)` restores the model variables (parameters and model state,
no optimizer) of the latest checkpoint of a run, sharded over the current mesh so any device count
works, and runs `report.evaluate_splits` on `config.evaluation.splits`. Results and grids go to
`<workdir>/eval/step_<N>/`; the scalars are also appended to `<workdir>/eval/metrics.jsonl` and written as
TensorBoard events under `<workdir>/eval/tensorboard/` (a run of its own beside the trainer's
`tensorboard/`), so the evaluations of successive checkpoints read as curves.

Multi-process: every process reads the same full evaluation batches, every jitted function runs on
global arrays (batch rows sharded over the mesh's batch axes) and returns replicated outputs, so every
process scores identically in numpy; only process 0 writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from infotok_jax import distributed
from infotok_jax import sharding as sharding_lib
from infotok_jax.data import experiment_data, pipeline
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import report, run_checks
from infotok_jax.mllm import hosts
from infotok_jax.training import checkpointing, config_checks, reporting, train_state
from infotok_jax.training.task import Task


def restore_variables(
    task: Task, config: ml_collections.ConfigDict, workdir: epath.PathLike, mesh: Mesh
) -> tuple[dict[str, Any], int]:
    """(variables of the newest usable checkpoint sharded over `mesh`, its step); FileNotFoundError
    without one. Opens the checkpoints read-only; a damaged newest step is skipped with a warning."""
    checkpoints = epath.Path(workdir) / "checkpoints"
    try:  # read-only: creates nothing, never deletes a running training's in-progress save
        checkpointer = checkpointing.Checkpointer(checkpoints, keep=config.keep_checkpoints, read_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint under {checkpoints}; train first") from None
    abstract = train_state.abstract_variables(task, config, mesh)
    try:
        found = checkpointer.restore_newest_valid(lambda s: checkpointer.restore_variables(s, abstract))
    except checkpointing.NoUsableCheckpointError as e:  # the binary exits 2 on FileNotFoundError
        raise FileNotFoundError(str(e)) from None
    finally:
        checkpointer.close()
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {checkpoints}; train first")
    step, variables = found
    return variables, step


def on_global_batch(fn: Callable, name: str, mesh: Mesh, num_batch_args: int, **jit_kwargs) -> Callable:
    """Wraps `fn(variables, *batch_args, *rest)` to take host numpy batch arrays and return numpy.

    The first `num_batch_args` arguments after the variables (arrays with a leading batch axis, the same
    on every process) become global arrays sharded over the mesh's batch axes; the outputs are
    replicated, so every process receives all rows. Compilations end at a barrier named after `name`
    (see `distributed.CompiledTogether`).
    """
    static_argnums = jit_kwargs.get("static_argnums", ())
    jitted = distributed.CompiledTogether(
        jax.jit(fn, out_shardings=sharding_lib.replicated(mesh), **jit_kwargs), name, static_argnums
    )
    shards = sharding_lib.batch_axis_size(mesh)

    def to_global(x) -> jax.Array:
        x = np.asarray(x)
        if x.shape[0] % shards:
            raise ValueError(
                f"config.evaluation.batch_size: a batch of {x.shape[0]} does not split over the mesh's "
                f"{shards} batch shards; use a multiple of {shards}"
            )
        sharding = sharding_lib.batch_sharding(mesh, x.ndim)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def call(variables, *args):
        batch_args = [to_global(a) for a in args[:num_batch_args]]
        return jax.device_get(jitted(variables, *batch_args, *args[num_batch_args:]))

    return call


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    task: Task,
    workdir: epath.PathLike,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint in `workdir`; returns {"step", "results", "paths"}.

    "paths" is empty on processes other than 0 (they compute the same results but write nothing).
    """
    config_checks.check_training_config(config)  # the run's own checks: mesh shape, local data_dir, ...
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    run_checks.check_evaluation_config(config, mesh)
    run_checks.check_run(config, workdir)  # refuses another run's config before reading anything else
    workdir = epath.Path(workdir)
    variables, step = restore_variables(task, config, workdir, mesh)
    with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
        results = _evaluate(config, task, variables, mesh, max_batches)
    paths: dict[str, str] = {}
    if jax.process_index() == 0:
        out_dir = workdir / "eval" / f"step_{step:06d}"
        paths = report.write_report(str(out_dir), results, title=f"{config.host.kind} host, step {step}")
        paths.update(write_history(workdir / "eval", step, results))
    return {"step": step, "results": results, "paths": paths}


def write_history(eval_dir: epath.Path, step: int, results: dict[str, Any]) -> dict[str, str]:
    """Appends the scalar `results` at `step` to `eval_dir/metrics.jsonl` and its TensorBoard events
    (`eval_dir/tensorboard/`); returns their paths. Call on process 0 only."""
    writer = reporting.MetricWriter(eval_dir, enabled=True)
    try:
        writer.write_scalars(step, report.flatten_metrics(results))
    finally:
        writer.close()
    return {"history": str(eval_dir / "metrics.jsonl"), "tensorboard": str(eval_dir / "tensorboard")}


class TokenizeOnce:
    """`tokenize(variables, images)` run once per distinct batch of images: the generation ceiling, the
    reconstruction and the information plane each make their own pass over a split's batches, and all
    three read the tokenizer's output of the same images."""

    def __init__(self, tokenize: Callable):
        self._tokenize, self._outputs = tokenize, {}

    def __call__(self, variables, images) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(images)
        key = (images.shape, images.dtype.str, hashlib.blake2b(images.view(np.uint8)).digest())
        if key not in self._outputs:
            self._outputs[key] = self._tokenize(variables, images)
        return self._outputs[key]


SHIFT_SPLIT = "test"  # the split scored again at `config.evaluation.shift_nuisance`


def shift_column(nuisance: float) -> str:
    """The results column of the nuisance-shift evaluation: `test_nuisance1` for nuisance 1.0."""
    return f"{SHIFT_SPLIT}_nuisance{float(nuisance):g}"


def _evaluate(config, task, variables, mesh: Mesh, max_batches: int | None) -> dict[str, Any]:
    """Scores `config.evaluation.splits`; with `evaluation.shift_nuisance` set, also the test split of the
    same scenes rendered at that nuisance strength (the model trained at `data.nuisance`), as the column
    `shift_column(level)`: what a nuisance shift costs each task."""
    results = _evaluate_data(
        config, config.data, tuple(config.evaluation.splits), task, variables, mesh, max_batches
    )
    shift = config.evaluation.get("shift_nuisance")
    if shift is not None:
        shifted = ml_collections.ConfigDict(config.data.to_dict())
        shifted.nuisance = float(shift)
        column = _evaluate_data(config, shifted, (SHIFT_SPLIT,), task, variables, mesh, max_batches)
        results[shift_column(shift)] = column[SHIFT_SPLIT]
    return results


def _evaluate_data(
    config, data, splits, task, variables, mesh: Mesh, max_batches: int | None
) -> dict[str, Any]:
    model, ev = task.model, config.evaluation
    prepared = experiment_data.ensure_prepared(data)
    text_tokenizer = WordTokenizer.load(prepared.tokenizer_path)

    def make_batches(split: str):
        return pipeline.make_pipeline(  # every process reads every row: the scores are computed alike
            **experiment_data.pipeline_args(data, batch_size=ev.batch_size),
            split=split,
            mesh=None,
            seed=config.seed,
            shuffle=False,
            num_epochs=1,
            process_index=0,
            process_count=1,
        )

    answer = on_global_batch(
        lambda v, images, questions, length: hosts.answer(model, v, images, questions, length),
        "answer",
        mesh,
        num_batch_args=2,
        static_argnums=(3,),
    )
    generate = on_global_batch(
        lambda v, captions, key: hosts.generate(model, v, captions, key)["images"],
        "generate",
        mesh,
        num_batch_args=1,
    )

    def reconstruct_and_encode(v, images):
        out = model.apply(v, images, method=lambda m, x: m.tokenizer(x, train=False))
        return {"recon": out["recon"], "z": out["z"]}

    tokenize = TokenizeOnce(on_global_batch(reconstruct_and_encode, "tokenize", mesh, num_batch_args=1))
    return report.evaluate_splits(
        make_batches,
        splits,
        tokenizer=text_tokenizer,
        key=jax.random.key(ev.seed),
        image_size=data.image_size,
        answer_fn=lambda images, questions, length: answer(variables, images, questions, length),
        generate_fn=lambda captions, key: generate(variables, captions, key),
        reconstruct_fn=lambda images: tokenize(variables, images)["recon"],
        encode_fn=lambda images: tokenize(variables, images)["z"],  # the same batches: no second pass
        information_examples=ev.information_examples,
        max_batches=max_batches or ev.max_batches,
    )
