"""Input-pipeline throughput (examples/s) on captioned scenes, host numpy batches and global jax.Arrays.

  .venv/bin/python experiments/bench_input_pipeline.py --data_dir /tmp/infotok_data

Prepares the default scenes32 dataset (20k/2k/2k/2k) if needed and reports how long that took, then
times `--steps` batches of `--global_batch_size` after `--warmup` batches, for (a) the host-side numpy
variant and (b) global arrays sharded over a mesh of all local devices.
"""

from __future__ import annotations

import time

import jax
from absl import app, flags

from infotok_jax import data, sharding

_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/infotok_data", "where datasets are prepared")
_NAME = flags.DEFINE_string("dataset", "scenes32", "registered dataset name")
_NUISANCE = flags.DEFINE_float("nuisance", 1.0, "scenes nuisance strength")
_BATCH = flags.DEFINE_integer("global_batch_size", 256, "examples per step")
_STEPS = flags.DEFINE_integer("steps", 40, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed steps first")
_THREADS = flags.DEFINE_integer("num_threads", 2, "grain decode threads")


def _time(pipe: data.InputPipeline, block: bool) -> float:
    for _ in range(_WARMUP.value):
        next(pipe)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
        batch = next(pipe)
        if block:
            jax.block_until_ready(batch)
    return _STEPS.value * _BATCH.value / (time.perf_counter() - t0)


def main(argv: list[str]) -> None:
    del argv
    kwargs = {"nuisance": _NUISANCE.value} if _NAME.value.startswith("scenes") else {}
    t0 = time.perf_counter()
    prepared = data.prepare(_NAME.value, _DATA_DIR.value, **kwargs)
    print(
        f"prepare({_NAME.value!r}): {time.perf_counter() - t0:.1f} s -> {prepared.path} "
        f"{prepared.num_examples}"
    )
    common = dict(seed=0, num_threads=_THREADS.value, dataset_kwargs=kwargs)
    host = data.make_pipeline(_NAME.value, _DATA_DIR.value, "train", _BATCH.value, None, **common)
    print(f"host numpy batches:   {_time(host, block=False):8.0f} examples/s")
    mesh = sharding.make_mesh((-1, 1, 1))
    glob = data.make_pipeline(_NAME.value, _DATA_DIR.value, "train", _BATCH.value, mesh, **common)
    print(
        f"global jax.Arrays:    {_time(glob, block=True):8.0f} examples/s "
        f"({jax.device_count()} device(s), batch {_BATCH.value}, {_THREADS.value} threads)"
    )


if __name__ == "__main__":
    app.run(main)
