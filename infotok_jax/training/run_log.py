"""What the training log says while a run goes: start-up facts, compilation, loss terms, rates, evaluations.

At start (process 0): the parameter count per model component (the top-level subtrees of the parameter
tree) and every output path; at the end, one summary line (`run_summary`). Around the first step: a line
when compilation starts and one with how long it took. Every `log_every_steps`: the step's metrics (the
loss and its parts), the training rate and the ETA. After every evaluation: its metrics and how long it
took.

The rate is training steps only, over a recent window: the seconds the `StageTimer` spent compiling,
evaluating and checkpointing are subtracted from the wall clock, so an evaluation pause neither drags
the rate down nor inflates the ETA. The same windowed rate is what goes to `metrics.jsonl` as
`steps_per_sec` (with `steps_per_sec_window`, the steps it was measured over).
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from absl import logging
from etils import epath

from infotok_jax.training import timing

WINDOW_REPORTS = 10  # the rate is measured over the last WINDOW_REPORTS logging periods


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_metrics(values: Mapping[str, float]) -> str:
    """'loss=0.1234 mse=0.05' with keys sorted, loss first."""
    keys = sorted(values, key=lambda k: (k != "loss", k))
    return " ".join(f"{k}={float(np.asarray(values[k])):.4g}" for k in keys)


def count_params(params) -> dict[str, int]:
    """Parameter count per component: the children of the first level of `params` with more than one
    entry (single-key wrappers such as {'params': {...}} are descended), plus 'total'."""
    tree = params
    prefix = ""
    while isinstance(tree, Mapping) and len(tree) == 1:
        key = next(iter(tree))
        if not isinstance(tree[key], Mapping):
            break
        prefix, tree = f"{prefix}{key}/", tree[key]
    counts: dict[str, int] = {}
    if isinstance(tree, Mapping):
        for key, subtree in tree.items():
            counts[f"{prefix}{key}"] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(subtree))
    counts["total"] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return counts


def output_paths(workdir: epath.PathLike) -> dict[str, epath.Path]:
    """Where the run writes (see docs/training.md 'What a run writes')."""
    workdir = epath.Path(workdir)
    return {
        "workdir": workdir,
        "checkpoints": workdir / "checkpoints",
        "metrics": workdir / "metrics.jsonl",
        "tensorboard": workdir / "tensorboard",
        "images": workdir / "images",
        "timing": workdir / "timing.json",
    }


def log_run_start(workdir: epath.PathLike, params, start_step: int, num_train_steps: int) -> None:
    """Logs the parameter counts and the output paths (process 0 only)."""
    if jax.process_index() != 0:
        return
    counts = count_params(params)
    total = counts.pop("total")
    parts = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    logging.info("Parameters: %s total (%s)", f"{total:,}", parts)
    for name, path in output_paths(workdir).items():
        logging.info("Output %-12s %s", name + ":", path)
    logging.info("Training steps %d..%d of %d", start_step + 1, num_train_steps, num_train_steps)


def run_summary(
    workdir: epath.PathLike,
    *,
    first_step: int,
    last_step: int,
    num_train_steps: int,
    seconds: Mapping[str, float],
    train_metrics: Mapping[str, float],
    eval_metrics: Mapping[str, float],
) -> str:
    """The one line a run ends with: steps, wall time and where it went, final losses, outputs."""
    stopped = "" if last_step == num_train_steps else f" (stopped early; the run ends at {num_train_steps})"
    losses = {k: v for k, v in train_metrics.items() if k == "loss" or k.startswith("loss/")}
    eval_losses = {k: v for k, v in eval_metrics.items() if k.startswith("eval/loss")}
    stages = ", ".join(f"{name[:-2]} {seconds[name]:.0f} s" for name in timing.STAGES)
    paths = output_paths(workdir)
    parts = [
        f"Trained steps {first_step + 1}..{last_step} of {num_train_steps}{stopped} in "
        f"{format_duration(sum(seconds.values()))} ({stages})"
    ]
    if losses:
        parts.append(f"final {format_metrics(losses)}")
    if eval_losses:
        parts.append(f"last evaluation {format_metrics(eval_losses)}")
    names = ", ".join(path.name for key, path in paths.items() if key != "workdir")
    parts.append(f"outputs in {paths['workdir']} ({names})")
    return "; ".join(parts)


class ProgressReporter:
    """Logs compilation, the step's metrics, the training-only steps/s over a window, the ETA and evaluations.

    `timer` is the run's `StageTimer`: its compile, eval and checkpoint seconds are subtracted from its
    clock, which is what makes the rate training-only.
    """

    def __init__(
        self,
        num_train_steps: int,
        every_steps: int,
        timer: timing.StageTimer,
        window_reports: int = WINDOW_REPORTS,
    ):
        self._num_train_steps = num_train_steps
        self._every = max(int(every_steps), 1)
        self._timer = timer
        self._samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=window_reports + 1)
        self._eval_seconds_seen = 0.0

    def _train_clock(self) -> float:
        return self._timer.clock() - self._timer.paused_seconds()

    def start(self, step: int) -> None:
        """Opens the window: `step` steps are complete and the clock runs training from now."""
        self._samples.clear()
        self._samples.append((step, self._train_clock()))

    @contextlib.contextmanager
    def compiling(self, step: int) -> Iterator[None]:
        """Times the first (compiling) step `step` as the compile stage; the window opens after it."""
        logging.info("Compiling the train step (the first step, %d, runs when it is compiled)...", step + 1)
        with self._timer.stage("compile_s"):
            start = self._timer.clock()
            yield
            seconds = self._timer.clock() - start
        logging.info("Compiled the train step and ran step %d in %.1f s", step + 1, seconds)
        self.start(step + 1)

    def __call__(self, step: int, values: Mapping[str, float] | None = None) -> dict[str, float]:
        """After step `step` completed with metrics `values`: logs them every `every_steps` steps (and at
        the last step) with the rate and ETA; returns {'steps_per_sec', 'steps_per_sec_window'} once the
        window holds a training interval, else {}."""
        if step % self._every and step != self._num_train_steps:
            return {}
        now = self._train_clock()
        if not self._samples or step > self._samples[-1][0]:  # the first sample opens the window
            self._samples.append((step, now))
        first_step, first_time = self._samples[0]
        done = step - first_step
        rate = done / max(now - first_time, 1e-9) if done > 0 else math.nan
        eta = (self._num_train_steps - step) / rate if rate > 0 else math.inf
        seconds = self._timer.seconds
        logging.info(
            "step %d/%d  %s  |  %s steps/s (training only, last %d steps)  ETA %s  "
            "(compile %.0f s, eval %.0f s, checkpoints %.0f s so far)",
            step,
            self._num_train_steps,
            format_metrics(values or {}),
            f"{rate:.2f}" if math.isfinite(rate) else "?",
            done,
            format_duration(eta),
            seconds["compile_s"],
            seconds["eval_s"],
            seconds["checkpoint_s"],
        )
        if not math.isfinite(rate):
            return {}
        return {"steps_per_sec": rate, "steps_per_sec_window": float(done)}

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """Logs an evaluation's metrics and the seconds it took (compiling it included the first time)."""
        seconds = self._timer.seconds["eval_s"] - self._eval_seconds_seen
        self._eval_seconds_seen = self._timer.seconds["eval_s"]
        logging.info("eval at step %d (%.1f s): %s", step, seconds, format_metrics(metrics))
