"""The study runner, through submitit's local executor, against a stand-in python: result records,
skipping, deadlines, the CLI."""

import json
import os
import pathlib
import shutil
import sys

import pytest

from infotok_jax.study import aggregate, engine, protocol, slices

REPO = pathlib.Path(__file__).resolve().parent.parent
LOCAL = engine.EngineOptions(parallel=1, poll_s=0.2, retries=0)  # one job at a time on this machine

FAKE_PYTHON = r'''#!{python}
"""Stands in for `python -m infotok_jax.train|evaluate`: writes what the binaries write, from the config."""
import json, pathlib, re, sys
module, flags = sys.argv[2], dict(a[2:].split("=", 1) for a in sys.argv[3:])
workdir, arg = pathlib.Path(flags["workdir"]), flags["config"].split(":", 1)[1]
seed, arm = int(re.search(r"seed=(\d+)", arg).group(1)), re.search(r"arm=(\w+)", arg).group(1)
bump = 0.1 * sum(k.startswith("config.") for k in flags)  # overrides change the scores
with open(pathlib.Path(__file__).parent / "calls.log", "a") as log:
    log.write(f"{{module}} {{workdir.name}}\n")
if module == "infotok_jax.train":
    if "failonce" in arg and not (workdir / "failed_once").exists():  # a job killed once, then fine
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "failed_once").touch()
        sys.exit(3)
    if "fail," in arg + ",": sys.exit(3)
    (workdir / "checkpoints" / "2").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({{"config_arg": arg}}))
    (workdir / "timing.json").write_text(json.dumps({{"startup_s": 1.0, "compile_s": 2.0, "train_s": 3.0}}))
    rows = [{{"step": 1, "loss": 1.0, "steps_per_sec": 2.0 + seed}},
            {{"step": 2, "loss": 0.5, "steps_per_sec": 4.0 + seed + (arm == "hsic"),
             "eval/nhsic_xz": 0.3 + 0.01 * seed, "eval/nhsic_zy": 0.4 + bump,
             "eval/rate_bits_per_token": 1.5}}]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
else:
    out = workdir / "eval" / "step_000002"
    out.mkdir(parents=True)
    acc = 0.5 + 0.1 * seed + (arm == "hsic") * 0.05 + bump
    keys = ("validation", "test", "holdout")
    scores = {{f"{{s}}/understanding/accuracy": acc + 0.01 * i for i, s in enumerate(keys)}}
    scores.update({{f"{{s}}/generation/all_correct": 0.02 * (seed + 1) for s in keys}})
    scores["validation/reconstruction/psnr"] = 20.0 + seed
    (out / "metrics.json").write_text(json.dumps(scores))
'''


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "bin" / "python"
    path.parent.mkdir()
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _calls(fake_python: pathlib.Path) -> list[str]:
    log = fake_python.parent / "calls.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_runner_records_results_skips_them_without_workdirs_and_aggregates_from_them_alone(
    tmp_path, fake_python
):
    from infotok_jax.study import results

    root, store = tmp_path / "root", tmp_path / "results"
    picked = ("baseline", "hsic: full", "hsic: relevance + consistency")
    runs = [
        r for r in protocol.plan("controls", ["ar"], ["none", "hsic"], [0, 1], 2, "tiny") if r.value in picked
    ]
    assert len(runs) == 6
    said = []
    outcomes = engine.execute(
        runs, root, study="t", results_dir=store, python=str(fake_python), options=LOCAL, say=said.append
    )
    assert set(outcomes.values()) == {"done"} and len(_calls(fake_python)) == 2 * len(runs)
    record = json.loads((store / "t" / "ar-hsic-beta0-s1.json").read_text())
    assert record["run"]["overrides"] == ["--config.infotok.beta=0"] and record["run"]["value"].startswith(
        "hsic"
    )
    assert record["eval"]["files"]["metrics.json"]["validation/reconstruction/psnr"] == 21.0
    assert record["timing"]["trainer"] == {"startup_s": 1.0, "compile_s": 2.0, "train_s": 3.0}
    assert set(record["timing"]["process_s"]) == {"train", "eval"}
    assert record["machine"]["nproc"] == os.cpu_count() and len(record["git"]["commit"]) == 40
    assert record["git"]["records"] == 4  # the code state read before and after training and evaluation
    assert record["config"] == {"config_arg": runs[-1].config_arg} and record["history"][1]["loss"] == 0.5

    from_workdirs = aggregate.aggregate(runs, root, "controls")
    shutil.rmtree(root)  # a new machine: only the committed result files
    assert set(
        engine.execute(
            runs, root, study="t", results_dir=store, python=str(fake_python), options=LOCAL
        ).values()
    ) == {"skipped"}
    assert len(_calls(fake_python)) == 2 * len(runs) and not root.exists()
    found = results.load_results(store, "t", runs)
    view = results.materialize(runs, found, tmp_path / "view")
    assert aggregate.aggregate(runs, view, "controls") == from_workdirs

    other = protocol.plan("controls", ["ar"], ["none"], [0], steps=2, extra="tiny,batch=4")[0]
    assert other.name == runs[0].name
    with pytest.raises(results.ResultMismatchError, match="another --study"):
        engine.execute([other], root, study="t", results_dir=store, python=str(fake_python), options=LOCAL)

    # a result made before a default changed: same name and flags, another effective setting
    path = store / "t" / f"{runs[0].name}.json"
    record = json.loads(path.read_text())
    record["config"] = {"host": {"lm_grad_to_tokenizer": 1.0}}
    results.write_result(record, path)
    assert protocol.effective_fields(runs[0])["host.lm_grad_to_tokenizer"] == 0.0  # the AR default
    with pytest.raises(results.ResultMismatchError, match="host.lm_grad_to_tokenizer=1.0.*rename"):
        results.load_results(store, "t", runs[:1])
    record["config"]["host"]["lm_grad_to_tokenizer"] = 0.0
    results.write_result(record, path)
    assert results.load_results(store, "t", runs[:1])  # a field absent from an older config is not checked


def test_runner_reports_failures_and_defers_runs_past_the_deadline(tmp_path, fake_python):
    import dataclasses
    import time

    runs = protocol.plan("main", ["ar"], ["none"], [0, 1], steps=2, extra="tiny")
    bad = dataclasses.replace(runs[0], config_arg=runs[0].config_arg + ",fail")
    said = []
    outcomes = engine.execute(
        [bad, runs[1]],
        tmp_path / "r",
        study="t",
        results_dir=tmp_path / "res",
        python=str(fake_python),
        options=LOCAL,
        say=said.append,
    )
    assert outcomes == {bad.name: "failed: train rc=3", runs[1].name: "done"}
    assert any("FAILED (train rc=3); see" in line for line in said)
    assert not (tmp_path / "res" / "t" / f"{bad.name}.json").exists()
    late = engine.execute(
        runs,
        tmp_path / "r2",
        study="u",
        results_dir=tmp_path / "res",
        python=str(fake_python),
        options=LOCAL,
        deadline=time.monotonic() - 1,
        say=said.append,
    )
    assert late == {runs[0].name: "deferred", runs[1].name: "deferred"}
    assert "2 run(s) deferred" in said[-1]


def test_a_waiting_run_is_judged_again_when_its_slot_frees(tmp_path, fake_python):
    """Both runs fit the deadline by the estimate made before any had ended; once the first has ended,
    the estimate says the second would not, so it is deferred instead of started (one slot)."""
    import time

    runs = protocol.plan("main", ["ar"], ["none"], [0, 1], steps=2, extra="tiny")
    first_result = tmp_path / "res" / "t" / f"{runs[0].name}.json"
    said = []
    outcomes = engine.execute(
        runs,
        tmp_path / "r",
        study="t",
        results_dir=tmp_path / "res",
        python=str(fake_python),
        options=LOCAL,
        deadline=time.monotonic() + 600,
        expected_seconds=lambda run: 3600.0 if first_result.exists() else 1.0,
        say=said.append,
    )
    assert outcomes == {runs[0].name: "done", runs[1].name: "deferred"}
    assert "1 run(s) deferred" in said[-1]


def test_study_cli_status_next_with_run_limit_and_aggregate_only(tmp_path, fake_python, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_study", REPO / "experiments" / "run_study.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(cli, "PYTHON", str(fake_python))
    flags = [f"--root={tmp_path / 'root'}", f"--results_dir={tmp_path / 'res'}", "--study=tiny"]
    assert cli.main([*flags, "--next", "--max_runs=3"]) == 0
    names = sorted(p.stem for p in (tmp_path / "res" / "tiny").glob("*.json"))
    first = [r.name for r in slices.plan_slice(slices.SLICES[0], slices.BUDGETS["tiny"])[:3]]
    assert names == sorted(first)  # the 3 first runs of the first slice, nothing else
    out = tmp_path / "root" / "study" / "ar_headline" / "table.md"
    assert (out.parent / "variants.png").read_bytes()[:4] == b"\x89PNG"  # a categorical sweep: bars
    assert "| ar | none | baseline | 3 (1) |" in out.read_text()  # planned rows count their complete seeds
    assert "| ar | vib | vib: full | 3 (0) |" in out.read_text()
    capsys.readouterr()
    assert cli.main([*flags, "--status"]) == 0
    status = capsys.readouterr().out
    assert "| 1 | ar_headline | any | controls | 12 | 3 | 0.0 | 0.0 | ar-vib-s0 |" in status
    assert (
        "| 2 | ar_controls | any | controls | 42 | 3 | 0.0 | 0.0 | ar-none-lmgrad1-s0 |" in status
    )  # runs are shared
    assert "| 3 | lm_gradient | any | controls | 24 | 0 | 0.0 | 0.0 | masked-none-s0 |" in status
    assert "| 11 | main | any | main | 27 | 2 | 0.0 | 0.0 | ar-vib-s0 |" in status
    assert len(_calls(fake_python)) == 6  # --status ran nothing
    table = out.read_text()
    out.unlink()
    shutil.rmtree(tmp_path / "root" / "runs")
    assert cli.main([*flags, "--slice=ar_headline", "--aggregate_only"]) == 0
    assert out.read_text() == table and len(_calls(fake_python)) == 6
    assert cli.main(["--study=nope"]) == 2  # an unknown study needs its budget
    assert cli.main([*flags, "--steps=3", "--status"]) == 2  # a preset's budget is not changed in place
    assert "--study=<name>" in capsys.readouterr().err


def test_remaining_time_is_estimated_from_done_runs_of_the_same_host_and_token_count():
    from infotok_jax.study import results

    runs = {r.name: r for r in protocol.plan("capacity", ["ar", "masked"], ["none"], [0], 600, "")}
    done = [
        {"run": runs["ar-none-s0"].manifest(), "timing": {"process_s": {"train": 250.0, "eval": 50.0}}},
        {"run": runs["ar-none-tokens64-s0"].manifest(), "timing": {"process_s": {"train": 900.0}}},
    ]
    missing = [runs["ar-none-nuisance0-s0"], runs["ar-none-tokens64-nuisance1-s0"], runs["masked-none-s0"]]
    # 16 tokens: 300 s; 64 tokens: 900 s; the masked host has nothing done: the median of every run
    assert results.estimated_seconds(missing, done) == 300.0 + 900.0 + 600.0
    assert results.estimated_seconds(missing, []) is None
    on_two = [{**d, "machine": {"nproc": 2}} for d in done]  # recorded before `cpus`: ran on both cores
    assert results.estimated_seconds(missing, on_two, cpus=1) == 2 * (300.0 + 900.0 + 600.0)  # one core
    assert results.estimated_seconds(missing, on_two, cpus=2) == 300.0 + 900.0 + 600.0


def test_runs_share_one_compilation_cache_per_study_unless_the_user_chose_one(tmp_path, monkeypatch):
    from infotok_jax.study import runner

    monkeypatch.delenv("INFOTOK_JAX_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert runner.subprocess_env(tmp_path / "r")["INFOTOK_JAX_CACHE_DIR"] == str(tmp_path / "r" / "jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/mine")
    env = runner.subprocess_env(tmp_path / "r")
    assert "INFOTOK_JAX_CACHE_DIR" not in env and env["JAX_COMPILATION_CACHE_DIR"] == "/mine"


def test_a_failed_job_is_resubmitted_up_to_the_retries_and_a_failing_one_is_reported(tmp_path, fake_python):
    import dataclasses

    runs = protocol.plan("main", ["ar"], ["none"], [0, 1], steps=2, extra="tiny")
    once = dataclasses.replace(runs[0], config_arg=runs[0].config_arg + ",failonce")
    always = dataclasses.replace(runs[1], config_arg=runs[1].config_arg + ",fail")
    said = []
    options = dataclasses.replace(LOCAL, retries=1, parallel=2)
    outcomes = engine.execute(
        [once, always], tmp_path / "r", study="t", results_dir=tmp_path / "res", python=str(fake_python),
        options=options, say=said.append,
    )  # fmt: skip
    assert outcomes == {once.name: "done", always.name: "failed: train rc=3"}
    assert said[0] == f"submitted 2 job(s) to local: {once.name}, {always.name}"  # both at once
    assert sum("resubmitting" in line for line in said) == 2  # each failed once and was retried once
    assert _calls(fake_python).count(f"infotok_jax.train {always.name}") == 2
    assert any("FAILED (train rc=3)" in line and always.name in line for line in said)
    assert said[-1].startswith("progress: 1 done, 1 failed, 0 running or queued, 0 to submit")


def test_the_deadline_counts_parallel_slots():
    runs = protocol.plan("main", ["ar"], ["none"], [0, 1, 2, 3, 4], steps=2, extra="tiny")
    fit = dict(deadline=125.0, expected_seconds=lambda run: 10.0, now=100.0)
    # two slots: runs end at 10, 10, 20, 20, 30 s; the fifth would end after the deadline (25 s)
    assert engine.fit_deadline(runs, slots=2, **fit) == (runs[:4], runs[4:])
    assert engine.fit_deadline(runs, slots=1, **fit) == (runs[:2], runs[2:])
    assert engine.fit_deadline(runs, slots=1, deadline=None, expected_seconds=None, now=0.0) == (runs, [])
    cores = len(os.sched_getaffinity(0))
    assert engine.EngineOptions().slots(5) == min(5, cores)  # one job per core on this machine
    assert (
        engine.EngineOptions(parallel=1).slots(5) == 1 and engine.EngineOptions(engine="slurm").slots(5) == 5
    )


def test_an_aliased_run_is_made_once_for_the_two_rows_it_serves(tmp_path, fake_python):
    consistency_only = ("hsic: consistency only", "vib: consistency only")
    runs = [
        r
        for r in protocol.plan("controls", ["ar"], ["hsic", "vib"], [0], 2, "tiny")
        if r.value in consistency_only
    ]
    # one program: at beta = 0 both are the consistency term
    assert len(runs) == 2 and runs[0].name == runs[1].name
    store = tmp_path / "results"
    outcomes = engine.execute(
        runs, tmp_path / "root", study="t", results_dir=store, python=str(fake_python), options=LOCAL
    )
    # one training, one evaluation
    assert outcomes == {runs[0].name: "done"} and len(_calls(fake_python)) == 2
    record = json.loads((store / "t" / f"{runs[0].name}.json").read_text())
    assert record["run"]["value"] == "hsic: consistency only" and record["git"]["records"] == 4
