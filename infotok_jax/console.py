"""Runs an absl binary's `main` as a program: `python -m infotok_jax.<binary>` or its console script.

Three things `app.run` alone gets wrong here:

- Help. absl prints `sys.modules['__main__'].__doc__` and the flags it keys to `sys.argv[0]`. Under a
  console script (`infotok-train`, `infotok-evaluate`) `__main__` is the generated wrapper, which has no
  docstring and defines no flags, so `--help` showed a bare usage line. The binary's docstring and its
  flags are lent to the wrapper here.
- A failed worker of a multi-process job. After `jax.distributed.initialize`, interpreter exit waits in
  `jax.distributed.shutdown()` for every other process (up to 5 minutes), so a process that failed
  stayed alive while the others waited for it in a collective, and a launcher watching exit codes never
  saw the failure. Once jax.distributed is initialized, an error exit here skips that wait
  (`os._exit` after printing the traceback and flushing the logs): the launcher sees the status at once,
  and on a pod the others lose the process's heartbeats and stop. A clean exit (status 0, also after a
  SIGTERM checkpoint) still shuts down normally.
- A pip install has no `experiments/configs`: `--config=host.py:...` names a packaged config
  (`infotok_jax.configs.resolve_argv`, the one place a `--config` value is resolved).
- User errors before `main`. Flag and config-file errors are one line and exit code 2
  (`flag_errors.parse_flags`). On a single process, SIGTERM before the trainer installs its own handler
  (start-up: building the task, compiling, restoring) unwinds like Ctrl-C (`raise_on_sigterm`, called
  by `binary_setup.start`), so `with` blocks release the workdir lock; either signal then ends the
  process with one line and status 128+N, no traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable

from absl import app, flags, logging

from infotok_jax import configs, flag_errors


class StopSignal(KeyboardInterrupt):
    """SIGTERM outside the training loop: unwinds the stack as Ctrl-C does (releasing the lock)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop_signal(signum, frame) -> None:
    raise StopSignal(signum)


def raise_on_sigterm() -> None:
    """Makes SIGTERM unwind like Ctrl-C until the training loop installs its own handler (single-process
    runs; with jax.distributed its preemption notifier owns SIGTERM)."""
    signal.signal(signal.SIGTERM, _raise_stop_signal)


def _stopped_message(signum: int) -> str:
    return (
        f"error: stopped by {signal.Signals(signum).name} outside the training loop (during start-up, or a "
        "second Ctrl-C), so nothing was saved now; the same command resumes from the last checkpoint in "
        "the workdir, if any"
    )


def _lend_help_to_wrapper(module_name: str) -> None:
    """Makes `--help` of a console script show `module_name`'s docstring and flags."""
    module = sys.modules[module_name]
    main_module = sys.modules["__main__"]
    if main_module is module:  # `python -m`: absl finds both itself
        return
    main_module.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _exit_now(status: int) -> None:
    """Ends the process with `status` without atexit handlers (jax.distributed's shutdown wait)."""
    logging.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _distributed() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def run(main: Callable[[list[str]], None], module_name: str) -> None:
    """`app.run(main)` for the binary defined in module `module_name` (pass `__name__`)."""
    _lend_help_to_wrapper(module_name)
    try:
        app.run(main, argv=configs.resolve_argv(sys.argv), flags_parser=flag_errors.parse_flags)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, StopSignal) else signal.SIGINT
        print(_stopped_message(signum), file=sys.stderr)
        if _distributed():
            _exit_now(128 + signum)
        sys.exit(128 + signum)
    except SystemExit as e:
        if e.code not in (None, 0) and _distributed():
            if not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
            _exit_now(e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException:
        if not _distributed():
            raise
        traceback.print_exc()
        _exit_now(1)
