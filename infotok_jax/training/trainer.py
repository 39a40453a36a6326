"""The generic training loop: sharded state, one jitted step, checkpoints, evaluation and reports.

Resume order (first that applies): the latest complete checkpoint in `<workdir>/checkpoints`, then
`config.init_from` (parameters only, from another run's checkpoint directory), then scratch.

Failure behaviour: a non-finite loss or gradient stops the run with the step range named and no further
checkpoint written; SIGTERM (or a multi-host preemption notice) saves the current step and returns
normally; an incompatible config never touches an existing workdir.
"""

from __future__ import annotations

import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from infotok_jax import sharding as sharding_lib
from infotok_jax.training import checkpointing, config_checks, plots, reporting
from infotok_jax.training import train_state as train_state_lib
from infotok_jax.training.task import Task


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN or Inf."""


class _SigtermFlag:
    """Records SIGTERM on single-process runs (multi-host runs use the jax preemption service)."""

    def __init__(self):
        self.raised = False
        self._previous = None
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: checkpointing at the current step and stopping.")
        self.raised = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _restore_params_only(init_from: str, abstract_state, state):
    """Replaces the parameters of `state` with those of the latest checkpoint under `init_from`."""
    source = checkpointing.Checkpointer(pathlib.Path(init_from), keep=1, async_save=False)
    step = source.latest_step()
    if step is None:
        raise config_checks.ConfigError(f"config.init_from: no checkpoint found under {init_from}")
    restored, _, _ = source.restore(step, abstract_state)
    source.close()
    logging.info("Initialized parameters from %s step %d", init_from, step)
    return state.replace(params=restored.params)


def _evaluate(task: Task, state, mesh, num_batches: int, seed: int) -> tuple[dict[str, float], Any]:
    sums: dict[str, float] = {}
    count = 0
    first_batch = None
    eval_fn = jax.jit(task.eval_metrics)
    for i, batch in enumerate(task.eval_iterator(mesh)):
        if i >= num_batches:
            break
        first_batch = batch if first_batch is None else first_batch
        metrics = jax.device_get(eval_fn(state.variables(), batch, jax.random.key(seed + i)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
    return {f"eval/{k}": v / max(count, 1) for k, v in sums.items()}, first_batch


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, compile_only: bool = False
) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if possible); returns the final evaluation metrics."""
    from infotok_jax import tasks  # tasks import models; keep the loop importable on its own

    workdir = pathlib.Path(workdir)
    config_checks.check_training_config(config)
    task = tasks.build_task(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    abstract_batch = task.abstract_batch()
    config_checks.check_batch_divisibility(next(iter(abstract_batch.values())).shape[0], mesh)
    config_checks.check_workdir_writable(workdir)
    checkpointing.check_or_record_config(workdir, config)

    init_rng = jax.random.key(config.seed)
    step_setup = train_state_lib.setup(task, config, mesh)
    with sharding_lib.logical_sharding(mesh):
        return _run(task, config, workdir, mesh, step_setup, init_rng, compile_only)


def _run(task, config, workdir, mesh, step_setup, init_rng, compile_only) -> dict[str, float]:
    """The body of `train_and_evaluate`, traced and run inside the logical sharding context."""
    abstract_state, abstract_batch = step_setup.abstract_state, step_setup.abstract_batch
    train_step = step_setup.train_step
    if compile_only:
        compiled = train_step.lower(abstract_state, abstract_batch).compile()
        memory = compiled.memory_analysis()
        print(f"Compiled the train step for mesh {dict(mesh.shape)}.\nmemory_analysis(): {memory}")
        return {}

    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    train_iter = task.train_iterator(mesh)
    latest = checkpointer.latest_step()
    if latest is not None:
        state, data_state, _ = checkpointer.restore(latest, abstract_state)
        train_iter.set_state(data_state)
        logging.info("Resumed from %s at step %d", workdir / "checkpoints", latest)
    else:
        state = train_state_lib.create_sharded_state(
            task, step_setup.tx, step_setup.state_shardings, init_rng, abstract_batch
        )
        if config.get("init_from"):
            state = _restore_params_only(config.init_from, abstract_state, state)
    start_step = int(jax.device_get(state.step))

    writer = reporting.MetricWriter(workdir)
    progress = reporting.ProgressReporter(config.num_train_steps, config.log_every_steps)
    sigterm = _SigtermFlag()
    last_finite_step = start_step
    last_checkpoint = latest

    def record(step: int, metrics) -> None:
        nonlocal last_finite_step
        values = jax.device_get(metrics)
        if not (np.isfinite(values["loss"]) and np.isfinite(values["l2_grads"])):
            raise NonFiniteLossError(
                f"non-finite loss or gradient (loss={values['loss']}, l2_grads={values['l2_grads']}) in the "
                f"step range {last_finite_step + 1}..{step}; the last good checkpoint is step "
                f"{last_checkpoint} in {workdir / 'checkpoints'} and was not overwritten. Lower "
                "optimizer.learning_rate or the InfoTok weights, or check the input data."
            )
        last_finite_step = step
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            writer.write_scalars(step, {**values, **progress(step)})

    final_metrics: dict[str, float] = {}
    pending = None
    try:
        for step in range(start_step, config.num_train_steps):
            batch = next(train_iter)
            state, metrics = train_step(state, batch)
            if pending is not None:
                record(*pending)
            pending = (step + 1, metrics)
            completed = step + 1
            preempted = sigterm.raised or checkpointer.reached_preemption(completed)
            is_last = completed == config.num_train_steps
            if completed % config.checkpoint_every_steps == 0 or is_last or preempted:
                record(*pending)
                pending = None
                meta = {"step": completed, "time": time.time()}
                checkpointer.save(completed, state, train_iter.get_state(), meta)
                last_checkpoint = completed
            if preempted:
                logging.warning("Stopped at step %d after saving a checkpoint (preemption).", completed)
                break
            if completed % config.eval_every_steps == 0 or is_last:
                if pending is not None:
                    record(*pending)
                    pending = None
                eval_metrics, eval_batch = _evaluate(task, state, mesh, config.num_eval_batches, config.seed)
                writer.write_scalars(completed, eval_metrics)
                final_metrics = eval_metrics
                if eval_batch is not None and jax.process_index() == 0:
                    for name, rows in jax.device_get(task.visualize(state.variables(), eval_batch)).items():
                        plots.save_image_grid(workdir / "images" / f"{name}_step{completed:06d}.png", rows)
        if pending is not None:
            record(*pending)
    finally:
        checkpointer.wait_until_finished()
        checkpointer.close()
        writer.close()
        sigterm.restore()

    if jax.process_index() == 0 and int(jax.device_get(state.step)) == config.num_train_steps:
        _plot_information_plane(task, workdir)
    return final_metrics


def _plot_information_plane(task: Task, workdir: pathlib.Path) -> None:
    x_key, y_key = task.information_plane_keys()
    history = reporting.read_metrics(workdir)
    steps = [s for s in sorted(history) if x_key in history[s] and y_key in history[s]]
    if not steps:
        return
    curve = (steps, [history[s][x_key] for s in steps], [history[s][y_key] for s in steps])
    plots.save_information_plane(
        workdir / "images" / "information_plane.png", {workdir.name: curve}, x_label=x_key, y_label=y_key
    )
