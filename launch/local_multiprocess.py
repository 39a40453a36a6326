"""Runs one command as N cooperating JAX processes on this machine, each with its own simulated CPU devices.

    python launch/local_multiprocess.py --num_processes=2 --devices_per_process=2 -- \
        python -m infotok_jax.train --config=experiments/configs/host.py:tiny --workdir=/tmp/w --distributed

Each child gets INFOTOK_COORDINATOR_ADDRESS=127.0.0.1:<free port>, INFOTOK_NUM_PROCESSES, INFOTOK_PROCESS_ID
(read by `infotok_jax.distributed.initialize`), JAX_PLATFORMS=cpu and
XLA_FLAGS=--xla_force_host_platform_device_count=<devices_per_process>. Output is streamed line by line
with a `[p<i>]` prefix. This is what the multi-process tests use, and a way to debug multi-host code paths
without a pod.

Stopping: the children are stopped with SIGTERM to each child's process group (the trainer checkpoints
on SIGTERM and exits 0), and SIGKILL only once a grace period has passed:
- SIGINT or SIGTERM to the launcher, or --timeout: `--grace_seconds` (default 120), long enough for a
  checkpoint; a second SIGINT/SIGTERM during it kills at once;
- a child exiting non-zero, at any time including start-up: the others get `--failed_grace_seconds`
  (default 10), since a multi-process checkpoint cannot complete without the failed process;
- a child exiting 0 while a sibling is still running `--finish_seconds` (default 300) later: the sibling
  is stuck (say, in a collective its finished peers will never join) and gets `--failed_grace_seconds`.
On Linux each child also gets SIGTERM when the launcher itself dies, even by kill -9
(prctl(PR_SET_PDEATHSIG)); elsewhere children outlive a killed launcher. The exit status is the
children's: 0 when all exited 0 (also after a SIGTERM they handled), the failed child's status (128+N for
a child killed by signal N), or 124 on timeout or a stuck sibling.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import portpicker

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")
_POLL_SECONDS = 0.05
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GRACE_SECONDS = 120.0
FAILED_GRACE_SECONDS = 10.0
FINISH_SECONDS = 300.0
TIMEOUT_EXIT_CODE = 124


class Outcome(NamedTuple):
    """How a launch ended: each child's exit code and why the launcher stopped.

    `reason` is "done" (every child exited 0), "failed" (child `failed` exited non-zero first),
    "stuck" (child `failed` still ran `finish_seconds` after a sibling exited 0), "timeout" or "signal"
    (the launcher got `signum`). Codes follow `subprocess`: minus N for a child
    killed by signal N.
    """

    codes: list[int]
    reason: str
    failed: int | None = None
    signum: int | None = None


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


def describe(code: int) -> str:
    """A child's exit code in words: "status 3" or "signal 9 (SIGKILL)"."""
    if code >= 0:
        return f"status {code}"
    try:
        return f"signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"signal {-code}"


def _die_with_launcher() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGTERM the child when the launcher dies; None elsewhere.

    The signal is tied to the launching thread, so `launch` must be called from a thread that outlives
    the children (the main thread, as the command line does).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    launcher_pid = os.getpid()

    def preexec() -> None:
        prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != launcher_pid:  # the launcher died before the request took effect
            os._exit(128 + signal.SIGTERM)

    return preexec


def _pump(stream, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            sys.stdout.flush()
    stream.close()


def _say(message: str) -> None:
    print(f"[launcher] {message}", file=sys.stderr, flush=True)


def _signal_groups(procs: Sequence[subprocess.Popen], signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signum)
            except ProcessLookupError:
                pass


def _stop(procs: Sequence[subprocess.Popen], grace_seconds: float, received: list[int]) -> None:
    """SIGTERM every live child's process group; SIGKILL what is left after `grace_seconds`.

    A signal arriving at the launcher while it waits (a second Ctrl-C) cuts the grace period short.
    """
    if all(p.poll() is not None for p in procs):
        return
    _signal_groups(procs, signal.SIGTERM)
    already = len(received)
    deadline = time.monotonic() + grace_seconds
    while any(p.poll() is None for p in procs):
        if len(received) > already:
            _say("second signal: killing the children now.")
            break
        if time.monotonic() > deadline:
            _say(f"children still running {grace_seconds:g} s after SIGTERM: killing them.")
            break
        time.sleep(_POLL_SECONDS)
    _signal_groups(procs, signal.SIGKILL)
    for p in procs:
        p.wait()


def launch(
    command: list[str],
    num_processes: int,
    devices_per_process: int,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace_seconds: float = GRACE_SECONDS,
    failed_grace_seconds: float = FAILED_GRACE_SECONDS,
    finish_seconds: float = FINISH_SECONDS,
) -> list[int]:
    """Runs `command` as `num_processes` JAX processes; returns their exit codes in process order.

    `env` adds variables to this process's environment for every child. A child stopped by the launcher
    (after a sibling failed or on timeout) reports minus the signal number, as `subprocess` does, unless it
    handled SIGTERM. If the launcher gets SIGINT or SIGTERM, it stops the children and then re-raises the
    signal to itself (so SIGINT surfaces as KeyboardInterrupt). Raises ValueError for an empty command or
    non-positive counts.
    """
    outcome = run(
        command,
        num_processes,
        devices_per_process,
        env,
        timeout,
        grace_seconds,
        failed_grace_seconds,
        finish_seconds,
    )
    if outcome.signum is not None:
        signal.raise_signal(outcome.signum)
    return outcome.codes


def run(
    command: list[str],
    num_processes: int,
    devices_per_process: int,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace_seconds: float = GRACE_SECONDS,
    failed_grace_seconds: float = FAILED_GRACE_SECONDS,
    finish_seconds: float = FINISH_SECONDS,
) -> Outcome:
    """`launch` without re-raising a received signal: says why it stopped instead."""
    if not command:
        raise ValueError("command is empty: pass the program to run after `--`.")
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes} must be at least 1.")
    if devices_per_process < 1:
        raise ValueError(f"devices_per_process={devices_per_process} must be at least 1.")
    if min(grace_seconds, failed_grace_seconds, finish_seconds) < 0:
        raise ValueError(
            f"grace_seconds={grace_seconds}, failed_grace_seconds={failed_grace_seconds}, "
            f"finish_seconds={finish_seconds}: each must be >= 0."
        )
    base = {**os.environ, **(env or {})}
    port = portpicker.pick_unused_port()
    lock = threading.Lock()
    received: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))

    preexec = _die_with_launcher()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    reason, failed = "done", None
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
                preexec_fn=preexec,
            )
            procs.append(p)
            pump = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}]", lock), daemon=True)
            pump.start()
            pumps.append(pump)
        deadline = None if timeout is None else time.monotonic() + timeout
        first_finish = None
        while True:
            codes = [p.poll() for p in procs]
            failures = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failures:
                reason, failed = "failed", failures[0]
                _say(
                    f"p{failed} exited with {describe(codes[failed])}; stopping the others "
                    f"(SIGTERM, SIGKILL after {failed_grace_seconds:g} s)."
                )
                break
            if all(c == 0 for c in codes):
                break
            if first_finish is None and 0 in codes:
                first_finish = time.monotonic()
            if first_finish is not None and time.monotonic() - first_finish > finish_seconds:
                reason, failed = "stuck", codes.index(None)
                _say(
                    f"p{failed} still running {finish_seconds:g} s after p{codes.index(0)} exited 0; "
                    f"stopping it (SIGTERM, SIGKILL after {failed_grace_seconds:g} s)."
                )
                break
            if received:
                reason = "signal"
                _say(
                    f"got {signal.Signals(received[0]).name}: SIGTERM to the children, SIGKILL after "
                    f"{grace_seconds:g} s (signal again to kill now)."
                )
                break
            if deadline is not None and time.monotonic() > deadline:
                reason = "timeout"
                _say(
                    f"timeout of {timeout:g} s reached: SIGTERM to the children, SIGKILL after "
                    f"{grace_seconds:g} s."
                )
                break
            time.sleep(_POLL_SECONDS)
    finally:
        _stop(procs, grace_seconds if reason in ("signal", "timeout") else failed_grace_seconds, received)
        for pump in pumps:
            pump.join(timeout=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return Outcome([p.returncode for p in procs], reason, failed, received[0] if received else None)


def exit_code(codes: Sequence[int], reason: str, failed: int | None = None) -> int:
    """One exit status for the launcher, in shell terms (128+N for a child killed by signal N).

    124 on timeout or when a child was stuck after a sibling finished; else child `failed`'s status when
    given, else the first positive status, else the first non-zero one; 0 when every child exited 0.
    """
    if reason in ("timeout", "stuck"):
        return TIMEOUT_EXIT_CODE
    order = ([codes[failed]] if failed is not None else []) + [c for c in codes if c > 0] + list(codes)
    for code in order:
        if code != 0:
            return code if code > 0 else 128 - code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_processes", type=int, default=2, help="JAX processes to start (default 2).")
    parser.add_argument(
        "--devices_per_process", type=int, default=1, help="Simulated CPU devices per process (default 1)."
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="Seconds before the children are stopped."
    )
    parser.add_argument(
        "--grace_seconds",
        type=float,
        default=GRACE_SECONDS,
        help="After SIGINT/SIGTERM to the launcher or --timeout: seconds between SIGTERM to the children "
        f"(they checkpoint) and SIGKILL (default {GRACE_SECONDS:g}).",
    )
    parser.add_argument(
        "--failed_grace_seconds",
        type=float,
        default=FAILED_GRACE_SECONDS,
        help="After a child exits non-zero: seconds between SIGTERM to the others and SIGKILL "
        f"(default {FAILED_GRACE_SECONDS:g}).",
    )
    parser.add_argument(
        "--finish_seconds",
        type=float,
        default=FINISH_SECONDS,
        help="Seconds a child may keep running after a sibling exited 0 before it counts as stuck and is "
        f"stopped like a failure (default {FINISH_SECONDS:g}).",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- followed by the command to run.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        outcome = run(
            command,
            args.num_processes,
            args.devices_per_process,
            None,
            args.timeout,
            args.grace_seconds,
            args.failed_grace_seconds,
            args.finish_seconds,
        )
    except ValueError as e:
        parser.error(str(e))
    status = exit_code(outcome.codes, outcome.reason, outcome.failed)
    why = ""
    if outcome.failed is not None:
        how = describe(outcome.codes[outcome.failed])
        why = (
            f"p{outcome.failed} was stuck after a sibling finished ({how} once stopped); "
            if outcome.reason == "stuck"
            else f"p{outcome.failed} failed with {how}; "
        )
    _say(f"{why}children exited with {outcome.codes}; exit status {status}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
