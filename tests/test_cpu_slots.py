"""Local study jobs claim disjoint cores (study/cpu_slots.py): two jobs get one core each, a third finds
every slot held and runs unpinned, and a claim ends with its process however it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from infotok_jax.study import cpu_slots

CORES = sorted(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="needs two cores to split")

_HOLD = """
import json, os, pathlib, sys, time
from infotok_jax.study import cpu_slots
with cpu_slots.pinned(2, pathlib.Path(sys.argv[1])) as cores:
    print(json.dumps([cores, sorted(os.sched_getaffinity(0))]), flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _start(directory, hold_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(directory), str(hold_s)], stdout=subprocess.PIPE, text=True
    )


def test_slot_cores_split_evenly():
    assert cpu_slots.slot_cores([3, 1, 2, 0], 2, 0) == [0, 1]
    assert cpu_slots.slot_cores([3, 1, 2, 0], 2, 1) == [2, 3]
    assert cpu_slots.slot_cores([0, 1, 2], 2, 1) == [1]  # the odd core is left over
    assert cpu_slots.slot_cores([0], 2, 0) == []


def test_jobs_take_disjoint_cores_and_a_killed_job_frees_its_slot(tmp_path):
    first, second = _start(tmp_path, 30), _start(tmp_path, 30)
    (claimed, pinned_to) = zip(*(json.loads(p.stdout.readline()) for p in (first, second)), strict=True)
    assert claimed == pinned_to  # each process runs exactly on the cores it claimed
    assert sorted(claimed) == [cpu_slots.slot_cores(CORES, 2, 0), cpu_slots.slot_cores(CORES, 2, 1)]
    third = subprocess.run(
        [sys.executable, "-c", _HOLD, str(tmp_path), "0"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(third.stdout)[0] == [] and "all 2 slots" in third.stderr  # both held: unpinned
    first.kill()
    first.wait()
    time.sleep(0.2)
    fourth = subprocess.run(
        [sys.executable, "-c", _HOLD, str(tmp_path), "0"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(fourth.stdout)[0] == claimed[0]  # the killed job's slot is free again
    second.kill()
    second.wait()


def test_one_slot_never_pins(tmp_path):
    with cpu_slots.pinned(1, tmp_path) as cores:
        assert cores == [] and sorted(os.sched_getaffinity(0)) == CORES
    assert not list(tmp_path.iterdir())
