"""One training run per workdir: a lock file that refuses a second concurrent writer.

Two trainings in one workdir race on the same checkpoint steps (each deletes the other's temporary
save). The trainer therefore holds `<workdir>/LOCK_FILE` for its whole run: a JSON record of host, pid
and start time, created only if absent (`storage.create_exclusive`) and removed when the run ends, also
on errors. Only process 0 of a multi-process run takes it.

While it runs, the holder refreshes the record's `heartbeat` every `HEARTBEAT_SECONDS` from a
background thread, independent of how long a step, a compilation or an evaluation takes. A lock left by a
run that died without removing it (kill -9, a lost machine) is stale and taken over with a warning:
- on the same host, when its pid no longer runs (or is this process: a restarted container often reuses
  the pid);
- from any host, when its heartbeat is older than `STALE_AFTER_SECONDS` (a pod slice recreated after a
  preemption comes back under new host names; the margin also absorbs clock skew between hosts).
A lock without a heartbeat (written by an older version) on another host cannot be judged from here; the
error names the holder and the file to delete (`rm <workdir>/train.lock`, or `gcloud storage rm
gs://.../train.lock`) once that run is known to be gone. Several runs taking over one stale lock at once
are serialized by a claim file created only if absent (`_take_over`): exactly one of them gets the lock.

On gs:// the record is created with the bucket's "only if absent" precondition, so of two runs started
in the same instant exactly one gets the lock there too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import socket
import threading
import time

import jax
from absl import logging
from etils import epath
from orbax.checkpoint import multihost

from infotok_jax import storage
from infotok_jax.training import checkpointing

LOCK_FILE = "train.lock"
HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 900.0
CLAIM_EXPIRES_AFTER_SECONDS = 60.0  # a takeover claim lives milliseconds unless its taker died
_IDENTITY = ("host", "pid", "time")  # the record's fields that name one run (the heartbeat changes)


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


def _same_run(record: dict | None, other: dict) -> bool:
    return record is not None and all(record.get(k) == other.get(k) for k in _IDENTITY)


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
        now = time.time()
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "time": now, "heartbeat": now}
        self._held = False
        self._stop_beating = threading.Event()
        self._beating: threading.Thread | None = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises WorkdirLockedError naming the holder and how to break the lock.

        Interrupted on the way (Ctrl-C or SIGTERM while the heartbeat thread starts: the file exists, and
        a `with` block whose `__enter__` raises never calls `__exit__`), it lets go of what it took."""
        try:
            self._acquire()
        except BaseException:
            self._held = False
            self._let_go()
            raise
        return self

    def _acquire(self) -> None:
        refusal = ""
        if jax.process_index() == 0 and not self._try_create():
            holder = self._read_holder()
            if not self._stale(holder) or not self._take_over(holder):
                refusal = self._refusal(self._read_holder() or holder)  # a winning taker, if any
        self._held = jax.process_index() == 0 and not refusal
        if self._held:
            self._beating = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
            self._beating.start()
        if jax.process_count() > 1:  # every process stops, not only process 0
            refusal = _share_from_process_0(refusal)
        if refusal:
            raise WorkdirLockedError(refusal)

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if this run still holds it."""
        if self._held:
            self._held = False
            self._let_go()

    def _let_go(self) -> None:
        """Stops the heartbeat, if started, and removes the lock file if it names this run."""
        self._stop_beating.set()
        if self._beating is not None and self._beating.is_alive():
            self._beating.join()
        try:
            if self._is_ours(self._read_holder()):
                self.path.unlink()
        except OSError as e:
            logging.warning("Could not remove the workdir lock %s: %s", self.path, e)

    def _beat(self) -> None:
        """Refreshes the heartbeat until `release`, as long as the file still names this run."""
        # Ctrl-C and SIGTERM are for the main thread: taken here, they would not wake its waits (a
        # start-up's sleep ran on for minutes with the signal pending)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while not self._stop_beating.wait(HEARTBEAT_SECONDS):
            try:
                if not self._is_ours(self._read_holder()):
                    logging.warning(
                        "The workdir lock %s no longer names this run; not refreshing it.", self.path
                    )
                    return
                self.record["heartbeat"] = time.time()
                self._write(json.dumps(self.record))
            except OSError as e:  # a bucket hiccup: the next beat tries again, well within the stale margin
                logging.warning("Could not refresh the workdir lock %s: %s", self.path, e)

    def _write(self, text: str) -> None:
        """Replaces the record whole: readers never see a half-written file."""
        if storage.is_remote(self.path):
            self.path.write_text(text)  # an object upload is atomic
            return
        partial = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, self.path)

    def _is_ours(self, holder: dict | None) -> bool:
        return _same_run(holder, self.record)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _try_create(self) -> bool:
        return storage.create_exclusive(self.path, json.dumps(self.record))

    def _read_holder(self) -> dict | None:
        """The lock's record; None when it is absent or unreadable (e.g. cut by a crash mid-write)."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _stale(self, holder: dict | None) -> bool:
        return holder is not None and (self._dead_here(holder) or self._silent_for(holder) is not None)

    def _dead_here(self, holder: dict) -> bool:
        return (
            holder.get("host") == self.record["host"]
            and isinstance(holder.get("pid"), int)
            # a restarted container often gets the dead run's pid: then the "running" holder is us
            and (holder["pid"] == os.getpid() or not _pid_running(holder["pid"]))
        )

    def _silent_for(self, holder: dict) -> float | None:
        """Seconds since the holder's last heartbeat when that is over `STALE_AFTER_SECONDS`, else None."""
        heartbeat = holder.get("heartbeat")
        if not isinstance(heartbeat, int | float):
            return None
        silent = time.time() - heartbeat
        return silent if silent > STALE_AFTER_SECONDS else None

    def _take_over(self, holder: dict) -> bool:
        """Replaces the stale `holder`'s record with this run's; of concurrent takers exactly one wins.

        Unlinking the lock and creating it again let a late taker delete the fresh lock of the one that
        had just taken over, and then create its own: two holders. Here each taker first creates a claim
        file named after the stale record, only if absent (`storage.create_exclusive`, as the lock
        itself); the one that gets it replaces the record whole (a rename on disk, one upload on a
        bucket) only if the lock still holds that stale record, then drops the claim.
        """
        if self._dead_here(holder):
            why = "which no longer runs"
        else:
            silent = self._silent_for(holder)
            why = f"whose heartbeat stopped {silent:.0f} s ago (stale after {STALE_AFTER_SECONDS:g} s)"
        logging.warning(
            "Taking over the stale workdir lock %s of pid %s on host %s, %s.",
            self.path,
            holder.get("pid"),
            holder.get("host"),
            why,
        )
        claim = self._claim_path(holder)
        if not self._claim(claim):
            return False
        try:
            if not _same_run(self._read_holder(), holder):
                return False  # another taker replaced it (and may already have released it)
            self._write(json.dumps(self.record))
            return True
        finally:
            try:
                claim.unlink()
            except FileNotFoundError:
                pass

    def _claim_path(self, holder: dict) -> epath.Path:
        identity = json.dumps({k: holder.get(k) for k in _IDENTITY}, sort_keys=True)
        return self.path.with_name(
            f"{LOCK_FILE}.takeover-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        )

    def _claim(self, claim: epath.Path) -> bool:
        """Creates `claim` if absent; a claim left by a taker that died mid-takeover expires."""
        if storage.create_exclusive(claim, json.dumps(self.record)):
            return True
        try:
            claimed_at = json.loads(claim.read_text()).get("time", 0.0)
        except (OSError, ValueError, AttributeError):
            claimed_at = 0.0  # cut by a crash mid-write
        if time.time() - claimed_at < CLAIM_EXPIRES_AFTER_SECONDS:
            return False
        logging.warning("Removing the abandoned takeover claim %s.", claim)
        try:
            claim.unlink()
        except FileNotFoundError:
            pass
        return storage.create_exclusive(claim, json.dumps(self.record))

    def _refusal(self, holder: dict | None) -> str:
        if holder is None:
            who = "a run whose lock record is unreadable"
        else:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("time", 0)))
            who = f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}"
            if isinstance(holder.get("heartbeat"), int | float):
                who += f", alive {time.time() - holder['heartbeat']:.0f} s ago"
        return (
            f"--workdir {self.path.parent} is in use by another training run ({who}; lock file {self.path}). "
            "Two runs in one workdir destroy each other's checkpoints: wait for it to end or use a new "
            f"--workdir. If that run is gone (its machine was lost), delete {self.path} and start again "
            f"(a lock whose heartbeat is over {STALE_AFTER_SECONDS:g} s old is taken over by itself)."
        )
