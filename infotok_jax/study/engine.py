"""Runs the study's missing runs through submitit: one job per run, one job array per submission.

`--engine=local` uses submitit's LocalExecutor (jobs are processes on this machine, at most `parallel`
at once, by default one per core, each pinned to its own cores: `cpu_slots`); `--engine=slurm` its
SlurmExecutor (one `sbatch --array` per slice, the scheduler running at most `parallel` of its tasks at
once; by default no limit but the cluster's). Each job is
`runner.run_one`: train, then evaluate, then write the run's result file, exactly the subprocesses of a
serial session, so results do not depend on the engine. The driver (this module, in the process of
`run_study.py`) waits, prints progress (done / failed / running counts and an ETA), commits each result
file as it lands (the driver is the only git writer) and resubmits failed jobs.

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

import collections
import dataclasses
import functools
import os
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from infotok_jax.study import results as results_lib
from infotok_jax.study import runner
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


def _live_slurm_jobs(jobs: Sequence[Any]) -> set[str]:
    """Ids of the `jobs` SLURM still holds (pending, running, completing, requeued), asked of `squeue`
    (submitit's own watcher asks `sacct`, which without an accounting database never sees a job end).
    An array the controller has forgotten holds none; when `squeue` fails otherwise (the controller
    unreachable), its jobs count as live, so a hiccup never resubmits a running job."""
    by_array: dict[str, list[str]] = {}
    for job in jobs:
        by_array.setdefault(job.job_id.split("_")[0], []).append(job.job_id)
    live: set[str] = set()
    for array_id, ids in by_array.items():
        command = ["squeue", "--noheader", "--array", "--format=%i", f"--jobs={array_id}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            live.update(done.stdout.split())
        elif "invalid job id" not in done.stderr.lower():
            live.update(ids)
    return live


def _job_outcome(job: Any) -> str:
    """The outcome of an ended job: run_one's return value, or why it has none."""
    if not job.paths.result_pickle.exists():
        return "failed: job ended without a result (killed, cancelled or preempted)"
    try:
        return job.result()
    except Exception as e:  # the job raised: its traceback is in the job's log
        first_line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return f"failed: job raised {first_line[:200]}"


def _progress(done: int, failed: int, running: int, waiting: int, *, eta_s: float | None) -> str:
    eta = "?" if eta_s is None else f"{eta_s / 60:.1f} min"
    return (
        f"progress: {done} done, {failed} failed, {running} running or queued, {waiting} to submit; ETA {eta}"
    )


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
    """Submits every run without a result file, waits for them; returns {run name: outcome}.

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
    for run in runs:
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
        driver = _Driver(
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


@dataclasses.dataclass
class _Driver:
    """Submits runs, polls their jobs, resubmits failures and reports progress."""

    executor: Any
    job_fn: Callable[[Run], str]
    options: EngineOptions
    slots: int
    say: Callable[[str], None]
    expected_seconds: Callable[[Run], float | None]
    deadline: float | None
    on_done: Callable[[Run, str], None]
    running: dict[str, tuple[Run, Any, float]] = dataclasses.field(default_factory=dict)
    attempts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def drive(self, todo: list[Run], position: dict[str, str], root: pathlib.Path, outcomes: dict) -> None:
        """Runs `todo` to the end: each run ends "done" or "failed: ..." in `outcomes`."""
        waiting = collections.deque(todo)
        last_counts = None
        while waiting or self.running:
            self._submit(waiting)
            time.sleep(self.options.poll_s)
            for run, job_id, outcome, seconds in self._ended():
                tag, job = position[run.name], f"(job {job_id}, attempt {self.attempts[run.name]})"
                if outcome == "done":
                    outcomes[run.name] = "done"
                    self.say(f"{tag}: done in {seconds:.0f} s {job}")
                    self.on_done(run, tag)
                elif self._may_retry(run, outcome):
                    step = runner.latest_checkpoint_step(run.workdir(root))
                    self.say(f"{tag}: {outcome} {job}; resubmitting, resumes from checkpoint step {step}")
                    waiting.append(run)
                else:
                    outcomes[run.name] = outcome
                    logs = f"{run.workdir(root)}/train.log, eval.log"
                    self.say(f"{tag}: FAILED ({outcome[len('failed: ') :]}); see {logs} {job}")
            counts = (
                sum(o == "done" for o in outcomes.values()),
                sum(o.startswith("failed") for o in outcomes.values()),
                len(self.running),
                len(waiting),
            )
            if counts != last_counts:
                self.say(_progress(*counts, eta_s=self._eta(waiting)))
                last_counts = counts

    def _submit(self, waiting: collections.deque) -> None:
        """Submits, as one job array, the waiting runs there is room for (all of them on SLURM, whose
        array throttle keeps `slots` running)."""
        room = len(waiting) if self.options.engine == "slurm" else self.slots - len(self.running)
        batch = [waiting.popleft() for _ in range(min(room, len(waiting)))]
        if not batch:
            return
        jobs = self.executor.map_array(self.job_fn, batch)
        for run, job in zip(batch, jobs, strict=True):
            self.attempts[run.name] += 1
            self.running[job.job_id] = (run, job, time.monotonic())
        self.say(
            f"submitted {len(batch)} job(s) to {self.options.engine}: {', '.join(r.name for r in batch)}"
        )

    def _ended(self) -> list[tuple[Run, str, str, float]]:
        """(run, job id, outcome, seconds since submission) of the jobs that ended since the last call."""
        jobs = [job for _, job, _ in self.running.values()]
        live = _live_slurm_jobs(jobs) if self.options.engine == "slurm" and jobs else None
        ended = []
        for job_id, (run, job, submitted) in list(self.running.items()):
            finished = job.paths.result_pickle.exists() or (
                job.done() if live is None else job_id not in live
            )
            if finished:
                del self.running[job_id]
                ended.append((run, job_id, _job_outcome(job), time.monotonic() - submitted))
        return ended

    def _may_retry(self, run: Run, outcome: str) -> bool:
        if self.attempts[run.name] > self.options.retries or outcome.startswith("failed: overtrained"):
            return False
        expected = self.expected_seconds(run) or 0.0
        return self.deadline is None or time.monotonic() + expected <= self.deadline

    def _eta(self, waiting: collections.deque) -> float | None:
        """Seconds until every run should have ended: the expected time of the waiting runs and what is
        left of the running ones', spread over the slots; None without estimates."""
        now = time.monotonic()
        left = [self.expected_seconds(run) for run in waiting]
        left += [
            None if (e := self.expected_seconds(run)) is None else max(0.0, e - (now - submitted))
            for run, _, submitted in self.running.values()
        ]
        if not left or any(seconds is None for seconds in left):
            return None
        return sum(left) / self.slots
