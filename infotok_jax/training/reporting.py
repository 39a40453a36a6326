"""Metric writers (JSONL + TensorBoard event files, no TensorFlow) and a progress reporter.

Only process 0 writes files; every process logs through absl. `clu.metric_writers` would need TensorFlow,
so TensorBoard events are written with tensorboardX.

On a gs:// workdir (objects cannot be appended to): `metrics.jsonl` is kept in memory and the whole
object is uploaded again at most every `sync_every_secs` seconds, on `flush()` and on `close()`;
TensorBoard events are written by tensorboardX into a local temporary directory and their files are
uploaded through epath on the same schedule (tensorboardX's own gs:// writer uploads again from `__del__`
after `close()`, which blocks an exiting process for minutes when the bucket is unreachable). A run
killed with SIGKILL therefore loses at most the last `sync_every_secs` of metrics on a bucket.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from etils import epath

from infotok_jax import storage


def _to_float(value) -> float:
    return float(np.asarray(value))


class _JsonlFile:
    """Appends lines to a local file (line-buffered) or to a gs:// object (rewritten on flush)."""

    def __init__(self, path: epath.Path):
        self._path = path
        self._remote = storage.is_remote(path)
        if self._remote:
            self._text = path.read_text() if path.exists() else ""
            if self._text and not self._text.endswith("\n"):
                self._text += "\n"
            self._dirty = False
        else:
            self._file = open(path, "a", buffering=1)  # noqa: SIM115

    def write(self, line: str) -> None:
        if self._remote:
            self._text, self._dirty = self._text + line, True
        else:
            self._file.write(line)

    def flush(self) -> None:
        if not self._remote:
            self._file.flush()
        elif self._dirty:
            self._path.write_text(self._text)
            self._dirty = False

    def close(self) -> None:
        self.flush()
        if not self._remote:
            self._file.close()


class _TensorBoard:
    """tensorboardX events in `directory`; for a gs:// directory, written locally and uploaded on flush."""

    def __init__(self, directory: epath.Path, flush_secs: float):
        from tensorboardX import SummaryWriter

        self._remote = directory if storage.is_remote(directory) else None
        self._local = tempfile.mkdtemp(prefix="infotok_tensorboard_") if self._remote else str(directory)
        # Event files are named by the second and the host: a random suffix keeps a restart within the
        # same second from replacing the previous session's file.
        suffix = f".{uuid.uuid4().hex[:8]}"
        self._writer = SummaryWriter(self._local, flush_secs=flush_secs, filename_suffix=suffix)

    def add_scalar(self, name: str, value: float, step: int) -> None:
        self._writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self._writer.flush()
        if self._remote:
            self._remote.mkdir(parents=True, exist_ok=True)
            for name in sorted(os.listdir(self._local)):
                epath.Path(self._local, name).copy(self._remote / name, overwrite=True)

    def close(self) -> None:
        self._writer.close()
        if self._remote:
            self.flush()
            shutil.rmtree(self._local, ignore_errors=True)


class MetricWriter:
    """Writes scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard event files on host 0.

    `workdir` may be local or gs://; see the module docstring for when a bucket sees the records.
    """

    def __init__(
        self,
        workdir: epath.PathLike,
        enabled: bool | None = None,
        sync_every_secs: float = 30.0,
        tb_flush_secs: float = 120.0,
    ):
        self._enabled = jax.process_index() == 0 if enabled is None else enabled
        self._remote = storage.is_remote(workdir)
        self._sync_every = sync_every_secs
        self._last_sync = time.monotonic()
        self._jsonl = None
        self._tb = None
        if self._enabled:
            workdir = epath.Path(workdir)
            self._jsonl = _JsonlFile(workdir / "metrics.jsonl")
            self._tb = _TensorBoard(workdir / "tensorboard", tb_flush_secs)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self._enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))
        if self._remote and time.monotonic() - self._last_sync >= self._sync_every:
            self.flush()

    def flush(self) -> None:
        if self._enabled:
            self._jsonl.flush()
            self._tb.flush()
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def read_metrics(workdir: epath.PathLike) -> dict[int, dict[str, float]]:
    """Reads metrics.jsonl; a step written twice (a resumed run) keeps its last record."""
    records: dict[int, dict[str, float]] = {}
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill -9
            continue
        step = record.pop("step")
        records.setdefault(step, {}).update(record)
    return records


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ProgressReporter:
    """Logs steps/s and ETA every `every_steps` steps (wall clock, excluding the first, compiling step)."""

    def __init__(self, num_train_steps: int, every_steps: int):
        self._num_train_steps = num_train_steps
        self._every = max(int(every_steps), 1)
        self._t0: float | None = None
        self._step0 = 0

    def __call__(self, step: int) -> dict[str, float]:
        """Call after step `step` completed; returns {'steps_per_sec': ...} when it reports."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._step0 = now, step
            return {}
        if step % self._every and step != self._num_train_steps:
            return {}
        done = step - self._step0
        rate = done / max(now - self._t0, 1e-9)
        eta = (self._num_train_steps - step) / rate if rate > 0 else math.inf
        logging.info(
            "step %d/%d  %.2f steps/s  ETA %s",
            step,
            self._num_train_steps,
            rate,
            _format_duration(eta) if math.isfinite(eta) else "?",
        )
        return {"steps_per_sec": rate}
