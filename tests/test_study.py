"""The study end to end on tiny runs, its plan and slices, and the base config's ahead-of-time compile."""

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
    """Real binaries through the runner: one arm at two seeds (a mean and a std). Arms against the
    baseline (`step_time_vs_baseline`) are checked on result files in test_study_aggregate.py."""
    root, env = tmp_path / "study", _env(tmp_path / "tfds")
    flags = [f"--root={root}", f"--results_dir={tmp_path / 'results'}", "--study=tiny", "--hosts=ar"]
    # one run at a time: the second seed's binaries load the first's programs from the study's compilation
    # cache (two at once compile everything twice: 151 vs 101 CPU-s for this test)
    flags += ["--arms=hsic", "--seeds=0,1", "--parallel=1"]
    first = subprocess.run([*STUDY, *flags], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    names = ["ar-hsic-s0", "ar-hsic-s1"]
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
    scores = [
        json.loads((root / "runs" / f"ar-hsic-s{s}" / "eval" / "step_000002" / "metrics.json").read_text())
        for s in (0, 1)
    ]
    for key, column in (
        ("test/reconstruction/psnr", "PSNR dB (test)"),
        ("holdout/understanding/accuracy", "understanding acc (holdout)"),
        ("test/information/excess_nhsic_xz_flat", "nHSIC(X,Z) - floor"),
    ):
        values = [d[key] for d in scores]
        stats = groups[("ar", "hsic")]["metrics"][key]
        assert stats["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert stats["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12)
        digits = 2 if "PSNR" in column else 3
        assert _cell(table, "ar", "hsic", column) == (
            round(np.mean(values), digits),
            round(np.std(values, ddof=1), digits),
        )
    assert groups[("ar", "hsic")]["complete"] == 2
    record = json.loads((tmp_path / "results" / "tiny" / "ar-hsic-s1.json").read_text())
    assert record["eval"]["files"]["metrics.json"] == scores[1]
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


def test_slices_follow_the_issue_order_and_run_their_first_variants_then_the_rest_seed_major():
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
    assert [s.name for s in slices.SLICES].index("main_table") == 11 and sorted(
        main_table, key=str
    ) == sorted(headlines, key=str)
    runs = slices.plan_slice(slices.slice_by_name("ar_controls"), slices.BUDGETS["tiny"])
    assert len(runs) == 15 * 3 and [r.seed for r in runs[:15]] == [0] * 15 and runs[15].seed == 1
    assert all(r.steps == 2 and r.host == "ar" for r in runs)
    capacity = slices.plan_slice(slices.slice_by_name("ar_capacity"), slices.BUDGETS["tiny"])
    core = [r for r in capacity if r.value in slices.CAPACITY_FIRST]
    # 4 points x 3 arms x 3 seeds and the supervised control at 2 of them, then the rest
    assert len(capacity) == 60 and capacity[:42] == core
    assert [r.seed for r in core[::14]] == [0, 1, 2] and [r.seed for r in capacity[42::6]] == [0, 1, 2]
    assert {r.value for r in capacity[42:]} == {"tokens=64 nuisance=0", "tokens=64 nuisance=1"}
    supervised = [r.name for r in capacity if r.arm == "supervised" and r.seed == 0]
    assert supervised == ["ar-supervised-s0", "ar-supervised-tokens64-s0"]
    with pytest.raises(ValueError, match="--slice"):
        slices.slice_by_name("everything")
