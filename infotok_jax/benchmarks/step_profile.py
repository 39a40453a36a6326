"""Where a train step's time goes: a `jax.profiler` trace of a few steps, attributed to model parts.

Each XLA operation in the trace (CPU: the events of XLA's worker threads; GPU: the device's "XLA Ops"
line) is mapped to the compiled program's instruction of the same name, and through that instruction's
`op_name` metadata (jax's name stack: flax module paths and the named scopes "attention_core",
"infotok_regularizer" and "optimizer") to a part of the model:

  tokenizer convolutions    instructions of the tokenizer whose computation holds a convolution
  tokenizer other           its norms, activations, quantizer (VQ distances, EMA), reconstruction loss
  LM matmuls                the LM's projections, SwiGLU and logits (instructions holding a dot)
  attention                 scores, mask, softmax and the weighted values
  LM other                  RMSNorm, RoPE, activations, cross-entropy, layout copies
  regularizer               the InfoTok regularizer (and the control heads in the supervised arm)
  optimizer                 AdamW, clipping, the norms of the logged metrics
  other                     host heads, flow head, everything else
  runtime                   the executor's own time between operations (self time of its events)

Times are the events' self time summed over threads, per step: on a 2-thread CPU they add up to more than
the wall time when both threads are busy. Host-side work is timed apart (`host_side`).
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

PARTS = (
    "tokenizer convolutions",
    "tokenizer other",
    "LM matmuls",
    "attention",
    "LM other",
    "regularizer",
    "optimizer",
    "other",
    "runtime",
)
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = .*$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_CALLEES = re.compile(r"(?:calls|to_apply|body)=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _instructions(hlo_text: str) -> dict[str, tuple[str | None, str]]:
    """{instruction name: (op_name, kind)} of a compiled module's text; kind is "conv", "dot" or "" by
    what the instruction (or a computation it calls) computes."""
    computations: dict[str, list[str]] = collections.defaultdict(list)
    current = None
    parsed = []
    for line in hlo_text.splitlines():
        if (m := _COMPUTATION.match(line)) and not line.startswith(" "):
            current = m.group(1)
            continue
        if m := _INSTRUCTION.match(line):
            computations[current].append(line)
            parsed.append((m.group(1), line))

    def kind(line: str, depth: int = 0) -> str:
        if " convolution(" in line:
            return "conv"
        if " dot(" in line:
            return "dot"
        for callee in _CALLEES.findall(line) if depth < 3 else ():
            found = {kind(inner, depth + 1) for inner in computations.get(callee, [])}
            for k in ("conv", "dot"):
                if k in found:
                    return k
        return ""

    def op_name(line: str) -> str | None:
        """The instruction's own op_name, else the first one in a computation it calls (fusions emitted
        for a library call, e.g. a matmul, can come without metadata of their own)."""
        if found := _OP_NAME.search(line):
            return found.group(1)
        for callee in _CALLEES.findall(line):
            for inner in computations.get(callee, []):
                if found := _OP_NAME.search(inner):
                    return found.group(1)
        return None

    return {name: (op_name(line), kind(line)) for name, line in parsed}


def part_of(op_name: str | None, kind: str) -> str:
    """The model part (one of PARTS) of an instruction with jax name stack `op_name`."""
    if op_name is None:
        return "other"
    if "optimizer" in op_name:
        return "optimizer"
    if "infotok_regularizer" in op_name:
        return "regularizer"
    if "attention_core" in op_name:
        return "attention"
    if "tokenizer" in op_name:
        return "tokenizer convolutions" if kind == "conv" else "tokenizer other"
    if "/lm/" in op_name or "/lm." in op_name or "run_lm" in op_name:
        return "LM matmuls" if kind == "dot" else "LM other"
    return "other"


def _op_lines(profile: Any) -> list[Any]:
    """The trace lines whose events are XLA operations."""
    lines = []
    for plane in profile.planes:
        for line in plane.lines:
            on_cpu = line.name.startswith("tf_XLAEigen")
            on_device = plane.name.startswith("/device:") and line.name == "XLA Ops"
            if on_cpu or on_device:
                lines.append(line)
    return lines


def _self_times(events: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """(name, self time) of nested events (start, duration, name) of one line."""
    events = sorted(events, key=lambda e: (e[0], -e[1]))
    own = [d for _, d, _ in events]
    open_: list[tuple[int, int]] = []  # (end, index)
    for i, (start, duration, _) in enumerate(events):
        while open_ and open_[-1][0] <= start:
            open_.pop()
        if open_:
            own[open_[-1][1]] -= duration
        open_.append((start + duration, i))
    return [(name, own[i]) for i, (_, _, name) in enumerate(events)]


def breakdown(profile: Any, hlo_text: str, steps: int) -> dict[str, float]:
    """{part: seconds per step} (summed over threads) of a parsed trace of `steps` steps."""
    instructions = _instructions(hlo_text)
    seconds: collections.Counter = collections.Counter({part: 0.0 for part in PARTS})
    for line in _op_lines(profile):
        events = [(e.start_ns, e.duration_ns, e.name) for e in line.events]
        for name, self_ns in _self_times(events):
            if name in instructions:
                part = part_of(*instructions[name])
            else:  # the executor's own events (ThunkExecutor::Execute, thread-pool waits)
                part = "runtime"
            seconds[part] += self_ns * 1e-9 / steps
    return dict(seconds)


def profile_steps(step: Callable[[], Any], hlo_text: str, steps: int = 3) -> dict[str, float]:
    """Traces `steps` calls of `step` (already warm) and returns `breakdown` of them."""
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(steps):
                step()
        (path,) = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
        profile = ProfileData.from_file(path)
        return breakdown(profile, hlo_text, steps)


def median_seconds(fn: Callable[[], Any], reps: int) -> float:
    """Median wall seconds of `reps` calls of `fn` (results waited for)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def host_side(under_test: Any, reps: int = 20) -> dict[str, float | None]:
    """Seconds of the trainer's host-side work around the step of a `roofline.StepUnderTest`: one batch from
    the config's input pipeline (None when its data is not prepared here), the fetch of one step's
    metrics, and the state health check run before every checkpoint."""
    from infotok_jax.data import experiment_data
    from infotok_jax.training import state_health

    mesh = under_test.setup.batch_shardings["image"].mesh
    try:
        experiment_data.check_available(under_test.config.data)
        iterator = under_test.task.train_iterator(mesh)
        next(iterator)  # the first batch starts the pipeline's threads
        batch_s: float | None = median_seconds(lambda: next(iterator), reps)
    except (ImportError, ValueError, FileNotFoundError):  # no data (or no TFDS) here: the row says so
        batch_s = None
    metrics = under_test.step()
    check = state_health.make_state_check(mesh)
    check(under_test.state)
    return {
        "data pipeline, one batch": batch_s,
        "metrics fetch, one step": median_seconds(lambda: jax.device_get(metrics), reps),
        "state health check, one checkpoint": median_seconds(lambda: check(under_test.state), reps),
    }
