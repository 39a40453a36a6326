"""Deterministic, resumable per-host input pipeline: grain over `tfds.data_source` -> global jax.Arrays.

Each host loads only its rows of every global batch (`order.host_slice`), one batched array_record
lookup per step; grain worker threads decode whole host batches ahead of the training step (prefetch),
and the iterator assembles global arrays sharded over the mesh's
("data", "fsdp") axes with `jax.make_array_from_process_local_data`. Batch k is a pure function of
(seed, k): `get_state()` returns a small JSON-serialisable dict (save it next to the model, e.g. with
`orbax.checkpoint.args.JsonSave`), and `set_state()` restarts exactly at the saved step.

`mesh=None` gives the host-side numpy variant (dicts of numpy arrays, for evaluation code).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from infotok_jax import sharding
from infotok_jax.data import order
from infotok_jax.data.text_tokenizer import TextTokenizer
from infotok_jax.data.tfds_adapter import DEFAULT_LENGTHS, RecordAdapter, TextLengths, open_source

Batch = dict[str, Any]


class InputPipeline:
    """Iterator over batches of one split; see the module docstring.

    Args:
      name, data_dir: registered dataset name (or 'tfds:<name>') and the directory it was prepared in.
      split: split name. global_batch_size: examples per step over all hosts.
      mesh: mesh whose ("data", "fsdp") axes shard the batch; None for numpy batches.
      seed: order and QA-choice seed. image_size: output side (default: the dataset's native size).
      lengths / tokenizer: token lengths; tokenizer defaults to the one saved beside the data.
      shuffle / num_epochs: reshuffle every epoch; None = endless.
      drop_remainder: with False (single process, numpy only) the last batch may be smaller.
      process_index / process_count: host identity (defaults from jax), explicit for simulation.
      num_threads / prefetch_batches: grain decode threads and how many batches they run ahead.
      dataset_kwargs: builder settings that identify the prepared dataset (e.g. {"nuisance": 0.5}).
    """

    def __init__(
        self,
        name: str,
        data_dir: str,
        split: str,
        global_batch_size: int,
        mesh: Mesh | None,
        seed: int = 0,
        image_size: int | None = None,
        lengths: TextLengths = DEFAULT_LENGTHS,
        tokenizer: TextTokenizer | None = None,
        shuffle: bool = True,
        num_epochs: int | None = None,
        drop_remainder: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
        num_threads: int = 2,
        prefetch_batches: int = 2,
        dataset_kwargs: dict[str, Any] | None = None,
    ):
        self.name, self.split, self.seed, self.shuffle = name, split, int(seed), bool(shuffle)
        self.mesh = mesh
        self.process_count = jax.process_count() if process_count is None else int(process_count)
        self.process_index = jax.process_index() if process_index is None else int(process_index)
        shards = sharding.batch_axis_size(mesh) if mesh is not None else 1
        order.check_global_batch(global_batch_size, self.process_count, shards)
        self.global_batch_size = int(global_batch_size)
        self.rows = order.host_slice(global_batch_size, self.process_index, self.process_count)
        self.local_batch_size = self.rows.stop - self.rows.start
        opened = open_source(name, data_dir, split, tokenizer=tokenizer, **(dataset_kwargs or {}))
        self.source, self.tokenizer, self.path = opened.source, opened.tokenizer, opened.path
        self.num_examples = len(self.source)
        self.image_size = int(image_size or opened.native_image_size or 0)
        if self.image_size < 1:
            raise ValueError(f"{name} has images of varying size; pass image_size=")
        self.adapter = RecordAdapter(self.tokenizer, self.image_size, lengths, opened.class_names)
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs={num_epochs} must be >= 1 or None (endless)")
        if not drop_remainder and (mesh is not None or self.process_count > 1):
            raise ValueError(
                "drop_remainder=False needs mesh=None and a single process (ragged batches "
                "cannot form global arrays)"
            )
        self.num_epochs, self.drop_remainder = num_epochs, drop_remainder
        total = None if num_epochs is None else num_epochs * self.num_examples
        if total is None:
            self.num_steps = None
        elif drop_remainder:
            self.num_steps = total // self.global_batch_size
        else:
            self.num_steps = -(-total // self.global_batch_size)
        self._total_positions = total
        self.num_threads, self.prefetch_batches = int(num_threads), int(prefetch_batches)
        self._step = 0
        self._iter: Iterator[Batch] | None = None

    # ---------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position: the next step to be returned plus the identity of the stream."""
        return {
            "step": self._step,
            "seed": self.seed,
            "name": self.name,
            "split": self.split,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.shuffle,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restarts at `state["step"]`; the stream identity must match this pipeline's."""
        mine = self.get_state()
        for key in ("seed", "name", "split", "global_batch_size", "shuffle"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"state was saved with {key}={state[key]!r} but this pipeline has "
                    f"{key}={mine[key]!r}; build the pipeline with the saved settings"
                )
        step = int(state["step"])
        if step < 0 or (self.num_steps is not None and step > self.num_steps):
            raise ValueError(f"state step={step} is outside [0, {self.num_steps}]")
        self._step = step
        self._iter = None

    # ---------------------------------------------------------------- loading
    def _load_batch(self, step: int) -> Batch:
        """This host's rows of global batch `step`, read with one batched array_record lookup."""
        first = int(step) * self.global_batch_size + self.rows.start
        stop = first + self.local_batch_size
        if self._total_positions is not None:
            stop = min(stop, self._total_positions)  # only reachable without drop_remainder
        located = [
            order.stream_position_to_example(j, self.num_examples, self.seed, self.shuffle)
            for j in range(first, stop)
        ]
        records = self.source.__getitems__([example_id for example_id, _ in located])
        examples = [
            self.adapter(rec, order.qa_key(self.seed, epoch, example_id))
            for rec, (example_id, epoch) in zip(records, located, strict=True)
        ]
        batch = {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}
        batch["example_id"] = np.array([example_id for example_id, _ in located], np.int32)
        return batch

    def _host_stream(self, start_step: int) -> Iterator[Batch]:
        stop = sys.maxsize // 4 if self.num_steps is None else self.num_steps
        ds = grain.MapDataset.range(start_step, stop).map(self._load_batch)
        read = grain.ReadOptions(
            num_threads=self.num_threads, prefetch_buffer_size=max(1, self.prefetch_batches)
        )
        return iter(ds.to_iter_dataset(read))

    def _to_global(self, batch: Batch) -> Batch:
        out = {}
        for key, local in batch.items():
            local = np.asarray(local)
            global_shape = (self.global_batch_size, *local.shape[1:])
            out[key] = jax.make_array_from_process_local_data(
                sharding.batch_sharding(self.mesh, local.ndim), local, global_shape
            )
        return out

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> InputPipeline:
        return self

    def __next__(self) -> Batch:
        if self.num_steps is not None and self._step >= self.num_steps:
            raise StopIteration
        if self._iter is None:
            self._iter = self._host_stream(self._step)
        batch = next(self._iter)
        self._step += 1
        return batch if self.mesh is None else self._to_global(batch)


def make_pipeline(
    name: str, data_dir: str, split: str, global_batch_size: int, mesh: Mesh | None, seed: int = 0, **kwargs
) -> InputPipeline:
    """Builds an `InputPipeline` (see its docstring for the keyword arguments)."""
    return InputPipeline(name, data_dir, split, global_batch_size, mesh, seed=seed, **kwargs)


def iterate_numpy(name: str, data_dir: str, split: str, batch_size: int, **kwargs) -> InputPipeline:
    """One ordered pass over a split as numpy batches (last batch may be smaller), for evaluation."""
    kwargs = {
        "shuffle": False,
        "num_epochs": 1,
        "drop_remainder": False,
        "process_index": 0,
        "process_count": 1,
        **kwargs,
    }
    return InputPipeline(name, data_dir, split, batch_size, None, **kwargs)
