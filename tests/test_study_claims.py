"""The claims' statistics on small synthetic result sets whose answers are known by hand: Holm's step-down,
the intervals at Holm's level, the paired probability of improvement, the sampling share, which results
count (provenance) and the verdict rules."""

import json
import math
import pathlib
import random
import subprocess
import sys

import pytest

from infotok_jax.study import (
    claim_families,
    claims,
    claims_plot,
    multiplicity,
    protocol,
    provenance,
    results,
    slices,
)


def test_holm_steps_down_and_stops_at_the_first_kept_cell():
    # sorted p: 0.01 (x4 = 0.04 <= 0.05: reject), 0.03 (x3 = 0.09 > 0.05: stop); 0.04 and 0.5 kept
    out = multiplicity.holm([0.01, 0.04, 0.03, 0.5])
    assert [o["p_holm"] for o in out] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [o["reject"] for o in out] == [True, False, False, False]
    # the rejected cell's interval is at its step's level, the kept ones at the level where Holm stopped
    assert [o["level"] for o in out] == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 3, 0.05 / 3])
    # a missing test counts as p = 1 and stays in the family's size
    assert multiplicity.holm([0.012, None])[0]["p_holm"] == pytest.approx(0.024)


def test_a_pending_cell_once_decided_can_add_rejections_but_never_remove_one():
    """docs/study.md: a supported cell is final at once, whatever its family's pending cells give."""
    rng = random.Random(0)
    for _ in range(2000):
        p = [rng.choice([None, rng.random() * 0.02, rng.random()]) for _ in range(rng.randint(2, 12))]
        before = [o["reject"] for o in multiplicity.holm(p)]
        decided = [rng.random() if v is None else v for v in p]
        after = [o["reject"] for o in multiplicity.holm(decided)]
        assert all(a or not b for a, b in zip(after, before, strict=True)), (p, decided)
    # and it does add one: alone in a family of 2, 0.03 > 0.05/2; with its partner at 0.01, 0.03 <= 0.05
    assert [o["reject"] for o in multiplicity.holm([0.03, None])] == [False, False]
    assert [o["reject"] for o in multiplicity.holm([0.03, 0.01])] == [True, True]


def test_probability_of_improvement_counts_ties_half():
    assert multiplicity.probability_of_improvement([0.1, 0.0, -0.2, 0.3]) == pytest.approx(2.5 / 4)
    assert multiplicity.probability_of_improvement([]) is None


def test_family_intervals_at_holms_level_agree_with_its_decisions():
    # two seeds: t with 1 degree of freedom has the closed-form quantile tan(pi (q - 1/2))
    strong, weak = [0.299, 0.301], [0.1, 0.3]  # t = 300 (p 0.002 < 0.05 / 3) and t = 2
    cells = multiplicity.family([strong, weak, [0.05]])
    m = 3
    se_weak = math.sqrt(0.02) / math.sqrt(2)  # sd of (0.1, 0.3) / sqrt(2) = 0.1
    assert cells[1]["mean"] == pytest.approx(0.2)
    raw_half = math.tan(math.pi * (0.975 - 0.5)) * se_weak
    assert (cells[1]["lo"], cells[1]["hi"]) == pytest.approx((0.2 - raw_half, 0.2 + raw_half))
    bonf_half = math.tan(math.pi * (1 - 0.05 / m / 2 - 0.5)) * se_weak
    assert (cells[1]["lo_bonf"], cells[1]["hi_bonf"]) == pytest.approx((0.2 - bonf_half, 0.2 + bonf_half))
    for cell in cells[:2]:  # the adjusted interval excludes 0 exactly when Holm rejects
        assert cell["reject"] == (cell["lo_adj"] > 0 or cell["hi_adj"] < 0)
    assert cells[0]["reject"] and not cells[1]["reject"]
    assert cells[2]["n"] == 1 and cells[2]["lo_adj"] is None and not cells[2]["reject"]
    assert cells[0]["prob_improvement"] == 1.0


def test_sampling_share_is_the_binomial_bound_over_the_observed_variance():
    # two runs at p = 0.5 on 100 examples each: 2 x 0.0025; observed differences 0.0 and 0.1: variance 0.005
    bound = 2 * multiplicity.binomial_variance(0.5, 100)
    share = multiplicity.sampling_share([bound, bound], [0.0, 0.1])
    assert share["sampling"] == pytest.approx(0.005) and share["share"] == pytest.approx(1.0)


def test_patch_paths_decide_whether_a_dirty_result_counts(tmp_path):
    patch = (
        "diff --git a/docs/study.md b/docs/study.md\n+x\n"
        "diff --git a/infotok_jax/models/vq.py b/infotok_jax/models/vq.py\n"
    )
    assert provenance.touched_paths(patch) == ["docs/study.md", "infotok_jax/models/vq.py"]
    assert provenance.is_code("infotok_jax/models/vq.py") and provenance.is_code(
        "experiments/configs/host.py"
    )
    assert not provenance.is_code("infotok_jax/study/tables.py") and not provenance.is_code("README.md")
    result_file = tmp_path / "ar-none-s0.json"
    assert provenance.eligibility({"git": {"dirty": False}}, result_file) == (True, "clean checkout")
    assert not provenance.eligibility({"git": {"dirty": True}}, result_file)[0]  # no patch stored
    provenance.patch_path(result_file).write_text(patch)
    ok, why = provenance.eligibility({"git": {"dirty": True}}, result_file)
    assert not ok and "infotok_jax/models/vq.py" in why
    provenance.patch_path(result_file).write_text(patch.split("diff --git a/infotok")[0])
    assert provenance.eligibility({"git": {"dirty": True}}, result_file)[0]


def _git(repo: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _commit(repo: pathlib.Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def test_each_attempt_records_the_code_it_runs_and_a_change_between_attempts_cannot_count(tmp_path):
    repo, workdir = tmp_path / "repo", tmp_path / "run"
    (repo / "infotok_jax").mkdir(parents=True)
    workdir.mkdir()
    (repo / "infotok_jax" / "model.py").write_text("width = 1\n")
    _git(repo, "init", "-q")
    _commit(repo, "model")
    clean = provenance.code_state(repo)
    assert not clean["dirty"] and clean["patch"] == "" and len(clean["commit"]) == 40
    provenance.record_attempt(workdir, "train", clean)

    (repo / "notes.md").write_text("a document changes no run\n")  # untracked, then committed mid-run
    assert provenance.code_state(repo) == clean
    _commit(repo, "notes")  # as the study driver commits another run's result file
    provenance.record_attempt(workdir, "train ended", provenance.code_state(repo))
    git, patch = provenance.run_code_state(workdir)
    assert git == {
        "commit": clean["commit"],
        "dirty": False,
        "code_sha256": clean["code_sha256"],
        "records": 2,
    }
    assert patch == ""

    (repo / "infotok_jax" / "new_layer.py").write_text("depth = 2\n")  # untracked code: part of the patch
    edited = provenance.code_state(repo)
    assert edited["dirty"] and provenance.touched_paths(edited["patch"]) == ["infotok_jax/new_layer.py"]
    provenance.record_attempt(workdir, "eval", edited)  # a resumed attempt after the edit
    git, patch = provenance.run_code_state(workdir)
    assert [r["stage"] for r in git["changed_during_run"]] == ["train", "eval"] and patch == ""
    result_file = results.write_result({"git": git}, tmp_path / "results" / "ar-none-s0.json", patch)
    assert not provenance.patch_path(result_file).exists()
    ok, why = provenance.eligibility({"git": git}, result_file)
    assert not ok and "changed while the run" in why

    dirty_run = tmp_path / "dirty_run"
    dirty_run.mkdir()
    (repo / "infotok_jax" / "model.py").write_text("width = 2\n")
    for stage in ("train", "eval"):
        provenance.record_attempt(dirty_run, stage, provenance.code_state(repo))
    git, patch = provenance.run_code_state(dirty_run)
    assert git["dirty"] and git["records"] == 2 and "changed_during_run" not in git
    assert provenance.touched_paths(patch) == ["infotok_jax/model.py", "infotok_jax/new_layer.py"]
    result_file = results.write_result({"git": git}, tmp_path / "results" / "ar-hsic-s0.json", patch)
    assert provenance.patch_path(result_file).read_text() == patch
    ok, why = provenance.eligibility({"git": git}, result_file)
    assert not ok and "infotok_jax/model.py" in why


def _write(results_dir: pathlib.Path, name: str, scores: dict, dirty: bool = False) -> None:
    path = results_dir / "tiny" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"eval": {"files": {"metrics.json": scores}}, "git": {"commit": "c", "dirty": dirty}}
    path.write_text(json.dumps(result))


def test_a_claim_shows_every_cell_leaves_dirty_results_out_and_applies_its_rule(tmp_path):
    acc, count = claim_families.UNDERSTANDING, claim_families.ENDPOINT_COUNTS[claim_families.UNDERSTANDING]
    cells = (
        claim_families.versus("ar", "hsic", "none", acc),
        claim_families.versus("ar", "vib", "none", acc),
        claim_families.versus("ar", "supervised", "none", acc),
    )
    claim = claim_families.Claim("t", "test claim", ("tiny",), "controls", (acc,), cells, "any_above", "rule")
    base = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.55}
    for seed, b in base.items():
        _write(tmp_path, f"ar-none-s{seed}", {acc: b, count: 512})
        _write(tmp_path, f"ar-hsic-s{seed}", {acc: b + 0.30 + 0.001 * seed, count: 512})
        # seed 3 of vib is from a dirty checkout without a patch: it must not count
        _write(
            tmp_path, f"ar-vib-s{seed}", {acc: b + (0.1 if seed % 2 else -0.1), count: 512}, dirty=seed == 3
        )
        if seed < 2:  # two seeds of 3 planned: a large, steady gain that stays pending
            _write(tmp_path, f"ar-supervised-s{seed}", {acc: b + 0.30 + 0.001 * seed, count: 512})
    decided = claims.evaluate(claim, "tiny", tmp_path)
    hsic, vib, supervised = decided["cells"]
    assert hsic["seeds"] == [0, 1, 2, 3] and hsic["n"] == 3  # tested on its planned seeds, never more
    assert vib["n"] == 3 and vib["seeds"] == [0, 1, 2]
    assert hsic["reject"] and hsic["lo_adj"] > 0 and not vib["reject"]
    assert supervised["pending"] and supervised["n"] == 2 and supervised["planned_n"] == 3
    assert supervised["mean"] == pytest.approx(0.3005) and supervised["lo"] > 0  # described
    assert supervised["p"] is None and not supervised["reject"]  # not tested
    assert hsic["level"] == pytest.approx(multiplicity.ALPHA / 3)  # ... but counted: Holm's m is 3
    assert decided["verdict"] == "supported in 1 of 3 cells: ar hsic - baseline (understanding)"
    assert decided["excluded"] == {"ar-vib-s3": "dirty checkout, no patch stored beside it"}
    bound = multiplicity.binomial_variance
    expected = sum(bound(b + 0.3 + 0.001 * s, 512) + bound(b, 512) for s, b in base.items()) / 4
    assert hsic["sampling"]["sampling"] == pytest.approx(expected)
    table = claims.markdown([decided])
    assert "| ar | vib - baseline | understanding | 3 / 3 |" in table and "ar-vib-s3" in table
    assert "| ar | supervised - baseline | understanding | 2 / 3 pending |" in table


def test_three_hosts_rule_needs_every_host_for_one_arm():
    def cell(host, name, lo):
        return {
            "host": host,
            "name": name,
            "endpoint": claim_families.GENERATION,
            "n": 3,
            "pending": False,
            "lo_adj": lo,
            "hi_adj": 1,
        }

    every = [cell(h, "vib - supervised control", 0.1) for h in protocol.HOSTS]
    assert claims.VERDICT_RULES["all_hosts"](every) == "supported for vib"
    every[1]["lo_adj"] = -0.1
    assert claims.VERDICT_RULES["all_hosts"](every).startswith("not supported")


def test_the_forest_plot_has_a_panel_per_family_with_runs_colored_by_the_holm_interval(tmp_path):
    def cell(name, lo_adj, hi_adj, n=3, pending=False):
        diffs = [0.1 * i for i in range(n)]
        return {
            "host": "ar",
            "name": name,
            "endpoint": claim_families.GENERATION,
            "n": n,
            "planned_n": 3,
            "pending": pending,
            "mean": sum(diffs) / n if n else None,
            "lo": -0.05 if n > 1 else None,
            "hi": 0.25 if n > 1 else None,
            "lo_adj": None if pending else lo_adj,
            "hi_adj": None if pending else hi_adj,
            "diffs": diffs,
        }

    above, across, below = cell("a", 0.1, 0.2), cell("b", -0.1, 0.2), cell("c", -0.3, -0.1)
    pending = cell("d", None, None, n=2, pending=True)
    family = [above, across, below, pending]
    decided = [
        {"statement": "first", "verdict": "v1", "cells": family},
        {"statement": "same cells, another rule", "verdict": "v2", "cells": family},
        {"statement": "no runs", "verdict": "untested", "cells": [cell("e", None, None, n=0, pending=True)]},
    ]
    (first, family_cells), second = claims_plot._panels(decided)[0], claims_plot._panels(decided)[1]
    assert [d["statement"] for d in first] == ["first", "same cells, another rule"] and family_cells is family
    assert [d["statement"] for d in second[0]] == ["no runs"]  # grouped here; `forest` leaves it out
    colors = [claims_plot._color(c) for c in family]
    assert colors == ["tab:green", claims_plot._NEITHER, "tab:red", claims_plot._PENDING]
    assert claims_plot._label(pending) == "ar d, generation (2/3 pending)"
    png = claims_plot.forest(decided, tmp_path / "claims.png", title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_sequential_plan_is_slices_of_ten_seeds_at_the_whole_split_budget():
    budget = slices.BUDGETS["cpu2400full"]
    assert "--config.evaluation.max_batches=25" in budget.overrides  # 80 x 25 = the 2000 test examples
    ten, three = set(), set()
    for claim in claim_families.CLAIMS:
        for cell in claim.family:
            planned = claim_families.planned_seeds("cpu2400full", cell)
            (ten if planned == 10 else three).add((cell.host, cell.name, cell.endpoint))
            assert claim_families.planned_seeds("cpu2400", cell) == claim_families.CELL_SEEDS
    for contrast in claim_families.SEQUENTIAL_PLAN:
        assert len(contrast.seeds) == 10 and contrast.study == "cpu2400full"
        assert (contrast.host, contrast.cell, contrast.endpoint) in ten
    # every cell made of a planned contrast's runs (its other endpoint, its nuisance-shift drop) is
    # planned at 10 too, so it is not read at each seed from the 3rd on; a cell with another run is not
    endpoints = {
        claim_families.UNDERSTANDING,
        claim_families.GENERATION,
        claim_families.SHIFTED_UNDERSTANDING,
    }
    assert ten == {
        (contrast.host, contrast.cell, endpoint)
        for contrast in claim_families.SEQUENTIAL_PLAN
        for endpoint in endpoints
    }
    assert ("ar", "vib - baseline", claim_families.UNDERSTANDING) in three
    names = {s.name: s for s in slices.SLICES}
    ar = slices.plan_slice(names["plan_ar_vib_supervised"], budget)
    assert sorted({r.arm for r in ar}) == ["supervised", "vib"] and len(ar) == 20
    assert all(r.overrides[-1] == "--config.evaluation.shift_nuisance=1" for r in ar)
    control = slices.plan_slice(names["ar_capacity_supervised"], slices.BUDGETS["cpu600"])
    assert {r.name for r in control} == {
        f"ar-supervised{t}-s{s}" for t in ("", "-tokens64") for s in (0, 1, 2)
    }


def test_the_claims_command_decides_the_committed_results_and_draws_them(tmp_path):
    """`run_study.py --claims` on the committed cpu2400full files: the decided first contrast of the plan,
    and claims.md, claims.json and claims.png under <root>/study."""
    repo = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, str(repo / "experiments" / "run_study.py"), "--study=cpu2400full", "--claims"]
        + [f"--root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| ar | vib - supervised control | generation | 10 / 10 | +0.128 |" in out.stdout
    assert (tmp_path / "study" / "claims.md").read_text() == out.stdout.rstrip("\n") + "\n"
    decided = json.loads((tmp_path / "study" / "claims.json").read_text())
    assert {d["claim"] for d in decided} == {c.key for c in claims.claims_of_study("cpu2400full")}
    assert (tmp_path / "study" / "claims.png").read_bytes()[:4] == b"\x89PNG"
