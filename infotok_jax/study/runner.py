"""Runs the study's jobs one after another as subprocesses, and records each finished one as a result file.

Each run is `python -m infotok_jax.train ...` then `python -m infotok_jax.evaluate ...` in its own
process (cwd = the repository), so a crash, an OOM or a NaN stop of one run is recorded and the study
goes on with the next. A run is done when its result file exists (`results.result_path`): it is skipped
even on a machine without its workdir. Otherwise the workdir decides: a run trained to its final step and
evaluated is only recorded, a trained one only evaluated, an interrupted one resumed by the training
binary from its last checkpoint. All subprocesses share one persistent compilation cache
(`<root>/jax_cache` through INFOTOK_JAX_CACHE_DIR, unless it or JAX_COMPILATION_CACHE_DIR is set), so
seeds and arms reuse compiled programs.
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


def execute(
    runs: Sequence[Run],
    root: pathlib.Path,
    *,
    study: str,
    results_dir: pathlib.Path = results_lib.RESULTS_DIR,
    dry_run: bool = False,
    deadline: float | None = None,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
    commit: bool = False,
    expected_seconds: Callable[[Run], float | None] | None = None,
) -> dict[str, str]:
    """Trains, evaluates and records every run without a result file; returns {run name: outcome}.

    Outcomes: "skipped" (result file exists), "done", "failed: train rc=N" / "failed: eval rc=N" /
    "failed: overtrained", "planned" under `dry_run` (commands printed, nothing run or written), or
    "deferred" for runs not started because `time.monotonic()` had passed `deadline`, or would have by the
    run's end by `expected_seconds(run)` (None: no estimate); from the first deferred run on, every later
    run is deferred too, so the runs done keep the plan's order. A started run is never cut.
    With `commit`, each new result file is committed on its own as it is written ("Study: <study>/<run
    name>"), so a session that ends abruptly loses no finished run; a failed commit is reported and the
    study goes on.
    Logs go to `<workdir>/train.log` and `<workdir>/eval.log`. Raises ResultMismatchError when a result
    file of a run's name was made with another config.
    """
    root = pathlib.Path(root)
    outcomes: dict[str, str] = {}
    env = subprocess_env(root)
    deferring = False
    for i, run in enumerate(runs, 1):
        workdir, tag = run.workdir(root), f"[{i}/{len(runs)}] {run.name}"
        result_file = results_lib.result_path(results_dir, study, run)
        if result_file.exists():
            results_lib.load_result(result_file, run)  # raises on a config mismatch
            outcomes[run.name] = "skipped"
            say(f"{tag}: SKIP (result {result_file.name} exists)")
            continue
        if dry_run:
            train, evaluate = run.train_command(root, python), run.eval_command(root, python)
            say(f"{tag}\n  {shlex.join(train)}\n  {shlex.join(evaluate)}")
            outcomes[run.name] = "planned"
            continue
        expected = (expected_seconds(run) if expected_seconds else None) or 0.0
        if deadline is not None and (deferring or time.monotonic() + expected > deadline):
            deferring = True
            outcomes[run.name] = "deferred"
            continue
        run_start = time.perf_counter()
        outcomes[run.name] = outcome = _execute_one(run, root, study, results_dir, env, python)
        if outcome == "done":
            say(f"{tag}: done in {time.perf_counter() - run_start:.0f} s")
            complaint = commit and results_lib.commit_result(result_file, f"Study: {study}/{run.name}")
            if complaint:
                say(f"{tag}: result not committed ({complaint}); commit {result_file} by hand")
        else:
            say(f"{tag}: FAILED ({outcome[len('failed: ') :]})" + _log_hint(outcome, workdir))
    deferred = sum(o == "deferred" for o in outcomes.values())
    if deferred:
        say(f"time budget reached: {deferred} run(s) deferred to the next session")
    return outcomes


def _log_hint(outcome: str, workdir: pathlib.Path) -> str:
    if outcome.startswith("failed: train"):
        return f"; see {workdir / 'train.log'}"
    if outcome.startswith("failed: eval"):
        return f"; see {workdir / 'eval.log'}"
    return ""


def _execute_one(
    run: Run, root: pathlib.Path, study: str, results_dir: pathlib.Path, env: dict[str, str], python: str
) -> str:
    workdir = run.workdir(root)
    state = status(run, root)
    if state == "overtrained":
        return f"failed: overtrained ({workdir} holds a run past step {run.steps}; use another --root)"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "study_run.json").write_text(json.dumps(run.manifest(), indent=1) + "\n")
    process_s: dict[str, float] = {}
    if state == "todo":
        rc, process_s["train"] = _run_logged(run.train_command(root, python), workdir / "train.log", env)
        if rc != 0 or status(run, root) == "todo":
            return f"failed: train rc={rc}"
    if status(run, root) != "complete":
        rc, process_s["eval"] = _run_logged(run.eval_command(root, python), workdir / "eval.log", env)
        if rc != 0 or status(run, root) != "complete":
            return f"failed: eval rc={rc}"
    result = results_lib.build_result(run, study, workdir, {k: round(v, 3) for k, v in process_s.items()})
    results_lib.write_result(result, results_lib.result_path(results_dir, study, run))
    return "done"
