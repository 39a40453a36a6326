"""Study runs per CPU-hour, before and after: the same cpu600 run trained and evaluated, interleaved.

    git worktree add /tmp/baseline <baseline commit>        # with its own venv (.venv) installed
    python experiments/bench_study_throughput.py --baseline=/tmp/baseline --out=throughput.json

Each round runs, on this otherwise idle machine:
  before  the baseline checkout's train and evaluation binaries on the run, one job at a time (what the
          study engine did at the baseline: one job, XLA's threads on every core);
  after   this checkout's study job (`runner.run_one`, what `run_study.py` submits) on the same run, as many
          copies at once as the local engine now runs by default (one per core, each pinned to its core).
Every job starts from an empty workdir; each side keeps one compilation cache across rounds (as a study
does: every seed of a config reuses one executable), so round 1 includes the compiles and later rounds
show the warm cache. Runs per hour = jobs finished / wall time of the round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from infotok_jax.study import engine, protocol, runner, slices

RUN = ("ar", "hsic", 0)  # host, arm, seed: the study's main arm


def _run() -> protocol.Run:
    budget = slices.BUDGETS["cpu600"]
    host, arm, seed = RUN
    return protocol.plan("main", [host], [arm], [seed], steps=budget.steps, extra=budget.extra)[0]


def _before(baseline: pathlib.Path, work: pathlib.Path, round_: int) -> dict:
    """The baseline's binaries, one job: (train s, eval s, wall s)."""
    run, root = _run(), work / f"before{round_}"
    python = str(baseline / ".venv" / "bin" / "python")
    env = {**os.environ, "INFOTOK_JAX_CACHE_DIR": str(work / "cache_before"), "PYTHONUNBUFFERED": "1"}
    seconds = {}
    start = time.perf_counter()
    stages = (("train", run.train_command(root, python)), ("eval", run.eval_command(root, python)))
    for stage, command in stages:
        begin = time.perf_counter()
        with open(work / f"before{round_}_{stage}.log", "w") as log:
            subprocess.run(command, cwd=baseline, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        seconds[stage] = time.perf_counter() - begin
    return {"jobs": 1, "wall_s": time.perf_counter() - start, "job_s": [seconds]}


def _after(work: pathlib.Path, round_: int, jobs: int) -> dict:
    """This checkout's study jobs, `jobs` at once, pinned as the local engine pins them."""
    env = {**os.environ, "INFOTOK_JAX_CACHE_DIR": str(work / "cache_after"), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--job", str(work / f"after{round_}_{j}"), "--slots", str(jobs)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for j in range(jobs)
    ]
    outcomes = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    if any(o["outcome"] != "done" for o in outcomes):
        raise RuntimeError(f"a study job failed: {outcomes}")
    return {"jobs": jobs, "wall_s": time.perf_counter() - start, "job_s": [o["process_s"] for o in outcomes]}


def _job(root: pathlib.Path, slots: int) -> None:
    """One study job exactly as the engine submits it; prints its outcome and process times as JSON."""
    run = _run()
    results = root / "results"
    outcome = runner.run_one(run, root=root, study="throughput", results_dir=results, pin_slots=slots)
    process_s = {}
    for path in results.glob("**/*.json"):
        process_s = json.loads(path.read_text())["timing"]["process_s"]
    print(json.dumps({"outcome": outcome, "process_s": process_s}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--baseline", type=pathlib.Path, help="checkout of the baseline commit, with .venv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="throughput.json")
    parser.add_argument("--job", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return _job(args.job, args.slots)
    jobs = engine.EngineOptions().slots(len(os.sched_getaffinity(0)))
    work = pathlib.Path(tempfile.mkdtemp(prefix="throughput_"))
    baseline_commit = subprocess.run(
        ["git", "-C", str(args.baseline), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    data = {
        "meta": dict(
            run=_run().name,
            study="cpu600",
            baseline=baseline_commit,
            cores=len(os.sched_getaffinity(0)),
            after_jobs_at_once=jobs,
            date=datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        ),
        "rounds": [],
    }
    try:
        for round_ in range(1, args.rounds + 1):
            for side in ("before", "after"):
                row = _before(args.baseline, work, round_) if side == "before" else _after(work, round_, jobs)
                row.update(side=side, round=round_, runs_per_hour=3600.0 * row["jobs"] / row["wall_s"])
                data["rounds"].append(row)
                with open(args.out, "w") as f:
                    json.dump(data, f, indent=1)
                print(
                    f"round {round_} {side}: {row['jobs']} job(s) in {row['wall_s']:.0f} s, "
                    f"{row['runs_per_hour']:.2f} runs/hour {row['job_s']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for round_ in range(1, args.rounds + 1):
        before, after = (r for r in data["rounds"] if r["round"] == round_)
        print(f"round {round_}: after / before = {after['runs_per_hour'] / before['runs_per_hour']:.2f}")


if __name__ == "__main__":
    main()
