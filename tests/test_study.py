"""The study runner end to end on tiny runs, its plan, and the base config's ahead-of-time compile."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from infotok_jax.study import aggregate, protocol, slices, tables

REPO = pathlib.Path(__file__).resolve().parent.parent
STUDY = [sys.executable, str(REPO / "experiments" / "run_study.py")]


def _env(tmp_data: pathlib.Path, devices: int = 1) -> dict[str, str]:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TFDS_DATA_DIR": str(tmp_data),
    }


def test_plan_shares_default_points_with_main_and_names_overrides():
    main = protocol.plan("main", ["ar"], ["none", "vib", "hsic"], [0, 1, 2], steps=7, extra="tiny")
    assert [r.name for r in main][:3] == ["ar-none-s0", "ar-none-s1", "ar-none-s2"] and len(main) == 9
    assert all(r.steps == 4 for r in main)  # tiny caps num_train_steps at 4, whatever steps= asks
    beta = protocol.plan("beta", ["ar"], ["none", "vib", "hsic"], [0], steps=None)
    assert {r.arm for r in beta} == {"vib", "hsic"}
    hsic = [r for r in beta if r.arm == "hsic"]
    assert [r.value for r in hsic] == pytest.approx([0.0006, 0.006, 0.06, 0.6])  # x the default 0.006
    assert [r.name for r in hsic if not r.overrides] == ["ar-hsic-s0"]  # the default point IS the main run
    assert "--config.infotok.beta=0.06" in hsic[2].train_command(pathlib.Path("/r"))
    tokens = protocol.plan("tokens", ["masked"], ["vib"], [3], steps=None)
    assert [(r.name, r.value) for r in tokens] == [("masked-vib-s3", 16), ("masked-vib-tokens64-s3", 64)]
    assert tokens[1].config_arg.endswith("tokens=64")
    unbiased = protocol.plan("hsic_estimator", ["ar"], ["vib", "hsic"], [0], steps=None)[1]
    assert unbiased.overrides == ("--config.infotok.hsic_estimator=unbiased",)
    with pytest.raises(ValueError, match="--sweep"):
        protocol.plan("lr", ["ar"], ["none"], [0], steps=None)
    with pytest.raises(ValueError, match="--hosts"):
        protocol.plan("main", ["gpt"], ["none"], [0], steps=None)


def test_dry_run_prints_both_commands_and_writes_nothing(tmp_path):
    out = subprocess.run(
        [
            *STUDY,
            f"--root={tmp_path / 'root'}",
            "--sweep=no_consistency",
            "--hosts=continuous",
            "--seeds=5",
            "--dry_run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("-m infotok_jax.train") == 4 and out.stdout.count("-m infotok_jax.evaluate") == 4
    assert "--config.infotok.lambda_c=0" in out.stdout and "host=continuous,arm=hsic,seed=5" in out.stdout
    assert not (tmp_path / "root").exists()


def _cell(table: str, host: str, arm: str, column: str) -> tuple[float, float]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [host, arm]:
            mean, std = re.fullmatch(r"(\S+) ± (\S+)", cells[head.index(column)]).groups()
            return float(mean), float(std)
    raise AssertionError(f"no row {host}/{arm}")


@pytest.mark.slow
def test_study_runs_skips_complete_runs_and_aggregates_their_files(tmp_path):
    root, env = tmp_path / "study", _env(tmp_path / "tfds")
    flags = [f"--root={root}", f"--results_dir={tmp_path / 'results'}", "--study=tiny", "--hosts=ar"]
    flags += ["--arms=none,hsic", "--seeds=0,1"]
    first = subprocess.run([*STUDY, *flags], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    names = ["ar-none-s0", "ar-none-s1", "ar-hsic-s0", "ar-hsic-s1"]
    assert all(f"{n}: done" in first.stdout for n in names), first.stdout
    checkpoint = root / "runs" / "ar-hsic-s1" / "checkpoints" / "2"
    mtime = checkpoint.stat().st_mtime_ns

    second = subprocess.run([*STUDY, *flags], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    assert all(f"{n}: SKIP (result {n}.json exists)" in second.stdout for n in names), second.stdout
    assert checkpoint.stat().st_mtime_ns == mtime

    out = root / "study" / "main"
    for png in ("information_plane.png", "bars.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table, results = (out / "table.md").read_text(), json.loads((out / "results.json").read_text())
    groups = {(g["host"], g["arm"]): g for g in results["groups"]}
    for arm in ("none", "hsic"):
        scores = [
            json.loads(
                (root / "runs" / f"ar-{arm}-s{s}" / "eval" / "step_000002" / "metrics.json").read_text()
            )
            for s in (0, 1)
        ]
        for key, column, values in (
            (
                "test/reconstruction/psnr",
                "PSNR dB (test)",
                [d["test/reconstruction/psnr"] for d in scores],
            ),
            (
                "holdout/understanding/accuracy",
                "understanding acc (holdout)",
                [d["holdout/understanding/accuracy"] for d in scores],
            ),
            (
                "test/information/excess_nhsic_xz_flat",
                "nHSIC(X,Z) - floor",
                [d["test/information/excess_nhsic_xz_flat"] for d in scores],
            ),
        ):
            stats = groups[("ar", arm)]["metrics"][key]
            assert stats["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert stats["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12)
            digits = 2 if "PSNR" in column else 3
            assert _cell(table, "ar", arm, column) == (
                round(np.mean(values), digits),
                round(np.std(values, ddof=1), digits),
            )
    assert groups[("ar", "none")]["metrics"]["step_time_vs_baseline"]["values"] == [1.0, 1.0]
    assert groups[("ar", "hsic")]["complete"] == 2
    record = json.loads((tmp_path / "results" / "tiny" / "ar-hsic-s1.json").read_text())
    assert record["eval"]["files"]["metrics.json"] == scores[1]  # the last arm's seed-1 scores
    assert record["timing"]["process_s"]["train"] > 0 and record["timing"]["trainer"]["compile_s"] > 0

    # a new machine: no workdirs, only the result files; the table is regenerated identically
    shutil.rmtree(root / "runs")
    (out / "table.md").unlink()
    third = subprocess.run(
        [*STUDY, *flags, "--aggregate_only"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert (out / "table.md").read_text() == table


def _load_base(arg: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("base_config", REPO / "experiments" / "configs" / "base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_base_config_is_a_bf16_pod_config_over_100m_parameters_on_tfds():
    import flax.linen as nn
    import jax

    from infotok_jax.mllm import hosts

    config = _load_base("")
    assert config.data.name == "tfds:imagenet2012" and config.mesh_shape == (1, -1, 1)
    assert config.host.lm.dtype == config.host.tokenizer.dtype == "bfloat16"
    model = hosts.build_host(config.host)
    shapes = jax.eval_shape(lambda k: hosts.init_variables(model, k), jax.random.key(0))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    params = nn.unbox(shapes["params"])
    assert count(params["lm"]) >= 100e6 and count(params) >= 200e6
    smoke = _load_base("smoke,host=continuous")
    assert smoke.host.tokenizer.image_size == smoke.data.image_size == 32


@pytest.mark.slow
def test_base_smoke_compiles_ahead_of_time_on_simulated_devices_without_data(tmp_path):
    command = [
        sys.executable,
        str(REPO / "experiments" / "aot_compile.py"),
        "--config=experiments/configs/base.py:smoke",
        "--topology=cpu:4",
    ]
    out = subprocess.run(
        command, env=_env(tmp_path / "no_data"), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mesh: {'data': 1, 'fsdp': 4, 'model': 1}" in out.stdout
    total = float(re.search(r"total (\S+)", out.stdout).group(1))
    assert 0 < total < 0.1  # GiB per device at the smoke size
    assert not (tmp_path / "no_data").exists()  # nothing was built or read


def test_table_cell_shows_a_std_only_with_two_or_more_seeds():
    assert tables._cell(aggregate.summarize([0.5]), 3) == "0.500"
    assert tables._cell(aggregate.summarize([0.5, 0.7]), 3) == f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f}"
    assert tables._cell(None, 3) == "—"


# --- protocol: variants, slices; runner: result files, skipping, time budget (fake binaries) ---------


def test_controls_are_variants_with_per_host_lm_gradient_flip_and_shared_defaults():
    ar = {r.value: r for r in protocol.plan("controls", ["ar"], protocol.ARMS, [0], steps=600)}
    assert len(ar) == len(protocol.SWEEPS["controls"].variants) == 15
    assert len({r.name for r in ar.values()}) == 14  # every variant is its own run but one (same_run_as)
    assert ar["baseline"].name == "ar-none-s0" and ar["hsic: full"].name == "ar-hsic-s0"  # = main runs
    # the AR default passes no LM gradient to the tokenizer, so its control turns it on; masked: off
    assert ar["baseline, LM gradient flipped"].overrides == ("--config.host.lm_grad_to_tokenizer=1",)
    assert ar["hsic: LM gradient flipped"].name == "ar-hsic-lmgrad1-s0"  # the treatment's own choice
    masked = protocol.plan("controls", ["masked"], ["none"], [0], steps=600)
    assert [r.name for r in masked] == ["masked-none-s0", "masked-none-lmgrad0-s0"]
    relevance = ar["hsic: relevance only"]
    assert relevance.name == "ar-hsic-beta0-lambda_c0-s0"
    assert relevance.overrides == ("--config.infotok.beta=0", "--config.infotok.lambda_c=0")
    assert ar["hsic: relevance + consistency"].name == "ar-hsic-beta0-s0"
    assert ar["supervised: probe only"].arm == "supervised"
    assert "arm=supervised" in ar["supervised: probe only"].config_arg
    assert ar["hsic: privileged Y (attributes)"].name == "ar-hsic-y_attributes-s0"
    # the same run planned by another sweep has the same name (beta=0 is not in the beta sweep, but
    # lambda_c=0 is the no_consistency sweep's point)
    no_c = protocol.plan("no_consistency", ["ar"], ["vib"], [0], steps=600)
    assert no_c[1].name == ar["vib: rate only"].name == "ar-vib-lambda_c0-s0"


def test_a_variant_that_is_another_computation_reuses_its_run_under_its_own_arm():
    runs = protocol.plan("controls", ["masked"], ["hsic", "vib"], [1], None, "tiny")
    by_value = {r.value: r for r in runs}
    alias, trained = by_value["vib: consistency only"], by_value["hsic: consistency only"]
    assert alias.name == trained.name == "masked-hsic-beta0-lambda_y0-s1"
    assert (alias.config_arg, alias.overrides) == (trained.config_arg, trained.overrides)
    assert alias.arm == "vib" and trained.arm == "hsic"
    assert len({r.name for r in runs}) == len(runs) - 1


def test_capacity_grid_shares_its_default_point_and_names_args_in_config_order():
    runs = protocol.plan("capacity", ["ar"], ["hsic"], [1], steps=None)
    assert len(runs) == 6
    names = {r.value: r.name for r in runs}
    assert names["tokens=16 nuisance=0.5"] == "ar-hsic-s1"
    assert names["tokens=64 nuisance=1"] == "ar-hsic-tokens64-nuisance1-s1"
    assert names["tokens=16 nuisance=0"] == "ar-hsic-nuisance0-s1"  # = the nuisance sweep's run
    assert (
        names["tokens=64 nuisance=0.5"] == protocol.plan("tokens", ["ar"], ["hsic"], [1], steps=None)[1].name
    )


def test_slices_follow_the_issue_order_and_run_seed_major():
    names = [s.name for s in slices.SLICES][:7]
    assert names[:3] == ["ar_headline", "ar_controls", "lm_gradient"]
    assert names[3:] == ["continuous_headline", "masked_headline", "continuous_controls", "masked_controls"]
    lm_gradient = slices.plan_slice(slices.slice_by_name("lm_gradient"), slices.BUDGETS["tiny"])
    assert [r.name for r in lm_gradient[:4]] == [
        "masked-none-s0",
        "masked-none-lmgrad0-s0",
        "masked-hsic-s0",
        "masked-hsic-lmgrad0-s0",
    ]
    assert len(lm_gradient) == 24 and {r.host for r in lm_gradient} == {"masked", "continuous"}
    for name, host in (("ar_headline", "ar"), ("masked_headline", "masked")):
        headline = slices.plan_slice(slices.slice_by_name(name), slices.BUDGETS["tiny"])
        assert [r.value for r in headline[:4]] == list(slices.HEADLINE_LABELS) and len(headline) == 12
        assert {r.host for r in headline} == {host}
    headlines = [
        r
        for name in ("ar_headline", "continuous_headline", "masked_headline")
        for r in slices.plan_slice(slices.slice_by_name(name), slices.BUDGETS["tiny"])
    ]
    main_table = slices.plan_slice(slices.slice_by_name("main_table"), slices.BUDGETS["tiny"])
    assert slices.SLICES[-1].name == "main_table" and sorted(main_table, key=str) == sorted(
        headlines, key=str
    )
    runs = slices.plan_slice(slices.slice_by_name("ar_controls"), slices.BUDGETS["tiny"])
    assert len(runs) == 15 * 3 and [r.seed for r in runs[:15]] == [0] * 15 and runs[15].seed == 1
    assert all(r.steps == 2 and r.host == "ar" for r in runs)
    with pytest.raises(ValueError, match="--slice"):
        slices.slice_by_name("everything")


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
    if "fail" in arg: sys.exit(3)
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
    from infotok_jax.study import results, runner

    root, store = tmp_path / "root", tmp_path / "results"
    picked = ("baseline", "hsic: full", "hsic: relevance + consistency")
    runs = [
        r for r in protocol.plan("controls", ["ar"], ["none", "hsic"], [0, 1], 2, "tiny") if r.value in picked
    ]
    assert len(runs) == 6
    said = []
    outcomes = runner.execute(
        runs, root, study="t", results_dir=store, python=str(fake_python), say=said.append
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
    assert record["config"] == {"config_arg": runs[-1].config_arg} and record["history"][1]["loss"] == 0.5

    from_workdirs = aggregate.aggregate(runs, root, "controls")
    shutil.rmtree(root)  # a new machine: only the committed result files
    assert set(
        runner.execute(runs, root, study="t", results_dir=store, python=str(fake_python)).values()
    ) == {"skipped"}
    assert len(_calls(fake_python)) == 2 * len(runs) and not root.exists()
    found = results.load_results(store, "t", runs)
    view = results.materialize(runs, found, tmp_path / "view")
    assert aggregate.aggregate(runs, view, "controls") == from_workdirs

    other = protocol.plan("controls", ["ar"], ["none"], [0], steps=2, extra="tiny,batch=4")[0]
    assert other.name == runs[0].name
    with pytest.raises(results.ResultMismatchError, match="another --study"):
        runner.execute([other], root, study="t", results_dir=store, python=str(fake_python))

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

    from infotok_jax.study import runner

    runs = protocol.plan("main", ["ar"], ["none"], [0, 1], steps=2, extra="tiny")
    bad = dataclasses.replace(runs[0], config_arg=runs[0].config_arg + ",fail")
    said = []
    outcomes = runner.execute(
        [bad, runs[1]],
        tmp_path / "r",
        study="t",
        results_dir=tmp_path / "res",
        python=str(fake_python),
        say=said.append,
    )
    assert outcomes == {bad.name: "failed: train rc=3", runs[1].name: "done"}
    assert (
        "FAILED (train rc=3); see" in said[0] and not (tmp_path / "res" / "t" / f"{bad.name}.json").exists()
    )
    late = runner.execute(
        runs,
        tmp_path / "r2",
        study="u",
        results_dir=tmp_path / "res",
        python=str(fake_python),
        deadline=time.monotonic() - 1,
        say=said.append,
    )
    assert late == {runs[0].name: "deferred", runs[1].name: "deferred"}
    assert "2 run(s) deferred" in said[-1]


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
    assert "| 1 | ar_headline | controls | 12 | 3 | 0.0 | 0.0 | ar-vib-s0 |" in status
    assert (
        "| 2 | ar_controls | controls | 42 | 3 | 0.0 | 0.0 | ar-none-lmgrad1-s0 |" in status
    )  # runs are shared
    assert "| 3 | lm_gradient | controls | 24 | 0 | 0.0 | 0.0 | masked-none-s0 |" in status
    assert "| 11 | main | main | 27 | 2 | 0.0 | 0.0 | ar-vib-s0 |" in status
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


def _fake_run(root: pathlib.Path, run, scores: dict, steps_per_sec: float) -> None:
    """A workdir as the binaries leave it: a checkpoint step, the evaluation JSON and metrics.jsonl."""
    workdir = run.workdir(root)
    (workdir / "checkpoints" / str(run.steps)).mkdir(parents=True)
    eval_dir = workdir / "eval" / f"step_{run.steps:06d}"
    eval_dir.mkdir(parents=True)
    (eval_dir / "metrics.json").write_text(json.dumps(scores))
    (workdir / "metrics.jsonl").write_text(json.dumps({"step": 1, "steps_per_sec": steps_per_sec}) + "\n")


def test_paired_differences_use_the_same_seed_and_a_t_interval(tmp_path):
    runs = protocol.plan("main", ["ar"], ["none", "hsic"], [0, 1, 2], steps=None, extra="tiny")
    acc, gen = "test/understanding/accuracy", "test/generation/all_correct"
    base = {0: 0.50, 1: 0.60, 2: 0.70}  # a large seed spread, shared by both arms of a seed
    diffs = {0: 0.030, 1: 0.034, 2: 0.026}  # hsic - none per seed: small but consistent
    gen_diffs = {0: 0.05, 1: -0.04, 2: 0.00}  # inconsistent
    for run in runs:
        hsic = run.arm == "hsic"
        scores = {
            acc: base[run.seed] + (diffs[run.seed] if hsic else 0.0),
            gen: 0.2 + (gen_diffs[run.seed] if hsic else 0.0),
        }
        _fake_run(tmp_path, run, scores, steps_per_sec=1.0 if hsic else 2.0)
    results = aggregate.aggregate(runs, tmp_path, "main")
    groups = {g["arm"]: g for g in results["groups"]}
    assert results["split"] == "test" and groups["none"]["paired"] == {}
    paired = groups["hsic"]["paired"][acc]
    d = np.array([diffs[s] for s in (0, 1, 2)])
    half = 4.302652729749462 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert paired["mean"] == pytest.approx(d.mean()) and paired["n"] == 3
    assert (paired["lo"], paired["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert paired["supported"]  # the paired interval excludes 0 ...
    unpaired = groups["hsic"]["metrics"][acc]
    # ... while the unpaired mean ± std bands overlap
    assert unpaired["mean"] - unpaired["std"] < groups["none"]["metrics"][acc]["mean"]
    assert not groups["hsic"]["paired"][gen]["supported"]
    assert groups["hsic"]["metrics"]["step_time_vs_baseline"]["values"] == [2.0, 2.0, 2.0]

    table = tables.markdown(results, "t")
    row = next(line for line in table.splitlines() if line.startswith("| ar | hsic | 3 |"))
    assert f"+{d.mean():.3f} [+{d.mean() - half:.3f}, +{d.mean() + half:.3f}] *" in row
    assert "Student-t" in table
    paths = tables.write(results, tmp_path / "out", "t")
    assert json.loads(paths["json"].read_text())["groups"][1]["paired"][acc]["supported"] is True
    from infotok_jax.study import plots

    for draw in (plots.bar_chart, plots.information_plane):
        assert draw(results, tmp_path / f"{draw.__name__}.png").read_bytes()[:4] == b"\x89PNG"


def test_ib_arms_are_also_paired_with_the_supervised_control_and_hsic_with_vib(tmp_path):
    arms = ["none", "supervised", "hsic", "vib"]
    runs = protocol.plan("controls", ["ar"], arms, [0, 1], steps=None, extra="tiny")
    runs = [r for r in runs if r.value in slices.HEADLINE_LABELS]
    acc = "test/understanding/accuracy"
    offsets = {"none": 0.0, "supervised": 0.20, "hsic": 0.21, "vib": 0.22}  # hsic: +0.01 over the control
    for run in runs:
        _fake_run(tmp_path, run, {acc: 0.4 + 0.1 * run.seed + offsets[run.arm]}, steps_per_sec=1.0)
    groups = {g["arm"]: g for g in aggregate.aggregate(runs, tmp_path, "controls")["groups"]}
    assert groups["hsic"]["paired"][acc]["diffs"] == pytest.approx([0.21, 0.21])
    assert groups["hsic"]["paired_vs"]["supervised"][acc]["diffs"] == pytest.approx([0.01, 0.01])
    assert groups["hsic"]["paired_vs"]["vib"][acc]["diffs"] == pytest.approx([-0.01, -0.01])
    assert groups["vib"]["paired_vs"]["supervised"][acc]["diffs"] == pytest.approx([0.02, 0.02])
    assert groups["supervised"]["paired_vs"] == {} and groups["none"]["paired_vs"] == {}
    table = tables.markdown(aggregate.aggregate(runs, tmp_path, "controls"), "t")
    control, vib = table.split("Paired differences from the supervised control")[1].split("from VIB")
    assert "| ar | hsic | hsic: full | 2 | +0.010 [+0.010, +0.010] * |" in control
    assert "| ar | hsic | hsic: full | 2 | -0.010 [-0.010, -0.010] * |" in vib


def test_term_ablations_are_paired_with_their_own_arms_full_run_in_the_controls_sweep_only(tmp_path):
    picked = ("baseline", "hsic: full", "hsic: relevance + consistency", "supervised: probe only")
    picked += ("supervised: probe + contrastive",)
    arms = ["none", "supervised", "hsic"]
    runs = [r for r in protocol.plan("controls", ["ar"], arms, [0, 1], None, "tiny") if r.value in picked]
    acc = "test/understanding/accuracy"
    for run in runs:
        offset = {"ar-hsic-beta0": 0.25, "ar-hsic": 0.2, "ar-supervised-lambda_c0": 0.1}.get(
            run.name.rsplit("-s", 1)[0], 0.0
        )
        scores = {acc: 0.4 + 0.1 * run.seed + offset, "validation/understanding/accuracy": 0.3 + offset}
        _fake_run(tmp_path, run, scores, steps_per_sec=1.0)
    results = aggregate.aggregate(runs, tmp_path, "controls")
    groups = {g["value"]: g for g in results["groups"]}
    table = tables.markdown(results, "t")
    choice = table.split("on the validation split, where settings are chosen")[1].split("\n\n")[1]
    assert "| ar | hsic | hsic: relevance + consistency | 2 | +0.250 [+0.250, +0.250] * | — |" in choice
    beta0 = groups["hsic: relevance + consistency"]["paired_vs"]["full"][acc]
    assert beta0["diffs"] == pytest.approx([0.05, 0.05])  # switching compression off helped here
    assert groups["supervised: probe only"]["paired_vs"]["full"][acc]["diffs"] == pytest.approx([0.1, 0.1])
    assert "full" not in groups["hsic: full"]["paired_vs"]  # never paired with itself
    assert "own arm" in table
    from infotok_jax.study import plots

    assert plots.variant_chart(results, tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    other_sweep = aggregate.aggregate(runs, tmp_path, "capacity")
    assert all("full" not in g["paired_vs"] for g in other_sweep["groups"])


def test_seeds_needed_follows_the_t_interval_and_one_seed_has_no_interval():
    assert aggregate.seeds_needed(0.02, 0.02) == 7  # t_{0.975,6} * 0.02 / sqrt(7) = 0.0185 < 0.02
    assert aggregate.seeds_needed(0.02, 0.1) == 3 and aggregate.seeds_needed(0.0, 0.01) == 2
    one = aggregate.t_interval([0.3])
    assert one["lo"] is None and not one["supported"]
    assert tables._diff_cell(one, 3) == "+0.300 (1 seed)"


def test_runs_share_one_compilation_cache_per_study_unless_the_user_chose_one(tmp_path, monkeypatch):
    from infotok_jax.study import runner

    monkeypatch.delenv("INFOTOK_JAX_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert runner.subprocess_env(tmp_path / "r")["INFOTOK_JAX_CACHE_DIR"] == str(tmp_path / "r" / "jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/mine")
    env = runner.subprocess_env(tmp_path / "r")
    assert "INFOTOK_JAX_CACHE_DIR" not in env and env["JAX_COMPILATION_CACHE_DIR"] == "/mine"


def test_lm_gradient_choice_score_sums_validation_understanding_and_generation(tmp_path):
    runs = protocol.plan("controls", ["masked"], ["none"], [0, 1, 2], steps=None, extra="tiny")
    understanding, generation = aggregate.CHOICE_TERMS
    flipped_gain = {0: (-0.10, 0.02), 1: (-0.05, 0.01), 2: (-0.08, 0.03)}  # worse answers, better images
    for run in runs:
        du, dg = flipped_gain[run.seed] if run.value == "baseline, LM gradient flipped" else (0.0, 0.0)
        scores = {understanding: 0.5 + 0.01 * run.seed + du, generation: 0.01 + dg}
        _fake_run(tmp_path, run, scores, steps_per_sec=1.0)
    results = aggregate.aggregate(runs, tmp_path, "controls")
    flipped = next(g for g in results["groups"] if g["value"] == "baseline, LM gradient flipped")
    score = flipped["paired"][aggregate.CHOICE_SCORE]
    assert score["diffs"] == pytest.approx([-0.08, -0.04, -0.05])
    assert score["hi"] < 0 and score["supported"]  # the default is kept: flipping is measurably worse
    table = tables.markdown(results, "t")
    assert "understanding + gen all-correct: the choice score" in table.split("validation split")[1]
    assert "the choice score" not in table.split("validation split")[0]
