"""Runs the study's jobs one after another as subprocesses of the training and evaluation binaries.

Each run is `python -m infotok_jax.train ...` then `python -m infotok_jax.evaluate ...` in its own
process (cwd = the repository), so a crash, an OOM or a NaN stop of one run is recorded and the study
goes on with the next; the binaries' persistent compilation cache (`.cache/jax`) is shared by all runs.
A run is complete when its latest finalized checkpoint is at the requested final step and the
evaluation of that step (`eval/step_<N>/metrics.json`) exists; complete runs are skipped, incomplete ones
are resumed by the training binary from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from infotok_jax.study.protocol import REPO, Run


def latest_checkpoint_step(workdir: pathlib.Path) -> int | None:
    """The highest finalized orbax step directory under `workdir/checkpoints` (in-progress ones are
    named `<step>.orbax-checkpoint-tmp-*` and ignored); None without one."""
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def eval_metrics_path(workdir: pathlib.Path, step: int) -> pathlib.Path:
    """Where the evaluation binary writes the scores of checkpoint `step`."""
    return pathlib.Path(workdir) / "eval" / f"step_{step:06d}" / "metrics.json"


def status(run: Run, root: pathlib.Path) -> str:
    """ "complete", "trained" (evaluation missing), "todo" (never started or stopped early) or
    "overtrained" (checkpointed beyond the requested steps: a different budget; use another root)."""
    workdir = run.workdir(root)
    latest = latest_checkpoint_step(workdir)
    if latest is None or latest < run.steps:
        return "todo"
    if latest > run.steps:
        return "overtrained"
    return "complete" if eval_metrics_path(workdir, run.steps).exists() else "trained"


def _run_logged(command: Sequence[str], log_path: pathlib.Path, env: dict[str, str]) -> int:
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(command)}\n")
        log.flush()
        return subprocess.run(
            list(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode


def execute(
    runs: Sequence[Run],
    root: pathlib.Path,
    *,
    dry_run: bool = False,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Trains and evaluates every incomplete run; returns {run name: outcome}.

    Outcomes: "skipped" (already complete), "done", "failed: train rc=N" / "failed: eval rc=N", or
    "planned" under `dry_run` (commands are printed, nothing is run or written). Logs go to
    `<workdir>/train.log` and `<workdir>/eval.log`.
    """
    root = pathlib.Path(root)
    outcomes: dict[str, str] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i, run in enumerate(runs, 1):
        workdir, tag = run.workdir(root), f"[{i}/{len(runs)}] {run.name}"
        if dry_run:
            train, evaluate = run.train_command(root, python), run.eval_command(root, python)
            say(f"{tag}\n  {shlex.join(train)}\n  {shlex.join(evaluate)}")
            outcomes[run.name] = "planned"
            continue
        state = status(run, root)
        if state == "complete":
            say(f"{tag}: SKIP (complete at step {run.steps})")
            outcomes[run.name] = "skipped"
            continue
        if state == "overtrained":
            say(f"{tag}: FAILED: {workdir} holds a run past step {run.steps}; use another --root")
            outcomes[run.name] = "failed: overtrained"
            continue
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "study_run.json").write_text(json.dumps(run.manifest(), indent=1) + "\n")
        start = time.perf_counter()
        if state == "todo":
            rc = _run_logged(run.train_command(root, python), workdir / "train.log", env)
            if rc != 0 or status(run, root) == "todo":
                outcomes[run.name] = f"failed: train rc={rc}"
                say(f"{tag}: FAILED training (rc={rc}); see {workdir / 'train.log'}")
                continue
        rc = _run_logged(run.eval_command(root, python), workdir / "eval.log", env)
        if rc != 0 or status(run, root) != "complete":
            outcomes[run.name] = f"failed: eval rc={rc}"
            say(f"{tag}: FAILED evaluation (rc={rc}); see {workdir / 'eval.log'}")
            continue
        outcomes[run.name] = "done"
        say(f"{tag}: done in {time.perf_counter() - start:.0f} s")
    return outcomes
