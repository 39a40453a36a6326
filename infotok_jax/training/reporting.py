"""Metric writers: `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

Only process 0 writes files. `clu.metric_writers` would need TensorFlow, so TensorBoard events are
written with tensorboardX: the scalars, the labelled image grids (with their captions as text), the
resolved config as text at start, and the hyperparameters (the flattened config, for TensorBoard's
HPARAMS tab, naming the evaluation scalars as its metrics) on close.

On a gs:// workdir (objects cannot be appended to): `metrics.jsonl` is kept in memory and the whole
object is uploaded again at most every `sync_every_secs` seconds, on `flush()` and on `close()`;
TensorBoard events are written by tensorboardX into a local temporary directory and their files are
uploaded through epath on the same schedule (tensorboardX's own gs:// writer uploads again from `__del__`
after `close()`, which blocks an exiting process for minutes when the bucket is unreachable). A run
killed with SIGKILL therefore loses at most the last `sync_every_secs` of metrics on a bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
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
    """tensorboardX events in `directory`, written in the calling thread; for a gs:// directory, written
    locally and uploaded on flush.

    tensorboardX's `SummaryWriter` writes from a background thread through a queue of 10 events: when
    that thread dies (a full disk), the next writes block forever on the full queue. Writing here makes
    such an error the caller's, which stops the run with its one-line message.
    """

    def __init__(self, directory: epath.Path, flush_secs: float):
        from tensorboardX.event_file_writer import EventsWriter

        self._remote = directory if storage.is_remote(directory) else None
        self._local = tempfile.mkdtemp(prefix="infotok_tensorboard_") if self._remote else str(directory)
        os.makedirs(self._local, exist_ok=True)
        # Event files are named by the second and the host: a random suffix keeps a restart within the
        # same second from replacing the previous session's file.
        suffix = f".{uuid.uuid4().hex[:8]}"
        self._events = EventsWriter(os.path.join(self._local, "events"), suffix)
        self._flush_secs = flush_secs
        self._last_flush = time.monotonic()

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto import event_pb2

        self._events.write_event(event_pb2.Event(summary=summary, step=step, wall_time=time.time()))
        if time.monotonic() - self._last_flush >= self._flush_secs:
            self.flush()

    def add_scalar(self, name: str, value: float, step: int) -> None:
        from tensorboardX import summary

        self._write(summary.scalar(name, value), step)

    def add_image(self, name: str, image_HxWx3: np.ndarray, step: int) -> None:
        from tensorboardX import summary

        self._write(summary.image(name, image_HxWx3, dataformats="HWC"), step)

    def add_text(self, name: str, text: str, step: int) -> None:
        from tensorboardX import summary

        self._write(summary.text(name, text), step)

    def add_hparams(self, hparams: Mapping[str, Any], metric_names: list[str]) -> None:
        """The hparams plugin's experiment, session start and end, in this run's own event file
        (tensorboardX's `add_hparams` would write them into a new sub-run)."""
        from tensorboardX import summary

        for hparams_summary in summary.hparams(dict(hparams), dict.fromkeys(metric_names, 0.0)):
            self._write(hparams_summary, 0)

    def flush(self) -> None:
        self._events.flush()
        self._last_flush = time.monotonic()
        if self._remote:
            self._remote.mkdir(parents=True, exist_ok=True)
            for name in sorted(os.listdir(self._local)):
                epath.Path(self._local, name).copy(self._remote / name, overwrite=True)

    def close(self) -> None:
        self.flush()
        self._events.close()
        if self._remote:
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
        config: ml_collections.ConfigDict | None = None,
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
        self._config = config
        self._scalar_names: set[str] = set()
        if self._enabled and config is not None:
            text = config.to_json_best_effort(indent=1, sort_keys=True)
            self._tb.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self._enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))
        self._scalar_names.update(values)
        if self._remote and time.monotonic() - self._last_sync >= self._sync_every:
            self.flush()

    def write_image(self, step: int, name: str, image_HxWx3: np.ndarray, captions: str = "") -> None:
        """A uint8 (H, W, 3) picture as TensorBoard image `name`, and `captions` (Markdown) as text
        `<name>/captions`."""
        if not self._enabled:
            return
        self._tb.add_image(name, np.asarray(image_HxWx3, np.uint8), int(step))
        if captions:
            self._tb.add_text(f"{name}/captions", captions, int(step))

    def flush(self) -> None:
        if self._enabled:
            self._jsonl.flush()
            self._tb.flush()
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._enabled:
            if self._config is not None:
                metrics = sorted(n for n in self._scalar_names if n.startswith("eval/")) or ["loss"]
                self._tb.add_hparams(flat_hparams(self._config), metrics)
            self._jsonl.close()
            self._tb.close()


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config flattened to dotted names with bool/int/float/str values (others as their repr)."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            for key in sorted(value.keys()):
                visit(f"{prefix}{key}.", value[key])
        elif isinstance(value, bool | int | float | str):
            flat[prefix[:-1]] = value
        else:
            flat[prefix[:-1]] = repr(value)

    visit("", config)
    return flat


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
