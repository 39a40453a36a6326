"""The capacity claim's contrasts: per-seed gains over the same-point baseline, differenced between points."""

import numpy as np
import pytest

from infotok_jax.study import aggregate, capacity, plots, protocol, tables
from tests.test_study_aggregate import _fake_run

ACC = "test/understanding/accuracy"
PROBE = "test/information/probe_r2_zn_flat"


def _capacity_results(tmp_path, gain, skip=()):
    """Fake AR capacity runs (none, hsic; seeds 0-2) whose hsic gain is `gain(tokens, nuisance, seed)`;
    the baseline differs by seed and point, so only a same-point, same-seed pairing recovers the gain. At
    nuisance 0 the nuisance probe is undefined (null in metrics.json), as the evaluation writes it."""
    runs = protocol.plan("capacity", ["ar"], ["none", "hsic"], [0, 1, 2], steps=None, extra="tiny")
    for run in runs:
        if run.name in skip:
            continue
        tokens, nuisance = (float(part.split("=")[1]) for part in run.value.split())
        base = 0.3 + 0.1 * run.seed - 0.2 * nuisance + 0.001 * tokens
        acc = base + (gain(tokens, nuisance, run.seed) if run.arm == "hsic" else 0.0)
        probe = 0.5 - (run.arm == "hsic") * 0.1 * nuisance if nuisance else None  # nothing to decode
        _fake_run(tmp_path, run, {ACC: acc, PROBE: probe}, 1.0)
    results = aggregate.aggregate(runs, tmp_path, "capacity")
    results["contrasts"] = capacity.contrasts(results["runs"])
    return results


def test_contrasts_difference_same_point_gains_per_seed_with_a_t_interval(tmp_path):
    results = _capacity_results(tmp_path, lambda t, n, s: 0.05 + 0.1 * n + 0.01 * s * n - 0.0005 * t)
    rows = {(r["arm"], r["contrast"]): r["intervals"] for r in results["contrasts"]}
    assert {arm for arm, _ in rows} == {"hsic"}
    nuisance16 = rows[("hsic", "gain grows with nuisance (1 vs 0, 16 tokens)")][ACC]
    d = np.array([0.1 + 0.01 * s for s in (0, 1, 2)])  # gain(n=1) - gain(n=0), per seed
    half = 4.302652729749462 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert nuisance16["diffs"] == pytest.approx(d)
    assert (nuisance16["lo"], nuisance16["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert nuisance16["supported"]
    tokens = rows[("hsic", "gain larger with fewer tokens (16 vs 64, nuisance 0.5)")]
    assert tokens[ACC]["diffs"] == pytest.approx([0.024] * 3)  # -0.0005 * (16 - 64)
    assert tokens[PROBE]["diffs"] == pytest.approx([0.0] * 3)
    nuisance64 = rows[("hsic", "gain grows with nuisance (1 vs 0, 64 tokens)")]
    assert PROBE not in nuisance16 and PROBE not in nuisance64  # undefined at nuisance 0

    table = tables.markdown(results, "t")
    assert "The capacity claim" in table
    assert f"| ar | hsic | gain grows with nuisance (1 vs 0, 16 tokens) | 3 | +{d.mean():.3f} [" in table
    assert plots.capacity_gains(results, tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"


def test_a_point_without_its_own_baseline_is_left_out_of_the_contrasts(tmp_path):
    """Seed 1's nuisance-0 baseline is missing: `aggregate` pairs that run with the main baseline, which
    would mix points, so the contrast uses seeds 0 and 2 only."""
    results = _capacity_results(tmp_path, lambda t, n, s: 0.1 * n, skip={"ar-none-nuisance0-s1"})
    hsic_n0_s1 = next(r for r in results["runs"] if r["name"] == "ar-hsic-nuisance0-s1")
    assert hsic_n0_s1["baseline"] == "ar-none-s1"  # the fallback the contrasts must not use
    row = next(r for r in results["contrasts"] if r["contrast"].endswith("(1 vs 0, 16 tokens)"))
    assert row["intervals"][ACC]["n"] == 2 and row["intervals"][ACC]["diffs"] == pytest.approx([0.1, 0.1])
