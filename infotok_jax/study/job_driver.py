"""The study engine's driver: submits runs as submitit jobs, polls them, resubmits failures, reports.

It runs in the process of `run_study.py` (`engine.execute` builds it); a job is `runner.run_one`. A job
has ended when its result file exists or submitit says so (locally), or when `squeue` no longer lists it
(SLURM, without an accounting database). Progress lines count done / failed / running runs with an ETA
from `expected_seconds`; with a deadline, a waiting run is judged again each time a slot frees.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from infotok_jax.study import runner
from infotok_jax.study.protocol import Run

if TYPE_CHECKING:
    from infotok_jax.study.engine import EngineOptions


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


@dataclasses.dataclass
class Driver:
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
            self._defer_late(waiting, outcomes)
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

    def _fits(self, run: Run) -> bool:
        """Whether `run`, started now, should end by the deadline."""
        expected = self.expected_seconds(run) or 0.0
        return self.deadline is None or time.monotonic() + expected <= self.deadline

    def _defer_late(self, waiting: collections.deque, outcomes: dict) -> None:
        """On this machine a waiting run starts when a slot frees, judged again then: estimates made before
        any run of its kind had ended may have been short. The first run that no longer fits the
        deadline, and every run after it, is deferred. (A SLURM array was fitted when it was planned.)"""
        if self.options.engine == "slurm" or not waiting or len(self.running) >= self.slots:
            return
        if not self._fits(waiting[0]):
            outcomes.update({run.name: "deferred" for run in waiting})
            waiting.clear()

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
        return self._fits(run)

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
