"""The generic training loop: sharded state, one jitted step, checkpoints, evaluation and reports.

The binary builds the task and hands it in. Resume order (first that applies): the newest checkpoint in
`<workdir>/checkpoints` that verifies and restores (`Checkpointer.restore_newest_valid`), then
`config.init_from` (parameters only, from another run's checkpoint directory), then scratch.

Every process runs every jitted computation (train step, evaluation, visualization) on global arrays;
only process 0 writes files. The workdir may be local or `gs://` (paths go through `etils.epath`).

Failure behaviour: a non-finite loss or gradient, or a train state about to be saved that is non-finite
or diverged (`state_health`), stops the run with the step range named and no further
checkpoint written; SIGTERM or SIGINT (or a multi-host preemption notice) saves the current step and
returns normally; an incompatible config never touches an existing workdir, and a second run in a
locked workdir is refused (`workdir_lock`).
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
from infotok_jax.training import (
    checkpointing,
    config_checks,
    plots,
    reporting,
    run_log,
    timing,
    workdir_lock,
)
from infotok_jax.training import state_health as state_health_lib
from infotok_jax.training import train_state as train_state_lib
from infotok_jax.training.task import Task


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradient norm or the train state became NaN or Inf, or the parameters diverged."""


class _StopSignalFlag:
    """Records SIGTERM or SIGINT on single-process runs (multi-host runs use the jax preemption service,
    which listens to SIGTERM only). A second SIGINT interrupts at once (KeyboardInterrupt)."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.raised = False
        self._previous = {}
        if jax.process_count() == 1:
            self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        logging.warning("%s received: checkpointing at the current step and stopping.", name)
        self.raised = True
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def restore(self):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}


def _non_finite_message(what: str, first: int, last: int, last_checkpoint: int | None, directory) -> str:
    if last_checkpoint is None:
        good = f"there is no checkpoint yet in {directory}"
        advice = "and start again"
    else:
        good = f"the last good checkpoint is step {last_checkpoint} in {directory} and was not overwritten"
        advice = f"and run the same command again: it resumes from step {last_checkpoint}"
    return (
        f"{what} in the step range {first}..{last}; {good}. Lower --config.optimizer.learning_rate (it may "
        f"change on resume) {advice}; or lower the InfoTok weights (a new --workdir), or check the input "
        "data."
    )


def _restore_params_only(init_from: str, abstract_state, state):
    """Replaces the parameters of `state` with those of the latest checkpoint under `init_from`."""
    try:
        source = checkpointing.Checkpointer(epath.Path(init_from), keep=1, read_only=True)
    except FileNotFoundError:
        raise config_checks.ConfigError(f"config.init_from: {init_from} does not exist") from None
    try:
        found = source.restore_newest_valid(lambda s: source.restore(s, abstract_state)[0])
    finally:
        source.close()
    if found is None:
        raise config_checks.ConfigError(f"config.init_from: no checkpoint found under {init_from}")
    step, restored = found
    logging.info("Initialized parameters from %s step %d", init_from, step)
    return state.replace(params=restored.params)


class _Evaluator:
    """The task's evaluation metrics and pictures, jitted once with replicated outputs.

    Every process runs both functions on the same global batches; replicated outputs can be read on any
    process, and only process 0 writes the pictures.
    """

    def __init__(self, task: Task, mesh, config: ml_collections.ConfigDict, writer: reporting.MetricWriter):
        replicated = sharding_lib.replicated(mesh)
        self._task, self._config, self._writer = task, config, writer
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
                plots.publish_pictures(pictures, self._task, step, workdir, self._writer)
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
    with workdir_lock.WorkdirLock(workdir):
        checkpointing.check_or_record_config(workdir, config)
        timer = timing.StageTimer(started_at)
        with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
            return _run(task, config, workdir, mesh, step_setup, timer, compile_only)


def _run(task, config, workdir, mesh, step_setup, timer, compile_only) -> dict[str, float]:
    """The body of `train_and_evaluate`, traced and run inside the logical sharding context."""
    abstract_state, abstract_batch = step_setup.abstract_state, step_setup.abstract_batch
    train_step = step_setup.train_step
    if compile_only:
        compiled = train_step.lower().compile()
        memory = compiled.memory_analysis()
        print(f"Compiled the train step for mesh {dict(mesh.shape)}.\nmemory_analysis(): {memory}")
        return {}

    train_iter = task.train_iterator(mesh)  # before the checkpointer: a data error leaves no thread behind
    logging.info("Restoring or initializing the train state (the first start compiles the initializer)")
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    try:
        checkpointing.check_target_step(
            checkpointer.all_steps(), config.num_train_steps, checkpointer.directory
        )
        found = checkpointer.restore_newest_valid(lambda s: checkpointer.restore(s, abstract_state))
    except BaseException:
        checkpointer.close()  # its threads would outlive the error and fail again at interpreter exit
        raise
    latest = found[0] if found is not None else None
    if found is not None:
        state, data_state, _ = found[1]
        train_iter.set_state(data_state)
        logging.info("Resumed from %s at step %d", workdir / "checkpoints", latest)
    else:
        state = train_state_lib.create_sharded_state(
            task, step_setup.tx, step_setup.state_shardings, jax.random.key(config.seed), abstract_batch
        )
        if config.get("init_from"):
            state = _restore_params_only(config.init_from, abstract_state, state)
    start_step = int(jax.device_get(state.step))
    run_log.log_run_start(workdir, state.params, start_step, config.num_train_steps)

    writer = reporting.MetricWriter(workdir, config=config)
    evaluate = _Evaluator(task, mesh, config, writer)
    progress = run_log.ProgressReporter(config.num_train_steps, config.log_every_steps, timer)
    stop_signal = _StopSignalFlag()
    state_health = state_health_lib.make_state_check(mesh)
    start_l2_params = state_health(state).l2_params  # divergence is measured from here
    last_finite_step = start_step
    last_checkpoint = latest
    last_values: dict[str, float] = {}

    def record(step: int, metrics) -> None:
        nonlocal last_finite_step, last_values
        values = last_values = jax.device_get(metrics)
        if not (np.isfinite(values["loss"]) and np.isfinite(values["l2_grads"])):
            what = f"non-finite loss or gradient (loss={values['loss']}, l2_grads={values['l2_grads']})"
            raise NonFiniteLossError(
                _non_finite_message(
                    what, last_finite_step + 1, step, last_checkpoint, workdir / "checkpoints"
                )
            )
        last_finite_step = step
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            writer.write_scalars(step, {**values, **progress(step, values)})

    final_metrics: dict[str, float] = {}
    pending = None  # (step, metrics) of the step before: read while the next one runs
    timer.end_startup()
    train_start = time.perf_counter()
    try:
        for step in range(start_step, config.num_train_steps):
            batch = next(train_iter)
            if step == start_step:
                with progress.compiling(step):
                    state, metrics = train_step(state, batch, step_setup.seed)
                    jax.block_until_ready(metrics)
                train_start = time.perf_counter()
            else:
                state, metrics = train_step(state, batch, step_setup.seed)
            completed = step + 1
            preempted = stop_signal.raised or checkpointer.reached_preemption(completed)
            is_last = completed == config.num_train_steps
            should_checkpoint = completed % config.checkpoint_every_steps == 0 or is_last or preempted
            should_evaluate = (completed % config.eval_every_steps == 0 or is_last) and not preempted
            sync = should_checkpoint or should_evaluate  # both read the state: its metrics are checked first
            for lagged in (pending, (completed, metrics) if sync else None):
                if lagged is not None:
                    record(*lagged)
            pending = None if sync else (completed, metrics)
            if should_checkpoint:
                what = state_health(state).problem(start_l2_params)
                if what is not None:  # never saved, so the last checkpoint stays a good one
                    first = (start_step if last_checkpoint is None else last_checkpoint) + 1
                    directory = workdir / "checkpoints"
                    raise NonFiniteLossError(
                        _non_finite_message(what, first, completed, last_checkpoint, directory)
                    )
                with timer.stage("checkpoint_s"):
                    meta = {"step": completed, "time": time.time()}
                    checkpointer.save(completed, state, train_iter.get_state(), meta)
                last_checkpoint = completed
            if preempted:
                logging.warning("Stopped at step %d after saving a checkpoint (preemption).", completed)
                break
            if should_evaluate:
                with timer.stage("eval_s"):
                    final_metrics = evaluate(state, mesh, completed, workdir)
                writer.write_scalars(completed, final_metrics)
                progress.log_eval(completed, final_metrics)
    finally:
        with timer.stage("checkpoint_s"):
            _close_all(checkpointer.close, writer.close, stop_signal.restore)
    elapsed = time.perf_counter() - train_start
    timer.seconds["train_s"] += max(elapsed - timer.seconds["eval_s"] - timer.seconds["checkpoint_s"], 0.0)

    if jax.process_index() == 0:
        timer.write(workdir)
        last_step = int(jax.device_get(state.step))
        if last_step == config.num_train_steps:
            _plot_information_plane(task, workdir)
        summary = run_log.run_summary(
            workdir,
            first_step=start_step,
            last_step=last_step,
            num_train_steps=config.num_train_steps,
            seconds=timer.seconds,
            train_metrics=last_values,
            eval_metrics=final_metrics,
        )
        logging.info("%s", summary)
    return final_metrics


def _close_all(*closers) -> None:
    """Calls every closer even when one fails (a full disk fails them all); raises the first error."""
    errors = []
    for close in closers:
        try:
            close()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


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
