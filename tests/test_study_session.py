"""A study session: `--commit` commits each new result file alone as soon as it is written, and
`--max_minutes` starts no run expected to end after the deadline."""

import subprocess
import time

from infotok_jax.study import engine, protocol
from tests.test_study_runner import LOCAL, fake_python  # noqa: F401 (a fixture)


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_each_new_result_is_committed_alone_and_staged_work_stays_staged(tmp_path, fake_python):  # noqa: F811
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "study@example.com")
    _git(repo, "config", "user.name", "study")
    (repo / "notes.txt").write_text("work in progress\n")
    _git(repo, "add", "notes.txt")
    runs = protocol.plan("main", ["ar"], ["none", "hsic"], [0], 2, "tiny")  # the fake binaries train 2 steps
    said = []
    outcomes = engine.execute(
        runs, tmp_path / "root", study="t", results_dir=repo / "res", python=str(fake_python), options=LOCAL,
        say=said.append, commit=True,
    )  # fmt: skip
    assert set(outcomes.values()) == {"done"}
    assert _git(repo, "log", "--format=%s").split("\n")[:-1] == ["Study: t/ar-hsic-s0", "Study: t/ar-none-s0"]
    # the patch of the checkout that ran it rides along when that checkout has uncommitted changes
    committed = _git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert committed[0] == "res/t/ar-hsic-s0.json" and committed[1:] in ([], ["res/t/ar-hsic-s0.patch"])
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]
    assert not any("not committed" in line for line in said)


def test_a_result_outside_a_repository_is_kept_and_reported(tmp_path, fake_python):  # noqa: F811
    runs = protocol.plan("main", ["ar"], ["none"], [0], 2, "tiny")  # the fake binaries train 2 steps
    said = []
    outcomes = engine.execute(
        runs, tmp_path / "root", study="t", results_dir=tmp_path / "res", python=str(fake_python),
        options=LOCAL,
        say=said.append, commit=True,
    )  # fmt: skip
    assert outcomes == {"ar-none-s0": "done"} and (tmp_path / "res" / "t" / "ar-none-s0.json").exists()
    assert any("result not committed" in line and "by hand" in line for line in said)


def test_a_run_expected_to_end_after_the_deadline_waits_and_so_do_the_later_ones(tmp_path, fake_python):  # noqa: F811
    runs = protocol.plan("main", ["ar"], ["none"], [0, 1, 2], 2, "tiny")
    expected = {runs[0].name: 1.0, runs[1].name: 1000.0, runs[2].name: None}  # run 2: no estimate
    said = []
    outcomes = engine.execute(
        runs, tmp_path / "root", study="t", results_dir=tmp_path / "res", python=str(fake_python),
        options=LOCAL,
        say=said.append, deadline=time.monotonic() + 100, expected_seconds=lambda run: expected[run.name],
    )  # fmt: skip
    # run 1 would end after the deadline; run 2 would fit, but runs keep the plan's order
    assert list(outcomes.values()) == ["done", "deferred", "deferred"]
    assert "2 run(s) deferred" in said[-1]
