"""Committed per-run results: what a finished run leaves behind, so the study accumulates across machines.

After a run is trained and evaluated, `write_result` stores one small JSON file,
`experiments/results/runs/<study>/<run name>.json`: the run's manifest (host, arm, seed, sweep, config
argument, overrides, steps), the resolved config, the evaluation binary's JSON files of the final step,
the training metrics history (`metrics.jsonl`, thinned), the wall time split (the trainer's
`timing.json` plus the runner's own clock of each subprocess), where it ran (date, machine) and which
code ran it (the git state every attempt of the run recorded, `provenance.run_code_state`). The runner
skips a run whose file exists, even when its workdir is gone; tables and plots are regenerated from these
files alone by `materialize`, which lays them out as the workdirs aggregation reads.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
from importlib import metadata
from typing import Any

from infotok_jax.study import provenance
from infotok_jax.study.protocol import REPO, Run, effective_fields

RESULTS_DIR = REPO / "experiments" / "results" / "runs"
SCHEMA = 1


class ResultMismatchError(ValueError):
    """A committed result has the run's name but was made with other config arguments or overrides."""


def result_path(results_dir: pathlib.Path, study: str, run: Run) -> pathlib.Path:
    return pathlib.Path(results_dir) / study / f"{run.name}.json"


def _eval_dir(workdir: pathlib.Path, step: int) -> pathlib.Path:
    return pathlib.Path(workdir) / "eval" / f"step_{step:06d}"


def _read_json(path: pathlib.Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


# kept at every logged step, with the in-training evaluation's
HISTORY_KEYS = ("loss", "steps_per_sec", "steps_per_sec_window")


def _history(workdir: pathlib.Path) -> list[dict[str, Any]]:
    """The training metrics, thinned: every logged step keeps `HISTORY_KEYS` and `eval/*`, the last
    step keeps all its keys (the loss terms at the end of training)."""
    from infotok_jax.training import reporting

    records = sorted(reporting.read_metrics(workdir).items())
    last = records[-1][0] if records else None
    return [
        {"step": s, **{k: v for k, v in r.items() if s == last or k in HISTORY_KEYS or k.startswith("eval/")}}
        for s, r in records
    ]


def machine() -> dict[str, Any]:
    """Where a run ran: enough to compare wall times across machines."""
    return {
        "nproc": os.cpu_count(),
        "cpus": len(os.sched_getaffinity(0)),  # the cores this run was allowed (a pinned study job: its own)
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": metadata.version("jax"),
        "jax_platforms": os.environ.get("JAX_PLATFORMS", ""),
    }


def build_result(
    run: Run, study: str, workdir: pathlib.Path, process_s: dict[str, float], git: dict[str, Any]
) -> dict[str, Any]:
    """The result record of a finished run in `workdir`; `process_s` is the runner's clock per subprocess,
    `git` the code state its attempts ran (`provenance.run_code_state`)."""
    workdir = pathlib.Path(workdir)
    eval_dir = _eval_dir(workdir, run.steps)
    eval_files = {p.name: json.loads(p.read_text()) for p in sorted(eval_dir.glob("*.json"))}
    if "metrics.json" not in eval_files:
        raise FileNotFoundError(f"{eval_dir / 'metrics.json'} is missing: the run is not evaluated")
    return {
        "schema": SCHEMA,
        "study": study,
        "run": run.manifest(),
        "config": _read_json(workdir / "config.json"),
        "eval": {"step": run.steps, "files": eval_files},
        "history": _history(workdir),
        "timing": {"trainer": _read_json(workdir / "timing.json"), "process_s": process_s},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git,
        "machine": machine(),
    }


def write_result(result: dict[str, Any], path: pathlib.Path, patch: str = "") -> pathlib.Path:
    """Writes `result` atomically (a killed runner leaves no half file that would count as done); first,
    the `patch` of a dirty run beside it (`provenance.patch_path`; `provenance.run_code_state` gives both;
    without one the result cannot count toward a claim)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if patch:
        patch_file = provenance.patch_path(path)
        patch_tmp = patch_file.with_name(patch_file.name + ".tmp")
        patch_tmp.write_text(patch)
        os.replace(patch_tmp, patch_file)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def load_result(path: pathlib.Path, run: Run | None = None) -> dict[str, Any]:
    """Reads a result file; with `run`, raises ResultMismatchError if it was made with another config."""
    result = json.loads(pathlib.Path(path).read_text())
    if run is None:
        return result
    saved = result["run"]
    mine = run.manifest()
    for key in ("config_arg", "overrides", "steps"):
        if saved[key] != mine[key]:
            raise ResultMismatchError(
                f"{path} holds run {run.name} with {key}={saved[key]!r}, but this plan has "
                f"{key}={mine[key]!r}: use another --study name for another budget or config"
            )
    for field, value in effective_fields(run).items():
        made_with = _lookup(result.get("config", {}), field)
        if made_with is not None and made_with != value:
            raise ResultMismatchError(
                f"{path} was made with {field}={made_with!r}, but run {run.name} now trains with {value!r} "
                "(a config default changed since): rename the result file to the run it is, or rerun"
            )
    return result


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """`config[a][b]` for "a.b"; None where a level is missing (results of older configs)."""
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def load_results(results_dir: pathlib.Path, study: str, runs: list[Run]) -> dict[str, dict[str, Any]]:
    """{run name: result} for the planned runs that have a result file under `results_dir/study`."""
    found = {}
    for run in runs:
        path = result_path(results_dir, study, run)
        if path.exists():
            found[run.name] = load_result(path, run)
    return found


def materialize(runs: list[Run], results: dict[str, dict[str, Any]], view_root: pathlib.Path) -> pathlib.Path:
    """Lays the results of `runs` out as the workdirs aggregation reads (`<view_root>/runs/<name>/`:
    `study_run.json`, `config.json`, `metrics.jsonl`, `timing.json`, `eval/step_<N>/*.json` and an empty
    `checkpoints/<N>/` marking the final step) and returns `view_root`. Runs without a result get nothing."""
    view_root = pathlib.Path(view_root)
    for run in runs:
        result = results.get(run.name)
        if result is None:
            continue
        workdir = run.workdir(view_root)
        step = result["eval"]["step"]
        eval_dir = _eval_dir(workdir, step)
        eval_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "checkpoints" / str(step)).mkdir(parents=True, exist_ok=True)
        for name, content in result["eval"]["files"].items():
            (eval_dir / name).write_text(json.dumps(content, indent=1))
        lines = [json.dumps(record) for record in result["history"]]
        (workdir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
        (workdir / "study_run.json").write_text(json.dumps(result["run"], indent=1) + "\n")
        if result.get("config") is not None:
            (workdir / "config.json").write_text(json.dumps(result["config"], indent=1) + "\n")
        if result["timing"].get("trainer") is not None:
            (workdir / "timing.json").write_text(json.dumps(result["timing"]["trainer"], indent=1) + "\n")
    return view_root


def commit_result(path: pathlib.Path, message: str) -> str | None:
    """Commits the result file `path` and its patch if it has one (other staged changes stay staged) in the
    git repository that holds it; returns git's complaint, or None on success."""
    path = pathlib.Path(path).absolute()
    names = [path.name] + [p.name for p in (provenance.patch_path(path),) if p.exists()]
    for command in (["add", "--", *names], ["commit", "-q", "-m", message, "--", *names]):
        done = subprocess.run(["git", *command], cwd=path.parent, capture_output=True, text=True)
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip() or f"git {command[0]} exited {done.returncode}"
    return None


def wall_seconds(result: dict[str, Any]) -> float:
    """The runner-measured wall time of a result's run (all its subprocesses)."""
    return float(sum(result["timing"]["process_s"].values()))


def _cost_class(host: str, config_arg: str) -> tuple[str, str]:
    """What a run's wall time depends on most, besides the budget: its host and its token count."""
    args = dict(part.split("=", 1) for part in config_arg.split(",") if "=" in part)
    return host, args.get("tokens", "")


def study_results(results_dir: pathlib.Path, study: str) -> list[dict[str, Any]]:
    """Every result file of `study`, read without checking it against a plan (for estimates only)."""
    return [json.loads(p.read_text()) for p in sorted((pathlib.Path(results_dir) / study).glob("*.json"))]


def core_seconds(result: dict[str, Any]) -> float:
    """A result's wall time times the cores it was allowed (results before this was recorded ran on all
    `nproc`): its cost whatever the share of the machine. On 2 cores a job on one core takes ~1.7x the
    wall time of a job on both, so estimates made across shares err on the long side."""
    machine_ = result.get("machine", {})
    return wall_seconds(result) * (machine_.get("cpus") or machine_.get("nproc") or 1)


def estimated_seconds(missing: list[Run], done: list[dict[str, Any]], cpus: int = 1) -> float | None:
    """Wall time the `missing` runs should take on `cpus` cores each, estimated by the median core-seconds
    of the `done` results (of the same study) of its host and token count, else of its host, else of
    all, over `cpus`; None when nothing is done to estimate from."""
    if not done:
        return None
    by_class: dict[tuple[str, str], list[float]] = {}
    by_host: dict[str, list[float]] = {}
    for result in done:
        host, seconds = result["run"]["host"], core_seconds(result) / cpus
        by_class.setdefault(_cost_class(host, result["run"]["config_arg"]), []).append(seconds)
        by_host.setdefault(host, []).append(seconds)
    every = [seconds for values in by_host.values() for seconds in values]
    return sum(
        statistics.median(by_class.get(_cost_class(r.host, r.config_arg)) or by_host.get(r.host) or every)
        for r in missing
    )
