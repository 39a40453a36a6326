"""The interface between the generic training loop and a model family (tokenizer, MLLM hosts).

A task owns its model, its loss and its data; the loop owns sharding, optimization, checkpoints and
reporting. Binaries build the task (`infotok_jax.tasks.build_task`) and hand it to the loop. Everything a
task returns from `loss`, `eval_metrics` and `visualize` is traced inside jitted functions that every
process runs on global arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import jax
import ml_collections
from jax.sharding import Mesh

PyTree = Any
Batch = Mapping[str, jax.Array]


class DataIterator(Protocol):
    """Iterator over global, sharded batches whose position can be saved and restored as JSON."""

    def __next__(self) -> Batch: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


class Task(Protocol):
    """What the training loop needs from a model family."""

    config: ml_collections.ConfigDict

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Global shapes and dtypes of one training batch, without reading data."""

    def train_iterator(self, mesh: Mesh) -> DataIterator:
        """Training batches as global arrays sharded over the mesh's batch axes."""

    def eval_iterator(self, mesh: Mesh) -> Iterator[Batch]:
        """A finite pass over the evaluation split (same batch layout as training)."""

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, PyTree]:
        """Flax variables: 'params' (boxed with logical axis names) plus any mutable collections."""

    def loss(
        self, params: PyTree, mutable: dict[str, PyTree], batch: Batch, rng: jax.Array, step: jax.Array
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict[str, PyTree]]]:
        """Returns (loss, (scalar metrics, updated mutable collections))."""

    def eval_metrics(
        self, variables: dict[str, PyTree], batch: Batch, rng: jax.Array
    ) -> dict[str, jax.Array]:
        """Per-batch scalar metrics (averaged over batches by the loop)."""

    def visualize(self, variables: dict[str, PyTree], batch: Batch) -> dict[str, jax.Array]:
        """Images to write as PNG grids: name -> (rows, B, H, W, 3) float array in [0, 1].

        Entries `<name>.<key>` annotate grid `<name>` and become its column captions when the task has a
        `picture_captions` method (`plots.publish_pictures`). Traced and run by every
        process on the global batch (it may contain collectives); only process 0 writes the result."""

    def information_plane_keys(self) -> tuple[str, str]:
        """Metric names (compression, relevance) for the information-plane plot."""
