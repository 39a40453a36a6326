"""Where a run's wall time goes: start-up, compilation, training, evaluation and checkpointing.

The training loop times its stages with `StageTimer` and process 0 writes `<workdir>/timing.json`. A
resumed run adds its seconds to those already recorded, so the file describes the whole run, and
`sessions` counts the starts. The study runner reads the file to say what a run cost beyond training.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator

from etils import epath

from infotok_jax import storage

STAGES = ("startup_s", "compile_s", "train_s", "eval_s", "checkpoint_s")
PAUSES = ("compile_s", "eval_s", "checkpoint_s")  # what the training-only steps/s leaves out


class StageTimer:
    """Accumulates wall-clock seconds per stage; `started_at` (time.time()) opens the start-up stage.

    `clock` (seconds, monotonic) times the stages; tests inject a fake one.
    """

    def __init__(self, started_at: float | None = None, clock: Callable[[], float] = time.perf_counter):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._started_at = time.time() if started_at is None else started_at
        self.clock = clock

    def paused_seconds(self) -> float:
        """Seconds spent so far in the stages that are not training steps (`PAUSES`)."""
        return sum(self.seconds[name] for name in PAUSES)

    def end_startup(self) -> None:
        """Closes the start-up stage (process start until the first training step is dispatched)."""
        self.seconds["startup_s"] += time.time() - self._started_at

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; one of {STAGES}")
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - start

    def write(self, workdir: epath.PathLike) -> None:
        """Adds this session's seconds to `<workdir>/timing.json` (call on process 0 only)."""
        path = epath.Path(workdir) / "timing.json"
        totals = dict.fromkeys(STAGES, 0.0) | {"sessions": 0}
        if path.exists():
            totals.update(json.loads(path.read_text()))
        for name, seconds in self.seconds.items():
            totals[name] = round(totals[name] + seconds, 3)
        totals["sessions"] += 1
        storage.write_text_atomic(path, json.dumps(totals, indent=1, sort_keys=True) + "\n")
