"""One training run per workdir: a lock file that refuses a second concurrent writer.

Two trainings in one workdir race on the same checkpoint steps (each deletes the other's temporary
save). The trainer therefore holds `<workdir>/LOCK_FILE` for its whole run: a JSON record of host, pid
and start time, created with create-if-absent semantics on local disk (`O_CREAT | O_EXCL`) and removed
when the run ends, also on errors. Only process 0 of a multi-process run takes it.

A lock left by a run that died without removing it (kill -9, a lost machine) is stale:
- on the same host, a lock whose pid no longer runs (or is this process: a restarted container often
  reuses the pid) is taken over with a warning;
- otherwise the lock cannot be judged from here; the error names the holder and the file to delete
  (`rm <workdir>/train.lock`, or `gcloud storage rm gs://.../train.lock`) once that run is known to be
  gone.

On gs:// there is no create-if-absent through epath, so the lock is best effort there: it is written
when absent and read back, which catches a second run started seconds later but not two started within
the same instant.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

import jax
from absl import logging
from etils import epath
from orbax.checkpoint import multihost

from infotok_jax import storage
from infotok_jax.training import checkpointing

LOCK_FILE = "train.lock"


class WorkdirLockedError(checkpointing.IncompatibleWorkdirError):
    """Another training run holds the workdir."""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_shares = itertools.count()


def _share_from_process_0(text: str) -> str:
    """Process 0's `text` on every process, through the coordination service (no device collective)."""
    client = multihost.get_jax_distributed_client()
    key = f"infotok_workdir_lock/{next(_shares)}"
    if jax.process_index() == 0:
        client.key_value_set(key, text or "-")
        return text
    shared = client.blocking_key_value_get(key, 600_000)
    return "" if shared == "-" else f"process 0: {shared}"


class WorkdirLock:
    """Held by process 0 from `acquire` to `release`; a no-op on other processes."""

    def __init__(self, workdir: epath.PathLike):
        self.path = epath.Path(workdir) / LOCK_FILE
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        self._held = False

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises WorkdirLockedError naming the holder and how to break the lock."""
        refusal = ""
        if jax.process_index() == 0 and not self._try_create():
            holder = self._read_holder()
            if not self._stale(holder) or not self._take_over(holder):
                refusal = self._refusal(holder)
        self._held = jax.process_index() == 0 and not refusal
        if jax.process_count() > 1:  # every process stops, not only process 0
            refusal = _share_from_process_0(refusal)
        if refusal:
            raise WorkdirLockedError(refusal)
        return self

    def release(self) -> None:
        """Removes the lock file if this run still holds it."""
        if not self._held:
            return
        self._held = False
        try:
            if self._read_holder() == self.record:
                self.path.unlink()
        except OSError as e:
            logging.warning("Could not remove the workdir lock %s: %s", self.path, e)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _try_create(self) -> bool:
        text = json.dumps(self.record)
        if storage.is_remote(self.path):
            if self.path.exists():
                return False
            self.path.write_text(text)
            return self._read_holder() == self.record
        try:
            fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def _read_holder(self) -> dict | None:
        """The lock's record; None when it is absent or unreadable (e.g. cut by a crash mid-write)."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _stale(self, holder: dict | None) -> bool:
        return (
            holder is not None
            and holder.get("host") == self.record["host"]
            and isinstance(holder.get("pid"), int)
            # a restarted container often gets the dead run's pid: then the "running" holder is us
            and (holder["pid"] == os.getpid() or not _pid_running(holder["pid"]))
        )

    def _take_over(self, holder: dict) -> bool:
        logging.warning(
            "Taking over the stale workdir lock %s of pid %d on this host (%s), which no longer runs.",
            self.path,
            holder["pid"],
            holder["host"],
        )
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        return self._try_create()

    def _refusal(self, holder: dict | None) -> str:
        if holder is None:
            who = "a run whose lock record is unreadable"
        else:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("time", 0)))
            who = f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}"
        return (
            f"--workdir {self.path.parent} is in use by another training run ({who}; lock file {self.path}). "
            "Two runs in one workdir destroy each other's checkpoints: wait for it to end or use a new "
            f"--workdir. If that run is gone (its machine was lost), delete {self.path} and start again."
        )
