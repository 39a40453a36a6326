"""Runs the training binary in subprocesses for the end-to-end tests, and loads configs as the binaries do."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from absl import flags
from ml_collections import config_flags

from infotok_jax.training import reporting, workdir_lock

REPO = pathlib.Path(__file__).resolve().parent.parent
TOY_CONFIG = REPO / "tests" / "configs" / "toy_regression.py"
TOKENIZER_CONFIG = REPO / "experiments" / "configs" / "tokenizer.py"
HOST_CONFIG = REPO / "experiments" / "configs" / "host.py"


def env_for(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONFAULTHANDLER"] = "1"  # a hung or crashed run prints every thread's stack (`kill`)
    # the toy task (config.task="tests.toy_task:...") is imported from the repository from any cwd
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def train_command(workdir: pathlib.Path, config_args: str, config: pathlib.Path = TOY_CONFIG) -> list[str]:
    return [
        sys.executable,
        "-m",
        "infotok_jax.train",
        f"--config={config}:{config_args}",
        f"--workdir={workdir}",
    ]


def run_training(
    workdir, config_args, devices=4, config=TOY_CONFIG, timeout=300, extra_flags=(), extra_env=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*train_command(workdir, config_args, config), *extra_flags],
        env={**env_for(devices), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _sigint_as_from_a_terminal() -> None:
    # A test session started in the background (`nohup ... &`) ignores SIGINT, and its children inherit
    # that: Python then installs no KeyboardInterrupt handler. The binary is tested as a user starts it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(workdir, config_args, devices=4, config=TOY_CONFIG) -> subprocess.Popen:
    return subprocess.Popen(
        train_command(workdir, config_args, config),
        env=env_for(devices),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=_sigint_as_from_a_terminal,
    )


def wait_for_step(workdir: pathlib.Path, process: subprocess.Popen, step: int, timeout: float = 120) -> int:
    """Polls metrics.jsonl until it records `step` (or later); returns the latest recorded step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = reporting.read_metrics(workdir)
        if steps and max(steps) >= step:
            return max(steps)
        if process.poll() is not None:
            raise AssertionError(
                f"training exited early ({process.returncode}): {process.stderr.read()[-3000:]}"
            )
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"step {step} not reached in {timeout} s")


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
    """Sends `sig` and returns the exit status; a process still running after `timeout` is aborted so
    that faulthandler (PYTHONFAULTHANDLER, `env_for`) prints where each of its threads waits."""
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        process.wait(timeout=30)
        stacks = process.stderr.read()[-8000:] if process.stderr else "(stderr not captured)"
        raise AssertionError(
            f"still running {timeout} s after {signal.Signals(sig).name}:\n{stacks}"
        ) from None


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    directory = workdir / "checkpoints"
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def write_lock(workdir, host: str, pid: int, heartbeat: float | None = None) -> None:
    """A lock record; without `heartbeat`, as an older version (no heartbeat field) wrote it."""
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"host": host, "pid": pid, "time": 0.0}
    if heartbeat is not None:
        record["heartbeat"] = heartbeat
    (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(record))


def load_config(path: os.PathLike | str, *overrides: str):
    """The config exactly as the binaries build it: config_flags with lock_config=True, then overrides."""
    argv = ["prog", f"--config={path}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    return values.config


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"needs mount (root): mount {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def small_disk(path: pathlib.Path, size: str) -> Iterator[pathlib.Path]:
    """A tmpfs of `size` (e.g. '3m') at `path`: a real full disk, ENOSPC from the kernel."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow_disk(path: pathlib.Path, size: str) -> None:
    _mount("-o", f"remount,size={size}", str(path))


@contextlib.contextmanager
def read_only_view(source: pathlib.Path, path: pathlib.Path) -> Iterator[pathlib.Path]:
    """`source` bind-mounted read-only at `path` (root ignores permission bits; a read-only mount not)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
