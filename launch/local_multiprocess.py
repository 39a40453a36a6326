"""Runs one command as N cooperating JAX processes on this machine, each with its own simulated CPU devices.

    python launch/local_multiprocess.py --num_processes=2 --devices_per_process=2 -- \
        python -m infotok_jax.train --config=experiments/configs/host.py:tiny --workdir=/tmp/w --distributed

Each child gets INFOTOK_COORDINATOR_ADDRESS=127.0.0.1:<free port>, INFOTOK_NUM_PROCESSES, INFOTOK_PROCESS_ID
(read by `infotok_jax.distributed.initialize`), JAX_PLATFORMS=cpu and
XLA_FLAGS=--xla_force_host_platform_device_count=<devices_per_process>. Output is streamed line by line
with a `[p<i>]` prefix. When a child fails, or the timeout passes, or the launcher gets SIGINT/SIGTERM, the
other children are terminated (SIGTERM to each child's process group, SIGKILL after a grace period), so a
crashed rank never leaves its peers blocked in a collective. This is what the multi-process tests use, and
a way to debug multi-host code paths without a pod.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import portpicker

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")
_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.05
TIMEOUT_EXIT_CODE = 124


def child_env(
    base: Mapping[str, str], process_id: int, num_processes: int, devices_per_process: int, port: int
) -> dict[str, str]:
    """Environment for child `process_id`: `base` plus coordinator settings and the CPU device count."""
    env = dict(base)
    xla_flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    xla_flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    env.update(
        INFOTOK_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        INFOTOK_NUM_PROCESSES=str(num_processes),
        INFOTOK_PROCESS_ID=str(process_id),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join(xla_flags),
        PYTHONUNBUFFERED="1",
    )
    return env


def _pump(stream, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            sys.stdout.flush()
    stream.close()


def _say(message: str) -> None:
    print(f"[launcher] {message}", file=sys.stderr, flush=True)


def _terminate(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every live child's process group, then SIGKILL whatever is left after the grace period."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _GRACE_SECONDS
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def launch(
    command: list[str],
    num_processes: int,
    devices_per_process: int,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[int]:
    """Runs `command` as `num_processes` JAX processes; returns their exit codes in process order.

    `env` adds variables to this process's environment for every child. A child stopped by the launcher
    (after a sibling failed or on timeout) reports minus the signal number, as `subprocess` does. If the
    launcher gets SIGINT or SIGTERM, it stops the children and then re-raises the signal to itself (so
    SIGINT surfaces as KeyboardInterrupt). Raises ValueError for an empty command or non-positive counts.
    """
    return _run(command, num_processes, devices_per_process, env, timeout)[0]


def _run(
    command: list[str],
    num_processes: int,
    devices_per_process: int,
    env: Mapping[str, str] | None,
    timeout: float | None,
) -> tuple[list[int], str]:
    """`launch`, also returning why it stopped: "done", "failed" or "timeout"."""
    if not command:
        raise ValueError("command is empty: pass the program to run after `--`.")
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes} must be at least 1.")
    if devices_per_process < 1:
        raise ValueError(f"devices_per_process={devices_per_process} must be at least 1.")
    base = {**os.environ, **(env or {})}
    port = portpicker.pick_unused_port()
    lock = threading.Lock()
    received: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))

    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    reason = "done"
    try:
        for i in range(num_processes):
            p = subprocess.Popen(
                command,
                env=child_env(base, i, num_processes, devices_per_process, port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            procs.append(p)
            pump = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}]", lock), daemon=True)
            pump.start()
            pumps.append(pump)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                reason = "failed"
                _say(f"p{failed[0]} exited with {codes[failed[0]]}; terminating the others.")
                break
            if all(c == 0 for c in codes):
                break
            if received:
                _say(f"got signal {received[0]}; terminating the children.")
                break
            if deadline is not None and time.monotonic() > deadline:
                reason = "timeout"
                _say(f"timeout of {timeout} s reached; terminating the children.")
                break
            time.sleep(_POLL_SECONDS)
    finally:
        _terminate(procs)
        for pump in pumps:
            pump.join(timeout=_GRACE_SECONDS)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        _say(f"children exited with {[p.returncode for p in procs]}")
        signal.raise_signal(received[0])
    return [p.returncode for p in procs], reason


def exit_code(codes: Sequence[int], reason: str) -> int:
    """One exit status for the launcher: 0 if all succeeded, 124 on timeout, else the first failure's code."""
    if reason == "timeout":
        return TIMEOUT_EXIT_CODE
    for code in codes:
        if code > 0:
            return code
    return 0 if all(code == 0 for code in codes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_processes", type=int, default=2, help="JAX processes to start (default 2).")
    parser.add_argument(
        "--devices_per_process", type=int, default=1, help="Simulated CPU devices per process (default 1)."
    )
    parser.add_argument("--timeout", type=float, default=None, help="Seconds before all children are killed.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- followed by the command to run.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        codes, reason = _run(command, args.num_processes, args.devices_per_process, None, args.timeout)
    except ValueError as e:
        parser.error(str(e))
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    _say(f"children exited with {codes}")
    return exit_code(codes, reason)


if __name__ == "__main__":
    sys.exit(main())
