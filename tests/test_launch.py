"""The local multi-process launcher (a real 2-process x 2-device JAX job, sibling kill, timeout, signal
forwarding, the grace periods before SIGKILL, a kill -9'd launcher, a real worker failing after start-up),
and the validation in `infotok_jax.distributed`.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from infotok_jax import distributed

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"

_spec = importlib.util.spec_from_file_location("local_multiprocess", LAUNCH / "local_multiprocess.py")
lmp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lmp)

# ------------------------------------------------------------------------------------ local multi-process

CHILD = textwrap.dedent(
    """
    import numpy as np
    from infotok_jax import distributed
    assert distributed.initialize(True) and distributed.initialize(True)  # second call is a no-op
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    counts = (jax.process_count(), jax.local_device_count(), jax.device_count())
    assert counts == (2, 2, 4), counts
    g = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data", None))
    pid = jax.process_index()
    arr = jax.make_array_from_process_local_data(sharding, g[4 * pid: 4 * pid + 4], g.shape)
    total = float(jax.jit(lambda a: jnp.sum(a * a), out_shardings=NamedSharding(sharding.mesh, P()))(arr))
    assert total == float((g * g).sum()), total
    print(f"RESULT process={pid} sum={total}")
    """
)


def test_local_launcher_runs_a_global_sum(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # XLA_FLAGS from conftest asks for 8 devices: overridden
    result = subprocess.run(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), "--num_processes=2",
         "--devices_per_process=2", "--timeout=120", "--", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    expected = float((np.arange(24, dtype=np.float64) ** 2).sum())
    for pid in (0, 1):
        assert f"[p{pid}] RESULT process={pid} sum={expected}" in result.stdout.splitlines()
    assert "children exited with [0, 0]" in result.stderr


def test_failed_child_stops_its_siblings():
    code = "import os, sys, time\nif os.environ['INFOTOK_PROCESS_ID'] == '1': sys.exit(3)\ntime.sleep(60)"
    start = time.monotonic()
    codes = lmp.launch([sys.executable, "-c", code], num_processes=2, devices_per_process=1)
    assert time.monotonic() - start < 10
    assert codes == [-signal.SIGTERM, 3]
    assert lmp.exit_code(codes, "failed") == 3


def test_child_stuck_after_its_sibling_finished_is_stopped():
    code = "import os, time\nif os.environ['INFOTOK_PROCESS_ID'] == '1': time.sleep(60)"
    start = time.monotonic()
    outcome = lmp.run([sys.executable, "-c", code], 2, 1, finish_seconds=0.5, failed_grace_seconds=1)
    assert time.monotonic() - start < 10
    assert outcome == lmp.Outcome([0, -signal.SIGTERM], "stuck", failed=1)
    assert lmp.exit_code(outcome.codes, outcome.reason, outcome.failed) == lmp.TIMEOUT_EXIT_CODE
    result = subprocess.run(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), "--finish_seconds=0.5", "--",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == lmp.TIMEOUT_EXIT_CODE, result.stderr
    assert "p1 still running 0.5 s after p0 exited 0" in result.stderr
    assert "p1 was stuck after a sibling finished (signal 15 (SIGTERM) once stopped)" in result.stderr


def test_timeout_stops_all_children():
    start = time.monotonic()
    codes = lmp.launch(["sleep", "60"], num_processes=2, devices_per_process=1, timeout=0.5)
    assert time.monotonic() - start < 10
    assert codes == [-signal.SIGTERM, -signal.SIGTERM]
    assert lmp.exit_code(codes, "timeout") == lmp.TIMEOUT_EXIT_CODE


def test_sigterm_to_launcher_reaches_children(tmp_path):
    code = (
        "import os, time\n"
        f"open(os.path.join({str(tmp_path)!r}, 'pid' + os.environ['INFOTOK_PROCESS_ID']), 'w')"
        ".write(str(os.getpid()))\ntime.sleep(60)"
    )
    launcher = subprocess.Popen(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), "--", sys.executable, "-c", code],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pid_files = [tmp_path / "pid0", tmp_path / "pid1"]
    deadline = time.monotonic() + 20
    while not all(f.exists() and f.read_text() for f in pid_files):
        assert time.monotonic() < deadline and launcher.poll() is None, "children did not start"
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=15) == 128 + signal.SIGTERM  # the children's status: killed by SIGTERM
    for f in pid_files:
        with pytest.raises(ProcessLookupError):
            os.kill(int(f.read_text()), 0)


def test_child_env_and_argument_checks():
    env = lmp.child_env({"XLA_FLAGS": "--foo --xla_force_host_platform_device_count=8"}, 1, 3, 2, 4242)
    assert env["XLA_FLAGS"].split() == ["--foo", "--xla_force_host_platform_device_count=2"]
    assert (env["INFOTOK_COORDINATOR_ADDRESS"], env["INFOTOK_NUM_PROCESSES"], env["INFOTOK_PROCESS_ID"]) == (
        "127.0.0.1:4242", "3", "1")  # fmt: skip
    assert env["JAX_PLATFORMS"] == "cpu"
    with pytest.raises(ValueError, match="command is empty"):
        lmp.launch([], 2, 1)
    with pytest.raises(ValueError, match="num_processes"):
        lmp.launch(["true"], 0, 1)


# A fake worker: writes its pid, then idles. On SIGTERM it "checkpoints" for DELAY seconds, writes
# saved<id> and exits 0, or ignores SIGTERM when DELAY is negative (a worker hung in a collective).
# Process FAIL_RANK instead exits with FAIL_STATUS.
WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    out, delay = sys.argv[1], float(sys.argv[2])
    rank = os.environ["INFOTOK_PROCESS_ID"]
    if os.environ.get("FAIL_RANK") == rank:  # fails at start-up, once process 0 is up
        while not os.path.exists(os.path.join(out, "pid0")):
            time.sleep(0.01)
        sys.exit(int(os.environ["FAIL_STATUS"]))

    def checkpoint_and_exit(signum, frame):
        time.sleep(delay)
        with open(os.path.join(out, "saved" + rank), "w") as f:
            f.write("ok")
        sys.exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if delay < 0 else checkpoint_and_exit)
    with open(os.path.join(out, "pid" + rank), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture
def reap_workers(tmp_path):
    """Kills, after the test, any fake worker still running (a failing test must not leave them)."""
    yield
    for pid_file in tmp_path.glob("pid[0-9]"):
        if pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _start_launcher(tmp_path, delay: float, *flags: str, env=None) -> subprocess.Popen:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), *flags, "--",
         sys.executable, str(worker), str(tmp_path), str(delay)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _worker_pids(tmp_path, launcher: subprocess.Popen, count: int = 2) -> list[int]:
    files = [tmp_path / f"pid{i}" for i in range(count)]
    deadline = time.monotonic() + 20
    while not all(f.exists() and f.read_text() for f in files):
        assert time.monotonic() < deadline and launcher.poll() is None, "workers did not start"
        time.sleep(0.05)
    return [int(f.read_text()) for f in files]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (an orphan's zombie, left for a non-reaping init, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_launcher_waits_for_the_checkpoints(tmp_path, reap_workers):
    """Workers that take 5.5 s to checkpoint after SIGTERM finish it (the old 5 s grace killed them)."""
    launcher = _start_launcher(tmp_path, 5.5, "--grace_seconds=60")
    pids = _worker_pids(tmp_path, launcher)
    launcher.send_signal(signal.SIGTERM)
    stderr = launcher.communicate(timeout=60)[1]
    assert launcher.returncode == 0, stderr  # every worker checkpointed and exited 0
    assert (tmp_path / "saved0").read_text() == (tmp_path / "saved1").read_text() == "ok"
    assert not any(_alive(pid) for pid in pids)
    assert "got SIGTERM" in stderr and "SIGKILL after 60 s" in stderr


def test_sigkill_after_the_grace_period_or_a_second_signal(tmp_path, reap_workers):
    """Workers that ignore SIGTERM are killed after --grace_seconds, or at once on a second signal."""
    launcher = _start_launcher(tmp_path, -1, "--grace_seconds=1")
    pids = _worker_pids(tmp_path, launcher)
    start = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    stderr = launcher.communicate(timeout=30)[1]
    assert 1 <= time.monotonic() - start < 15
    assert launcher.returncode == 128 + signal.SIGKILL, stderr
    assert "still running 1 s after SIGTERM" in stderr and not any(_alive(pid) for pid in pids)

    for name in ("pid0", "pid1"):
        (tmp_path / name).unlink()
    launcher = _start_launcher(tmp_path, -1, "--grace_seconds=300")
    _worker_pids(tmp_path, launcher)
    launcher.send_signal(signal.SIGINT)
    time.sleep(0.5)
    launcher.send_signal(signal.SIGINT)
    stderr = launcher.communicate(timeout=30)[1]
    assert launcher.returncode == 128 + signal.SIGKILL, stderr
    assert "second signal" in stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_killed_launcher_takes_its_workers_down(tmp_path, reap_workers):
    """kill -9 of the launcher: each worker gets SIGTERM, checkpoints and exits (no unsupervised run)."""
    launcher = _start_launcher(tmp_path, 0.2)
    pids = _worker_pids(tmp_path, launcher)
    launcher.kill()
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived the killed launcher"
        time.sleep(0.05)
    assert (tmp_path / "saved0").read_text() == (tmp_path / "saved1").read_text() == "ok"


def test_worker_failing_at_start_up_stops_a_stuck_sibling(tmp_path, reap_workers):
    """p1 exits 1 at once while p0 ignores SIGTERM: SIGKILL after --failed_grace_seconds, status 1."""
    start = time.monotonic()
    launcher = _start_launcher(
        tmp_path, -1, "--failed_grace_seconds=1", env={"FAIL_RANK": "1", "FAIL_STATUS": "1"}
    )
    stderr = launcher.communicate(timeout=60)[1]
    assert time.monotonic() - start < 20
    assert launcher.returncode == 1, stderr
    assert "p1 exited with status 1" in stderr and "p1 failed with status 1" in stderr
    assert "children exited with [-9, 1]" in stderr
    assert not _alive(int((tmp_path / "pid0").read_text()))


def test_exit_code_follows_the_children():
    assert lmp.exit_code([0, 0], "signal") == 0
    assert lmp.exit_code([-signal.SIGTERM, 3], "failed", failed=1) == 3
    assert lmp.exit_code([0, -signal.SIGKILL], "failed", failed=1) == 128 + signal.SIGKILL
    assert lmp.exit_code([-signal.SIGTERM, -signal.SIGKILL], "failed", failed=1) == 128 + signal.SIGKILL
    assert lmp.exit_code([0, 0], "timeout") == lmp.TIMEOUT_EXIT_CODE
    assert lmp.describe(-signal.SIGKILL) == "signal 9 (SIGKILL)" and lmp.describe(2) == "status 2"


FAILING_AFTER_INIT = textwrap.dedent(
    """
    import os, time
    from infotok_jax import console, distributed

    def main(argv):
        distributed.initialize(True)
        if os.environ["INFOTOK_PROCESS_ID"] == "1":
            raise RuntimeError("process 1 failed after start-up")
        time.sleep(120)

    console.run(main, __name__)
    """
)


def test_worker_failing_after_distributed_start_up_is_noticed(tmp_path):
    """A real 2-process JAX job whose process 1 raises after `jax.distributed.initialize`: it exits at once
    (instead of waiting in jax.distributed.shutdown for process 0) and the launcher stops process 0."""
    script = tmp_path / "child.py"
    script.write_text(FAILING_AFTER_INIT)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), "--failed_grace_seconds=2", "--",
         sys.executable, str(script)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=110,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - start < 60
    assert "[p1] RuntimeError: process 1 failed after start-up" in result.stdout
    assert "p1 exited with status 1" in result.stderr


# --------------------------------------------------------------------------------- distributed.initialize

FULL_ENV = {
    "INFOTOK_COORDINATOR_ADDRESS": "10.0.0.1:8476",
    "INFOTOK_NUM_PROCESSES": "4",
    "INFOTOK_PROCESS_ID": "2",
}


def test_resolve_settings_precedence():
    assert distributed.resolve_settings(environ={}).auto_detect
    assert distributed.resolve_settings(environ=FULL_ENV) == distributed.Settings("10.0.0.1:8476", 4, 2)
    explicit = distributed.resolve_settings(process_id=3, environ=FULL_ENV)
    assert explicit == distributed.Settings("10.0.0.1:8476", 4, 3)


@pytest.mark.parametrize(
    "kwargs, environ, message",
    [
        ({"coordinator_address": "127.0.0.1:1234"}, {}, "INFOTOK_PROCESS_ID"),
        ({}, {"INFOTOK_COORDINATOR_ADDRESS": "h:1", "INFOTOK_NUM_PROCESSES": "2"}, "INFOTOK_PROCESS_ID"),
        ({"process_id": 0}, {}, "coordinator_address"),
        ({}, {**FULL_ENV, "INFOTOK_PROCESS_ID": "4"}, "INFOTOK_PROCESS_ID=4 must satisfy"),
        ({}, {**FULL_ENV, "INFOTOK_NUM_PROCESSES": "two"}, "INFOTOK_NUM_PROCESSES='two' is not an integer"),
        ({"coordinator_address": "localhost"}, FULL_ENV, "host:port"),
        ({"num_processes": 0}, FULL_ENV, "at least 1"),
    ],
)
def test_resolve_settings_rejects_partial_or_bad(kwargs, environ, message):
    with pytest.raises(ValueError, match=message):
        distributed.resolve_settings(**kwargs, environ=environ)


def test_initialize_partial_env_raises_and_disabled_is_noop(monkeypatch):
    for name in FULL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFOTOK_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="Partial distributed settings"):
        distributed.initialize(True)
    assert distributed.initialize(False) is False
    assert not jax.distributed.is_initialized()
    assert jax.process_count() == 1


def test_disabled_with_launcher_env_warns(monkeypatch, caplog):
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level("WARNING", logger="infotok_jax.distributed"):
        assert distributed.initialize(False) is False
    assert "Pass --distributed" in caplog.text and "INFOTOK_PROCESS_ID" in caplog.text
