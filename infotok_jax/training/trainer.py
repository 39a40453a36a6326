"""The generic training loop: sharded state, one jitted step, checkpoints, evaluation and reports.

The binary builds the task and hands it in. Resume order (first that applies): the latest complete
checkpoint in `<workdir>/checkpoints`, then `config.init_from` (parameters only, from another run's
checkpoint directory), then scratch.

Every process runs every jitted computation (train step, evaluation, visualization) on global arrays;
only process 0 writes files. The workdir may be local or `gs://` (paths go through `etils.epath`).

Failure behaviour: a non-finite loss or gradient stops the run with the step range named and no further
checkpoint written; SIGTERM (or a multi-host preemption notice) saves the current step and returns
normally; an incompatible config never touches an existing workdir.
"""

from __future__ import annotations

import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from infotok_jax import distributed
from infotok_jax import sharding as sharding_lib
from infotok_jax.training import checkpointing, config_checks, plots, reporting, timing
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
    source = checkpointing.Checkpointer(epath.Path(init_from), keep=1, async_save=False)
    step = source.latest_step()
    if step is None:
        raise config_checks.ConfigError(f"config.init_from: no checkpoint found under {init_from}")
    restored, _, _ = source.restore(step, abstract_state)
    source.close()
    logging.info("Initialized parameters from %s step %d", init_from, step)
    return state.replace(params=restored.params)


class _Evaluator:
    """The task's evaluation metrics and pictures, jitted once with replicated outputs.

    Every process runs both functions on the same global batches; replicated outputs can be read on any
    process, and only process 0 writes the pictures.
    """

    def __init__(self, task: Task, mesh, config: ml_collections.ConfigDict):
        replicated = sharding_lib.replicated(mesh)
        self._task, self._config = task, config
        self._metrics_fn = distributed.CompiledTogether(
            jax.jit(task.eval_metrics, out_shardings=replicated), "eval_metrics"
        )
        self._visualize_fn = distributed.CompiledTogether(
            jax.jit(task.visualize, out_shardings=replicated), "visualize"
        )

    def __call__(self, state, mesh, step: int, workdir: epath.Path) -> dict[str, float]:
        sums: dict[str, float] = {}
        count = 0
        first_batch = None
        variables = state.variables()
        for i, batch in enumerate(self._task.eval_iterator(mesh)):
            if i >= self._config.num_eval_batches:
                break
            first_batch = batch if first_batch is None else first_batch
            metrics = jax.device_get(
                self._metrics_fn(variables, batch, jax.random.key(self._config.seed + i))
            )
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        if first_batch is not None:
            pictures = jax.device_get(self._visualize_fn(variables, first_batch))
            if jax.process_index() == 0:
                for name, rows in pictures.items():
                    plots.save_image_grid(workdir / "images" / f"{name}_step{step:06d}.png", rows)
        return {f"eval/{k}": v / max(count, 1) for k, v in sums.items()}


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    task: Task,
    workdir: epath.PathLike,
    *,
    compile_only: bool = False,
    started_at: float | None = None,
) -> dict[str, float]:
    """Trains `task` as configured by `config` in `workdir` (resuming if possible).

    Returns the final evaluation metrics. `started_at` (time.time() at process start) lets the start-up
    time in `timing.json` include what ran before this call.
    """
    config_checks.check_training_config(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    step_setup = train_state_lib.setup(task, config, mesh)
    config_checks.check_before_writing(config, workdir, mesh)  # every check before the first write
    if not compile_only and hasattr(task, "check_data_available"):  # --compile_only runs without data
        task.check_data_available()
    workdir = epath.Path(workdir)
    config_checks.check_workdir_writable(workdir)
    checkpointing.check_or_record_config(workdir, config)
    timer = timing.StageTimer(started_at)
    with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
        return _run(task, config, workdir, mesh, step_setup, timer, compile_only)


def _run(task, config, workdir, mesh, step_setup, timer, compile_only) -> dict[str, float]:
    """The body of `train_and_evaluate`, traced and run inside the logical sharding context."""
    abstract_state, abstract_batch = step_setup.abstract_state, step_setup.abstract_batch
    train_step = distributed.CompiledTogether(step_setup.train_step, "train_step")
    if compile_only:
        compiled = train_step.lower(abstract_state, abstract_batch).compile()
        memory = compiled.memory_analysis()
        print(f"Compiled the train step for mesh {dict(mesh.shape)}.\nmemory_analysis(): {memory}")
        return {}

    train_iter = task.train_iterator(mesh)  # before the checkpointer: a data error leaves no thread behind
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    latest = checkpointer.latest_step()
    if latest is not None:
        state, data_state, _ = checkpointer.restore(latest, abstract_state)
        train_iter.set_state(data_state)
        logging.info("Resumed from %s at step %d", workdir / "checkpoints", latest)
    else:
        state = train_state_lib.create_sharded_state(
            task, step_setup.tx, step_setup.state_shardings, jax.random.key(config.seed), abstract_batch
        )
        if config.get("init_from"):
            state = _restore_params_only(config.init_from, abstract_state, state)
    start_step = int(jax.device_get(state.step))

    evaluate = _Evaluator(task, mesh, config)
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
    timer.end_startup()
    train_start = time.perf_counter()
    try:
        for step in range(start_step, config.num_train_steps):
            batch = next(train_iter)
            if step == start_step:
                with timer.stage("compile_s"):
                    state, metrics = train_step(state, batch)
                    jax.block_until_ready(metrics)
                train_start = time.perf_counter()
            else:
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
                with timer.stage("checkpoint_s"):
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
                with timer.stage("eval_s"):
                    final_metrics = evaluate(state, mesh, completed, workdir)
                writer.write_scalars(completed, final_metrics)
        if pending is not None:
            record(*pending)
    finally:
        with timer.stage("checkpoint_s"):
            checkpointer.wait_until_finished()
            checkpointer.close()
        writer.close()
        sigterm.restore()
    elapsed = time.perf_counter() - train_start
    timer.seconds["train_s"] += max(elapsed - timer.seconds["eval_s"] - timer.seconds["checkpoint_s"], 0.0)

    if jax.process_index() == 0:
        timer.write(workdir)
        if int(jax.device_get(state.step)) == config.num_train_steps:
            _plot_information_plane(task, workdir)
    return final_metrics


def _plot_information_plane(task: Task, workdir: epath.Path) -> None:
    x_key, y_key = task.information_plane_keys()
    history = reporting.read_metrics(workdir)
    steps = [s for s in sorted(history) if x_key in history[s] and y_key in history[s]]
    if not steps:
        return
    curve = (steps, [history[s][x_key] for s in steps], [history[s][y_key] for s in steps])
    plots.save_information_plane(
        workdir / "images" / "information_plane.png", {workdir.name: curve}, x_label=x_key, y_label=y_key
    )
