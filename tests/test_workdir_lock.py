"""The workdir lock on its own: several runs racing to take over one stale lock, and the holder's heartbeat.
(Locks met by a training run are tested in test_checkpoint_integrity.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from infotok_jax.training import workdir_lock
from tests import training_harness as harness

_RACER = """
import sys, time
from infotok_jax.training import workdir_lock

stale = workdir_lock.WorkdirLock._stale
# every racer judges the lock stale before any of them acts: the widest window a takeover can have
workdir_lock.WorkdirLock._stale = lambda self, holder: (stale(self, holder), time.sleep(0.5))[0]
workdir, go = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not __import__("os").path.exists(go):
    time.sleep(0.005)
try:
    workdir_lock.WorkdirLock(workdir).acquire()
    print("won", flush=True)
except workdir_lock.WorkdirLockedError:
    print("refused", flush=True)
sys.stdin.read()  # holds the lock (if won) until the test closes stdin
"""


def test_of_several_runs_taking_over_one_stale_lock_exactly_one_wins(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    harness.write_lock(tmp_path, socket.gethostname(), dead.pid)
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=harness.env_for(1),
            cwd=harness.REPO,
        )
        for _ in range(4)
    ]
    try:
        assert [r.stdout.readline().strip() for r in racers] == ["ready"] * 4
        go.touch()
        outcomes = [r.stdout.readline().strip() for r in racers]
        holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
    finally:
        for r in racers:
            r.stdin.close()
            r.wait(timeout=60)
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"], outcomes
    assert holder["pid"] == racers[outcomes.index("won")].pid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", workdir_lock.LOCK_FILE]  # no claim left


def test_the_holder_refreshes_its_heartbeat_until_it_releases(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_SECONDS", 0.02)
    path = tmp_path / workdir_lock.LOCK_FILE
    with workdir_lock.WorkdirLock(tmp_path) as lock:
        first = json.loads(path.read_text())
        deadline = time.monotonic() + 10
        while json.loads(path.read_text())["heartbeat"] == first["heartbeat"]:
            assert time.monotonic() < deadline, "the heartbeat was never refreshed"
            time.sleep(0.01)
        later = json.loads(path.read_text())
        assert {k: later[k] for k in ("host", "pid", "time")} == {
            k: first[k] for k in ("host", "pid", "time")
        }
        assert later["heartbeat"] > first["heartbeat"]
    assert not path.exists() and not lock._beating.is_alive()
    assert os.listdir(tmp_path) == []  # no partial record left behind


def test_an_interruption_while_the_lock_is_taken_leaves_no_lock(tmp_path, monkeypatch):
    """Ctrl-C while the heartbeat thread starts (the file exists, `__enter__` raises, so `__exit__`
    never runs): the start-up signal test found the lock left behind in about 1 of 15 runs."""

    start = workdir_lock.threading.Thread.start

    def interrupted_start(thread):
        if thread.name == "workdir-lock-heartbeat":
            raise KeyboardInterrupt
        start(thread)

    monkeypatch.setattr(workdir_lock.threading.Thread, "start", interrupted_start)
    try:
        with workdir_lock.WorkdirLock(tmp_path):
            raise AssertionError("the lock was taken although its start was interrupted")
    except KeyboardInterrupt:
        pass
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    with workdir_lock.WorkdirLock(tmp_path):  # and the workdir is free for the next run
        assert (tmp_path / workdir_lock.LOCK_FILE).exists()
