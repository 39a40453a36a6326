"""A seconds-to-compile regression task that exercises the training loop's machinery.

Tests of checkpointing, resumption, preemption, NaN handling and multi-process training use it so that
they measure the loop, not model compile time. Its data is a pure function of (seed, step), built as
global arrays from each process's local slice, exactly like the real input pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from infotok_jax import sharding as sharding_lib
from infotok_jax.training.config_checks import ConfigError


class _MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x_BxD):
        dense_in = nn.Dense(
            self.hidden,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
        )
        dense_out = nn.Dense(
            1, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed"))
        )
        return dense_out(jnp.tanh(dense_in(x_BxD)))[:, 0]


class _Iterator:
    """Batches as a pure function of (seed, step); state is the step."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, seed_offset: int = 0):
        self._config, self._mesh, self._step = config, mesh, 0
        self._seed = config.seed + seed_offset
        self._w = np.random.default_rng(config.seed).normal(size=(config.data.dim,)).astype(np.float32)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        d = self._config.data
        rng = np.random.default_rng([self._seed, self._step])
        x = rng.normal(size=(d.global_batch_size, d.dim)).astype(np.float32)
        y = (np.sin(x @ self._w) + 0.1 * rng.normal(size=(d.global_batch_size,))).astype(np.float32)
        if d.nan_at_step >= 0 and self._step >= d.nan_at_step:
            x[:] = np.nan
        self._step += 1
        if d.delay_seconds > 0:  # simulates a slow input source so tests can interrupt mid-run
            time.sleep(d.delay_seconds)
        per_process = d.global_batch_size // jax.process_count()
        local = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
        return {
            name: jax.make_array_from_process_local_data(
                sharding_lib.batch_sharding(self._mesh, array.ndim), array[local], array.shape
            )
            for name, array in (("x", x), ("y", y))
        }

    def get_state(self) -> dict:
        return {"step": self._step}

    def set_state(self, state: dict) -> None:
        self._step = int(state["step"])


class ToyRegressionTask:
    """Regresses sin(x . w) with a two-layer MLP."""

    def __init__(self, config: ml_collections.ConfigDict):
        if config.data.global_batch_size <= 0:
            raise ConfigError("config.data.global_batch_size: must be > 0")
        self.config = config
        self.model = _MLP(hidden=config.model.hidden)

    def abstract_batch(self):
        d = self.config.data
        return {
            "x": jax.ShapeDtypeStruct((d.global_batch_size, d.dim), jnp.float32),
            "y": jax.ShapeDtypeStruct((d.global_batch_size,), jnp.float32),
        }

    def train_iterator(self, mesh: Mesh):
        # a slow start-up, inside the lock: Python-level work (short waits), as a data pipeline's start is;
        # one long C-level sleep would hold off a signal the kernel hands to another thread
        deadline = time.monotonic() + self.config.data.get("startup_delay_seconds", 0.0)
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return _Iterator(self.config, mesh)

    def eval_iterator(self, mesh: Mesh):
        iterator = _Iterator(self.config, mesh, seed_offset=1000)
        return (next(iterator) for _ in range(self.config.num_eval_batches))

    def init_variables(self, rng, batch):
        return dict(self.model.init(rng, batch["x"]))

    def loss(self, params, mutable, batch, rng, step):
        pred = self.model.apply({"params": params, **mutable}, batch["x"])
        mse = jnp.mean((pred - batch["y"]) ** 2)
        return mse, ({"mse": mse}, mutable)

    def eval_metrics(self, variables, batch, rng):
        pred = self.model.apply(variables, batch["x"])
        return {"mse": jnp.mean((pred - batch["y"]) ** 2)}

    def visualize(self, variables, batch):
        return {}

    def information_plane_keys(self):
        return ("l2_params", "mse")
