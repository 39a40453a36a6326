"""Runs the study's missing runs through submitit: one job per run, one job array per submission.

`--engine=local` uses submitit's LocalExecutor (jobs are processes on this machine, at most `parallel`
at once, by default one per core, each pinned to its own cores: `cpu_slots`); `--engine=slurm` its
SlurmExecutor (one `sbatch --array` per slice, the scheduler running at most `parallel` of its tasks at
once; by default no limit but the cluster's). Each job is `runner.run_one`: train, then evaluate, then
write the run's result file, exactly the subprocesses of a serial session, so results do not depend on
the engine. The driver (`job_driver.Driver`, in the process of `run_study.py`) waits, prints progress
(done / failed / running counts and an ETA), commits each result file as it lands (the driver is the
only git writer) and resubmits failed jobs.

Retries are explicit resubmissions by the driver, not submitit's `Checkpointable` requeue: a job can
end early by preemption, a time limit, `scancel`, a node failure or a killed process, and only the
first two reach a `Checkpointable` (through SLURM's signal and `scontrol requeue`, which clusters may
forbid), while every one of them leaves the job ended without a result, which the driver sees on either
executor. The training binary saves a checkpoint on SIGTERM (what SLURM sends on preemption, time-out
and `scancel`) and every `checkpoint_every_steps`, and resumes from its workdir, so a resubmitted run
continues from its last checkpoint. A failure is retried up to `retries` times (an overtrained workdir
never: it would fail again).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from infotok_jax.study import job_driver, runner
from infotok_jax.study import results as results_lib
from infotok_jax.study.protocol import Run

ENGINES = ("local", "slurm")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Where and how the study's jobs run (the flags of `run_study.py`, see `add_flags`)."""

    engine: str = "local"
    parallel: int | None = None  # jobs at once; None: one per core locally, no limit on SLURM (its throttle)
    retries: int = 2  # resubmissions of a failed run
    folder: pathlib.Path | None = None  # submitit's job files and logs (default <root>/submitit)
    timeout_min: int = 24 * 60  # a job's time limit
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    slurm_partition: str | None = None
    slurm_extra: tuple[tuple[str, str], ...] = ()  # more `#SBATCH --key=value` lines
    poll_s: float = 1.0  # seconds between looks at the jobs

    def slots(self, jobs: int) -> int:
        """How many of `jobs` run at once."""
        default = len(os.sched_getaffinity(0)) if self.engine == "local" else jobs
        return max(1, min(jobs, self.parallel or default))

    def cpus_per_job(self, jobs: int) -> int:
        """The cores each of `jobs` runs on: a local slot's share (`cpu_slots`), or `cpus_per_task`."""
        if self.engine != "local":
            return self.cpus_per_task
        return max(1, len(os.sched_getaffinity(0)) // self.slots(jobs))


def add_flags(parser: Any) -> None:
    """The engine's flags on `run_study.py`'s argparse parser."""
    add = parser.add_argument
    add("--engine", default="local", choices=ENGINES, help="Where jobs run: this machine, or SLURM.")
    add(
        "--parallel",
        type=int,
        default=None,
        help="Jobs at once (default: one per core locally, each pinned to its core; on SLURM, no limit "
        "but the scheduler's).",
    )
    add("--retries", type=int, default=2, help="Resubmissions of a failed or preempted run (resumes it).")
    add(
        "--submitit_dir",
        type=pathlib.Path,
        default=None,
        help="Job files and logs (default <root>/submitit).",
    )
    add("--timeout_min", type=int, default=24 * 60, help="A job's time limit in minutes.")
    add("--cpus_per_task", type=int, default=2, help="CPUs per job (SLURM).")
    add("--gpus_per_node", type=int, default=0, help="GPUs per job (SLURM).")
    add("--slurm_partition", default=None, help="SLURM partition (default: the cluster's default).")
    add(
        "--slurm_extra",
        default="",
        help="More sbatch options as key=value,... (e.g. account=me,qos=low,mem=16G).",
    )


def options_from_flags(args: Any) -> EngineOptions:
    """EngineOptions from parsed flags; ValueError naming the fix for a malformed --slurm_extra."""
    extra = []
    for item in (part.strip() for part in args.slurm_extra.split(",")):
        if item:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--slurm_extra item {item!r} is not key=value (e.g. --slurm_extra=qos=low)")
            extra.append((key.strip().lstrip("-"), value.strip()))
    if (args.parallel is not None and args.parallel < 0) or args.retries < 0:
        raise ValueError("--parallel and --retries take a count >= 0")
    return EngineOptions(
        engine=args.engine,
        parallel=args.parallel,
        retries=args.retries,
        folder=args.submitit_dir,
        timeout_min=args.timeout_min,
        cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_node,
        slurm_partition=args.slurm_partition,
        slurm_extra=tuple(extra),
    )


def make_executor(options: EngineOptions, folder: pathlib.Path, slots: int) -> Any:
    """submitit's executor for `options`, its files under `folder`."""
    import submitit

    if options.engine == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.timeout_min)
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    parameters: dict[str, Any] = {
        "time": options.timeout_min,
        "cpus_per_task": options.cpus_per_task,
        "array_parallelism": slots,
        "job_name": "infotok_study",
        "additional_parameters": dict(options.slurm_extra),
    }
    if options.gpus_per_node:
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.slurm_partition:
        parameters["partition"] = options.slurm_partition
    executor.update_parameters(**parameters)
    return executor


def fit_deadline(
    runs: Sequence[Run],
    *,
    slots: int,
    deadline: float | None,
    expected_seconds: Callable[[Run], float | None] | None,
    now: float,
) -> tuple[list[Run], list[Run]]:
    """(runs to submit, runs deferred): each run starts on the first free of `slots` in plan order and
    takes `expected_seconds(run)` (None: 0); from the first run that would end after `deadline` on,
    every run is deferred, so the runs done keep the plan's order."""
    if deadline is None:
        return list(runs), []
    free_at = [now] * slots
    for i, run in enumerate(runs):
        start = min(free_at)
        end = start + ((expected_seconds(run) if expected_seconds else None) or 0.0)
        if end > deadline or now > deadline:
            return list(runs[:i]), list(runs[i:])
        free_at[free_at.index(start)] = end
    return list(runs), []


def execute(
    runs: Sequence[Run],
    root: pathlib.Path,
    *,
    study: str,
    results_dir: pathlib.Path = results_lib.RESULTS_DIR,
    options: EngineOptions = EngineOptions(),  # noqa: B008 (frozen)
    dry_run: bool = False,
    deadline: float | None = None,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
    commit: bool = False,
    expected_seconds: Callable[[Run], float | None] | None = None,
) -> dict[str, str]:
    """Submits every run without a result file, once per name (an aliased variant, one program serving
    two rows of the plan, is submitted once), waits for them; returns {run name: outcome}.

    Outcomes: "skipped" (result file exists), "done", "failed: ..." (after `options.retries`
    resubmissions), "planned" under `dry_run` (commands printed, nothing submitted or written), or
    "deferred" for runs not submitted because, by `expected_seconds(run)` on `options.slots` parallel
    slots, they would end after `deadline` (`time.monotonic()` seconds); a retry is only submitted if it
    should end before `deadline` too. A submitted run is never cut. With `commit`, each new result file
    is committed on its own as it lands ("Study: <study>/<run name>"); a failed commit is reported and
    the study goes on. Logs: `<workdir>/train.log`, `<workdir>/eval.log`, and submitit's under
    `options.folder`. Raises ResultMismatchError when a result file of a run's name was made with another
    config.
    """
    root = pathlib.Path(root)
    outcomes: dict[str, str] = {}
    missing: list[Run] = []
    position = {run.name: f"[{i}/{len(runs)}] {run.name}" for i, run in enumerate(runs, 1)}
    first_of_name: dict[str, Run] = {}
    for run in runs:
        first_of_name.setdefault(run.name, run)
    for run in first_of_name.values():
        result_file = results_lib.result_path(results_dir, study, run)
        if result_file.exists():
            results_lib.load_result(result_file, run)  # raises on a config mismatch
            outcomes[run.name] = "skipped"
            say(f"{position[run.name]}: SKIP (result {result_file.name} exists)")
        elif dry_run:
            train, evaluate = run.train_command(root, python), run.eval_command(root, python)
            say(f"{position[run.name]}\n  {shlex.join(train)}\n  {shlex.join(evaluate)}")
            outcomes[run.name] = "planned"
        else:
            missing.append(run)
    planned = sum(o == "planned" for o in outcomes.values())
    if planned:
        say(
            f"engine: {options.engine}, {options.slots(planned)} job(s) at once, up to {options.retries} "
            "retries per run"
        )
    if not missing:
        return outcomes
    slots = options.slots(len(missing))
    todo, late = fit_deadline(
        missing, slots=slots, deadline=deadline, expected_seconds=expected_seconds, now=time.monotonic()
    )
    outcomes.update({run.name: "deferred" for run in late})
    if todo:
        job_fn = functools.partial(
            runner.run_one,
            root=root.absolute(),
            study=study,
            results_dir=pathlib.Path(results_dir).absolute(),
            python=python,
            pin_slots=slots if options.engine == "local" else 0,
        )
        driver = job_driver.Driver(
            executor=make_executor(options, pathlib.Path(options.folder or root / "submitit"), slots),
            job_fn=job_fn,
            options=options,
            slots=slots,
            say=say,
            expected_seconds=expected_seconds or (lambda run: None),
            deadline=deadline,
            on_done=lambda run, tag: (
                _commit(results_lib.result_path(results_dir, study, run), study, run, tag, say)
                if commit
                else None
            ),
        )
        driver.drive(todo, position, root, outcomes)
    deferred = sum(o == "deferred" for o in outcomes.values())
    if deferred:
        say(f"time budget reached: {deferred} run(s) deferred to the next session")
    return {run.name: outcomes[run.name] for run in runs}  # in the plan's order


def _commit(result_file: pathlib.Path, study: str, run: Run, tag: str, say: Callable[[str], None]) -> None:
    complaint = results_lib.commit_result(result_file, f"Study: {study}/{run.name}")
    if complaint:
        say(f"{tag}: result not committed ({complaint}); commit {result_file} by hand")
