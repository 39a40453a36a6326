"""Flags and start-up shared by the binaries (training and evaluation).

Both binaries run the same way on one machine, a GPU cluster or a TPU pod: `--distributed` starts
multi-process JAX before any device is touched, a lost process makes the others exit after
`--heartbeat_timeout_seconds`, the persistent compilation cache is enabled, orbax's per-file INFO logs
are dropped and, against a GCS emulator, gcsfs's per-call credential warnings too (and so are the
tracebacks a full disk makes orbax's and tensorstore's background writes print: the binary reports it in
one line).
Import this module from a binary (it defines absl flags) and call `start()` in `main`.
"""

from __future__ import annotations

import logging as std_logging
import sys

from absl import flags, logging

from infotok_jax import console, storage

DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (TPU pods, SLURM, local multi-process)."
)
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds",
    100,
    "With --distributed: a process that sends no heartbeat for this long is declared lost, and the others "
    "exit with an error naming it instead of waiting in a collective forever.",
)
INITIALIZATION_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout_seconds", 300, "With --distributed: how long to wait for every process to join."
)


def _quiet_checkpoint_logs() -> None:
    """Orbax logs every file operation at INFO through absl; keep its warnings, drop the rest. A full
    disk makes each of its background threads (and asyncio, for each of its failed write tasks) log a
    traceback; the binary says it in one line instead."""

    def keep(record: std_logging.LogRecord) -> bool:
        from_asyncio = record.name == "asyncio"  # a failed save's tasks: "exception was never retrieved"
        if "/orbax/" not in record.pathname and not from_asyncio:
            return True
        error = record.exc_info[1] if record.exc_info else None
        disk_full = "No space left on device" in record.getMessage() or (
            error is not None and storage.is_disk_full(error)
        )
        return (from_asyncio or record.levelno >= std_logging.WARNING) and not disk_full

    for handler in [*std_logging.getLogger().handlers, logging.get_absl_handler().python_handler]:
        handler.addFilter(keep)


def _one_line_for_writes_after_an_aborted_save() -> None:
    """When a checkpoint save fails (a full disk), orbax closes its event loop while tensorstore still
    has writes in flight; each one that finishes later reports `Event loop is closed` as an unraisable
    traceback. The writes are abandoned either way (the step is not committed): say so once."""
    default_hook = sys.unraisablehook
    told = False

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        nonlocal told
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            if not told:
                logging.warning("Storage writes of an aborted checkpoint save ended after it; dropped.")
                told = True
            return
        default_hook(unraisable)

    sys.unraisablehook = hook


def start() -> None:
    """Multi-process start-up (when --distributed), the compilation cache and logging; call first."""
    from infotok_jax import distributed, storage

    storage.quiet_gcs_emulator_probe()  # before anything imports gcsfs
    _quiet_checkpoint_logs()
    _one_line_for_writes_after_an_aborted_save()
    if not DISTRIBUTED.value:  # multi-process: jax's preemption notifier owns SIGTERM
        console.raise_on_sigterm()
    distributed.initialize(
        DISTRIBUTED.value,
        initialization_timeout=INITIALIZATION_TIMEOUT.value,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT.value,
    )
    import jax

    from infotok_jax import compilation_cache

    compilation_cache.enable()
    logging.info(
        "JAX process %d/%d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
