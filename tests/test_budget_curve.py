"""The baselines' learning curve: Wilson intervals, the budget it picks, and `run_study.py --curve`."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from infotok_jax.study import budget_curve, protocol
from infotok_jax.study import results as results_lib

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def cli():
    """experiments/run_study.py as a module."""
    spec = importlib.util.spec_from_file_location("run_study", REPO / "experiments" / "run_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval_matches_its_closed_form_and_covers_95_percent():
    low, high = budget_curve.wilson_interval(0.0, 512)
    z2 = budget_curve.Z**2
    assert budget_curve.Z == pytest.approx(1.959963984540054, rel=1e-12)
    assert low == 0.0 and high == pytest.approx(z2 / (512 + z2), rel=1e-12)  # 0/512 is only known < 0.0075
    assert budget_curve.wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    rng = np.random.default_rng(0)
    p, n = 0.02, 512
    draws = rng.binomial(n, p, size=4000) / n
    covered = np.mean([lo <= p <= hi for lo, hi in (budget_curve.wilson_interval(f, n) for f in draws)])
    assert 0.93 < covered < 0.97
    with pytest.raises(ValueError, match="n > 0"):
        budget_curve.wilson_interval(0.1, 0)


def _write_result(results_dir: pathlib.Path, budget: str, run: protocol.Run, generation: float, floor: float):
    split = budget_curve.SPLIT
    metrics = {
        f"{split}/generation/all_correct": generation,
        f"{split}/generation/num_prompts": 512.0,
        f"{split}/generation/floor_noise_all_correct": 0.0,
        f"{split}/generation/floor_other_all_correct": floor,
        f"{split}/generation/ceiling_recon_all_correct": 0.2,
        f"{split}/understanding/accuracy": 0.4 + run.steps / 1e4,
        f"{split}/understanding/floor_blind_accuracy": 0.3,
        f"{split}/reconstruction/psnr": 21.0,
    }
    result = {
        "run": run.manifest(),
        "eval": {"step": run.steps, "files": {"metrics.json": metrics}},
        "timing": {"process_s": {"train": 60.0 * run.steps / 600, "eval": 30.0}},
    }
    results_lib.write_result(result, results_lib.result_path(results_dir, budget, run))


def test_the_smallest_budget_with_every_host_clear_of_its_floor_interval_is_chosen(tmp_path):
    planned = budget_curve.plan(("cpu600", "cpu1200", "cpu2400"), (0,))
    assert [b for b, _ in planned] == ["cpu600"] * 3 + ["cpu1200"] * 3 + ["cpu2400"] * 3
    assert {r.name for _, r in planned} == {f"{h}-none-s0" for h in protocol.HOSTS}
    assert [r.steps for _, r in planned[::3]] == [600, 1200, 2400]
    # cpu600: ar at 2/512 is above a 0/512 floor's point but not its interval; cpu1200: masked missing;
    # cpu2400: every host clear
    values = {"cpu600": 2 / 512, "cpu1200": 0.05, "cpu2400": 0.05}
    for budget, run in planned:
        if (budget, run.host) != ("cpu1200", "masked"):
            _write_result(tmp_path, budget, run, values[budget], floor=0.0)
    curve = budget_curve.points(tmp_path, planned)
    assert len(curve) == 8
    ar600 = next(p for p in curve if p["budget"] == "cpu600" and p["host"] == "ar")
    assert ar600["generation_low"] > ar600["generation_floor"] and not ar600["above_floor"]
    assert budget_curve.chosen_budget(curve, planned) == "cpu2400"
    table = budget_curve.markdown(curve, planned)
    assert "Missing: cpu1200/masked-none-s0." in table and "Chosen budget: `cpu2400`" in table
    assert "| ar | cpu600 | 600 | 0 | 0.004 [0.001, 0.014] | 0.000 [0.007] | 0.200 | no |" in table

    _write_result(tmp_path, "cpu1200", planned[4][1], 0.05, floor=0.04)  # masked: above 0, not its floor
    assert budget_curve.chosen_budget(budget_curve.points(tmp_path, planned), planned) == "cpu2400"
    _write_result(tmp_path, "cpu1200", planned[4][1], 0.05, floor=0.0)
    assert budget_curve.chosen_budget(budget_curve.points(tmp_path, planned), planned) == "cpu1200"


def test_curve_cli_writes_table_json_and_plot_from_committed_results_alone(cli, tmp_path, capsys):
    store = tmp_path / "results"
    for budget, run in budget_curve.plan():
        _write_result(store, budget, run, 0.03, floor=0.0)
    argv = ["--curve", "--aggregate_only", f"--root={tmp_path / 'w'}", f"--results_dir={store}"]
    assert cli.main(argv) == 0
    out = tmp_path / "w" / "budget_curve"
    assert f"Chosen budget: `{budget_curve.CURVE_BUDGETS[0]}`" in (out / "table.md").read_text()
    assert len(json.loads((out / "curve.json").read_text())) == len(budget_curve.plan())
    assert (out / "curve.png").stat().st_size > 10_000
    assert "curve plot:" in capsys.readouterr().out and not (tmp_path / "w" / "cpu600").exists()
    assert cli.main(["--status", f"--results_dir={store}", f"--root={tmp_path / 'w'}"]) == 0
    n = len(budget_curve.plan())
    assert f"{n} of {n} runs done; next missing —; chosen budget cpu600." in capsys.readouterr().out


def test_curve_cli_respects_max_runs_across_budgets(cli, tmp_path, capsys):
    store = tmp_path / "results"
    planned = budget_curve.plan()
    _write_result(store, *planned[0], 0.03, floor=0.0)
    argv = ["--curve", "--dry_run", "--max_runs=2", f"--root={tmp_path / 'w'}", f"--results_dir={store}"]
    assert cli.main(argv) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "infotok_jax.train" in line]
    assert len(commands) == 2 and all(f"{planned[0][0]}/runs/" in c for c in commands)
