"""Metric writers (JSONL + TensorBoard event files, no TensorFlow) and a progress reporter.

Only process 0 writes files; every process logs through absl. `clu.metric_writers` would need TensorFlow,
so TensorBoard events are written with tensorboardX.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging


def _to_float(value) -> float:
    return float(np.asarray(value))


class MetricWriter:
    """Writes scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard event files on host 0."""

    def __init__(self, workdir: pathlib.Path, enabled: bool | None = None):
        self._enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self._enabled:
            self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = {k: _to_float(v) for k, v in scalars.items()}
        if not self._enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))

    def flush(self) -> None:
        if self._enabled:
            self._jsonl.flush()
            self._tb.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def read_metrics(workdir: pathlib.Path) -> dict[int, dict[str, float]]:
    """Reads metrics.jsonl; a step written twice (a resumed run) keeps its last record."""
    records: dict[int, dict[str, float]] = {}
    path = pathlib.Path(workdir) / "metrics.jsonl"
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
