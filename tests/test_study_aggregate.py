"""The study's statistics from committed results: paired seeds, t intervals, choices, tables and plots."""

import json
import pathlib

import numpy as np
import pytest

from infotok_jax.study import aggregate, protocol, slices, tables


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
