"""Pins each local study job to its own share of the machine's cores.

Small study runs use a core better alone than two threads share two cores: on the 2-core CPU of
docs/performance.md two pinned jobs at once finish 1.40x the study runs per hour of one job on both cores
(with the unrolled layer scan). Unpinned, each job would size XLA's thread pool to every core and the two
pools would contend; XLA sizes its CPU thread pool from the process's CPU affinity, so pinning is all it
takes.

A job claims the first free slot by an exclusive `flock` on `<directory>/slots<S>_<i>.lock`, which the
kernel releases when the job ends however it ends (no stale claims after a kill), and restricts itself,
and so the train and evaluation subprocesses it starts, to that slot's cores. The directory is one per
user and machine (cores are the machine's, whatever study a job belongs to), so jobs of two drivers never
share a core: the later ones find the slots held and run unpinned. SLURM pins its jobs itself (cgroups),
so only the local engine uses this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterator

DEFAULT_DIRECTORY = pathlib.Path(tempfile.gettempdir()) / f"infotok_jax_cpu_slots_{os.getuid()}"


def slot_cores(cores: list[int], slots: int, index: int) -> list[int]:
    """The cores of slot `index` when `cores` are split into `slots` equal, disjoint shares ([] when
    there are fewer cores than slots: nothing to pin to)."""
    share = len(cores) // slots
    return sorted(cores)[index * share : (index + 1) * share] if share else []


@contextlib.contextmanager
def pinned(slots: int, directory: pathlib.Path = DEFAULT_DIRECTORY) -> Iterator[list[int]]:
    """Holds a free slot of `slots` and pins this process to its cores for the body; yields the cores
    ([]: not pinned, because `slots` <= 1, there are fewer cores than slots, or every slot is held by
    another job, e.g. one left running by an earlier driver)."""
    cores = sorted(os.sched_getaffinity(0))
    if slots <= 1 or len(cores) < slots:
        yield []
        return
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(slots):
        handle = open(directory / f"slots{slots}_{index}.lock", "w")  # noqa: SIM115 (held for the body)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        mine = slot_cores(cores, slots, index)
        os.sched_setaffinity(0, mine)
        try:
            yield mine
        finally:
            os.sched_setaffinity(0, cores)
            handle.close()  # releases the lock
        return
    print(f"cpu_slots: all {slots} slots in {directory} are held; running unpinned", file=sys.stderr)
    yield []
