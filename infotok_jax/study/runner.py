"""The work of one study job: train, evaluate and record one run, each binary its own subprocess.

Each run is `python -m infotok_jax.train ...` then `python -m infotok_jax.evaluate ...` in its own
process (cwd = the repository); `run_one` is what the engine (`study/engine.py`) submits, one job per
run. A run is done when its result file exists (`results.result_path`): the engine skips it even on a
machine without its workdir. Otherwise the workdir decides: a run trained to its final step and
evaluated is only recorded, a trained one only evaluated, an interrupted one (a failed, killed or
preempted job) resumed by the training binary from its last checkpoint. All subprocesses share one
persistent compilation cache (`<root>/jax_cache` through INFOTOK_JAX_CACHE_DIR, unless it or
JAX_COMPILATION_CACHE_DIR is set), so seeds and arms reuse compiled programs.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from infotok_jax.study import cpu_slots, provenance
from infotok_jax.study import results as results_lib
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
    """The workdir's state: "complete", "trained" (evaluation missing), "todo" (never started or stopped
    early) or "overtrained" (checkpointed beyond the requested steps: a different budget)."""
    workdir = run.workdir(root)
    latest = latest_checkpoint_step(workdir)
    if latest is None or latest < run.steps:
        return "todo"
    if latest > run.steps:
        return "overtrained"
    return "complete" if eval_metrics_path(workdir, run.steps).exists() else "trained"


def subprocess_env(root: pathlib.Path) -> dict[str, str]:
    """The runs' environment: unbuffered logs and one compilation cache for the whole study."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not (env.get("INFOTOK_JAX_CACHE_DIR") or env.get("JAX_COMPILATION_CACHE_DIR")):
        env["INFOTOK_JAX_CACHE_DIR"] = str(pathlib.Path(root).absolute() / "jax_cache")
    return env


def _run_logged(command: Sequence[str], log_path: pathlib.Path, env: dict[str, str]) -> tuple[int, float]:
    """(return code, wall seconds) of `command`, its output appended to `log_path`."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(command)}\n")
        log.flush()
        start = time.perf_counter()
        rc = subprocess.run(list(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        return rc, time.perf_counter() - start


def _run_recorded(
    stage: str, command: Sequence[str], workdir: pathlib.Path, env: dict[str, str]
) -> tuple[int, float]:
    """`_run_logged` into `<stage>.log`, with the checkout's code state recorded before and after (a
    change while the subprocess ran shows as two states: `provenance.run_code_state`)."""
    provenance.record_attempt(workdir, stage, provenance.code_state(REPO))
    try:
        return _run_logged(command, workdir / f"{stage}.log", env)
    finally:
        provenance.record_attempt(workdir, f"{stage} ended", provenance.code_state(REPO))


def run_one(
    run: Run,
    *,
    root: pathlib.Path,
    study: str,
    results_dir: pathlib.Path = results_lib.RESULTS_DIR,
    python: str = sys.executable,
    pin_slots: int = 0,
) -> str:
    """One study job: trains (or resumes) and evaluates `run` in its workdir and writes its result file.

    Returns "done" or "failed: train rc=N" / "failed: eval rc=N" / "failed: overtrained (...)". This is
    the function the engine submits (one job per run), so it takes and returns plain data only. With
    `pin_slots` > 1 the job and its subprocesses run on one of that many disjoint shares of the cores
    (`cpu_slots`; the local engine runs that many jobs at once).
    """
    with cpu_slots.pinned(pin_slots):
        return _run_one(run, root=root, study=study, results_dir=results_dir, python=python)


def _run_one(run: Run, *, root: pathlib.Path, study: str, results_dir: pathlib.Path, python: str) -> str:
    workdir = run.workdir(root)
    env = subprocess_env(root)
    state = status(run, root)
    if state == "overtrained":
        return f"failed: overtrained ({workdir} holds a run past step {run.steps}; use another --root)"
    workdir.mkdir(parents=True, exist_ok=True)
    _note_job(workdir / "train.log")
    (workdir / "study_run.json").write_text(json.dumps(run.manifest(), indent=1) + "\n")
    process_s: dict[str, float] = {}
    if state == "todo":
        rc, process_s["train"] = _run_recorded("train", run.train_command(root, python), workdir, env)
        if rc != 0 or status(run, root) == "todo":
            return f"failed: train rc={rc}"
    if status(run, root) != "complete":
        rc, process_s["eval"] = _run_recorded("eval", run.eval_command(root, python), workdir, env)
        if rc != 0 or status(run, root) != "complete":
            return f"failed: eval rc={rc}"
    if not (workdir / provenance.ATTEMPTS_FILE).exists():  # trained and evaluated before attempts were kept
        provenance.record_attempt(workdir, "result", provenance.code_state(REPO))
    git, patch = provenance.run_code_state(workdir)
    process_s = {k: round(v, 3) for k, v in process_s.items()}
    result = results_lib.build_result(run, study, workdir, process_s, git)
    results_lib.write_result(result, results_lib.result_path(results_dir, study, run), patch)
    return "done"


def _note_job(log_path: pathlib.Path) -> None:
    """Appends which scheduler job runs this attempt (`# job <id> on <host>`), so a run's log says
    which attempt resumed where; nothing outside a submitit job."""
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") and (
        f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    )
    job_id = job_id or os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    if job_id:
        with open(log_path, "a") as log:
            log.write(f"\n# job {job_id} on {socket.gethostname()}\n")
