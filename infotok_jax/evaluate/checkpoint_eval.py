"""Evaluates a trained host checkpoint: understanding, oracle-scored generation and reconstruction.

`evaluate_checkpoint(config, workdir)` restores the latest checkpoint of a run of `config` (through the
same abstract, sharded state as training, so any device count works), binds the host's jitted inference
functions to it and runs `report.evaluate_splits` on `config.evaluation.splits`. Results and grids go to
`<workdir>/eval/step_<N>/`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections

from infotok_jax import sharding as sharding_lib
from infotok_jax import tasks
from infotok_jax.data import experiment_data
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import report
from infotok_jax.mllm import hosts
from infotok_jax.training import checkpointing, train_state


def restore_variables(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> tuple[Any, dict, int]:
    """(task, variables of the latest checkpoint, its step); raises FileNotFoundError without one."""
    task = tasks.build_task(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    step_setup = train_state.setup(task, config, mesh)
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}; train first")
    state, _, _ = checkpointer.restore(step, step_setup.abstract_state)
    checkpointer.close()
    return task, state.variables(), step


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path, max_batches: int | None = None
) -> dict[str, Any]:
    """Evaluates the latest checkpoint in `workdir`; returns {"step", "results", "paths"}."""
    workdir = pathlib.Path(workdir)
    if config.task != "host":
        raise ValueError(f"config.task={config.task!r}: the evaluation binary scores MLLM hosts ('host')")
    task, variables, step = restore_variables(config, workdir)
    model, data, ev = task.model, config.data, config.evaluation
    prepared = experiment_data.ensure_prepared(data)
    text_tokenizer = WordTokenizer.load(prepared.tokenizer_path)

    def make_batches(split: str):
        return experiment_data.make_pipeline(
            data,
            split=split,
            mesh=None,
            seed=config.seed,
            shuffle=False,
            num_epochs=1,
            batch_size=ev.batch_size,
        )

    answer = jax.jit(
        lambda v, q_images, questions, length: hosts.answer(model, v, q_images, questions, length),
        static_argnums=(3,),
    )
    generate = jax.jit(lambda v, c, k: hosts.generate(model, v, c, k)["images"])
    reconstruct = jax.jit(
        lambda v, images: model.apply(v, images, method=lambda m, x: m.tokenizer(x, train=False))["recon"]
    )
    results = report.evaluate_splits(
        make_batches,
        tuple(ev.splits),
        tokenizer=text_tokenizer,
        key=jax.random.key(ev.seed),
        image_size=data.image_size,
        answer_fn=lambda images, questions, length: answer(variables, images, questions, length),
        generate_fn=lambda captions, key: generate(variables, captions, key),
        reconstruct_fn=lambda images: reconstruct(variables, images),
        max_batches=max_batches or ev.max_batches,
    )
    out_dir = workdir / "eval" / f"step_{step:06d}"
    paths = report.write_report(str(out_dir), results, title=f"{config.host.kind} host, step {step}")
    return {"step": step, "results": results, "paths": paths}
