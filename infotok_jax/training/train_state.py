"""Training state, its sharded creation from logical axis rules, and the jitted train step.

The state is created already sharded: `jax.eval_shape` gives the abstract (boxed) state, flax turns its
logical axis names into mesh shardings, and `jax.jit(init, out_shardings=...)` materializes each
parameter directly on its devices. The per-step random key is derived from (seed, step), so a resumed run
draws exactly the randomness of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from infotok_jax import sharding as sharding_lib
from infotok_jax.training import config_checks
from infotok_jax.training import optimizer as optimizer_lib
from infotok_jax.training.task import Batch, Task

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training and is checkpointed."""

    step: jax.Array
    params: PyTree
    mutable: dict[str, PyTree]  # non-parameter collections, e.g. the VQ "state" (EMA codebook)
    opt_state: optax.OptState

    def variables(self) -> dict[str, PyTree]:
        return {"params": self.params, **self.mutable}


def _init_state_boxed(task: Task, tx: optax.GradientTransformation, rng: jax.Array, batch: Batch):
    variables = task.init_variables(rng, batch)
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, mutable=dict(variables), opt_state=tx.init(params)
    )


def _abstract_with_shardings(abstract_boxed: PyTree, mesh: Mesh, rules) -> tuple[PyTree, PyTree]:
    """(unboxed ShapeDtypeStructs carrying mesh shardings, the shardings) of a boxed abstract tree."""
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_boxed), mesh, rules)
    abstract = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
        nn.unbox(abstract_boxed),
        shardings,
    )
    return abstract, shardings


def state_shardings(
    task: Task, tx: optax.GradientTransformation, mesh: Mesh, rng: jax.Array, batch: Batch, rules
) -> tuple[TrainState, TrainState]:
    """Returns (abstract unboxed state with shardings, the shardings tree) for `mesh`."""
    abstract_boxed = jax.eval_shape(lambda r, b: _init_state_boxed(task, tx, r, b), rng, batch)
    return _abstract_with_shardings(abstract_boxed, mesh, rules)


def abstract_variables(task: Task, config: ml_collections.ConfigDict, mesh: Mesh) -> dict[str, PyTree]:
    """The model variables ({"params", mutable collections}) as sharded ShapeDtypeStructs.

    What an evaluator restores into: no optimizer, no train step.
    """
    batch = task.abstract_batch()
    boxed = jax.eval_shape(task.init_variables, jax.random.key(config.seed), batch)
    return _abstract_with_shardings(boxed, mesh, sharding_lib.logical_axis_rules(config))[0]


def create_sharded_state(
    task: Task, tx: optax.GradientTransformation, shardings: TrainState, rng: jax.Array, batch: Batch
) -> TrainState:
    """Initializes the state directly in its sharded layout."""
    init = jax.jit(lambda r, b: nn.unbox(_init_state_boxed(task, tx, r, b)), out_shardings=shardings)
    return init(rng, batch)


def _l2(tree: PyTree) -> jax.Array:
    return optax.tree.norm(tree)


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    seed: int,
    mesh: Mesh,
    shardings: TrainState,
    batch_shardings: PyTree,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the one jitted, donated train step with explicit in/out shardings."""

    def train_step(state: TrainState, batch: Batch, seed_array: jax.Array):
        rng = jax.random.fold_in(jax.random.key(seed_array), state.step)
        grad_fn = jax.value_and_grad(task.loss, has_aux=True)
        (loss, (metrics, new_mutable)), grads = grad_fn(state.params, state.mutable, batch, rng, state.step)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics.update(
            loss=loss,
            l2_grads=_l2(grads),
            l2_params=_l2(params),
            l2_updates=_l2(updates),
            learning_rate=schedule(state.step),
        )
        new_state = TrainState(step=state.step + 1, params=params, mutable=new_mutable, opt_state=opt_state)
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(
        train_step,
        in_shardings=(shardings, batch_shardings, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )
    seed_array = jax.make_array_from_callback((), replicated, lambda _: np.asarray(seed, np.int32))
    return _SeededStep(jitted, seed_array)


class _SeededStep:
    """A jitted step, lowered or compiled stage called as f(state, batch) with the seed bound as its last
    argument: the seed is an input, not a constant, so every seed of a study runs the same executable
    (one persistent-cache entry). Other attributes (`memory_analysis`, `as_text`) are the stage's."""

    def __init__(self, stage, seed_array: jax.Array):
        self._stage, self._seed_array = stage, seed_array

    def __call__(self, state: TrainState, batch: Batch):
        return self._stage(state, batch, self._seed_array)

    def lower(self, state: TrainState, batch: Batch) -> _SeededStep:
        return _SeededStep(self._stage.lower(state, batch, self._seed_array), self._seed_array)

    def compile(self, *args: Any, **kwargs: Any) -> _SeededStep:
        return _SeededStep(self._stage.compile(*args, **kwargs), self._seed_array)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)


def batch_shardings_for(batch: Batch, mesh: Mesh) -> PyTree:
    """Shardings of a batch: leading axis over the mesh's batch axes."""
    return jax.tree.map(lambda x: sharding_lib.batch_sharding(mesh, x.ndim), batch)


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """Everything needed to create, restore, lower or run the train step of `config` on `mesh`."""

    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_batch: PyTree  # ShapeDtypeStructs with batch shardings
    batch_shardings: PyTree
    abstract_state: TrainState  # ShapeDtypeStructs with state shardings (restore target)
    state_shardings: TrainState
    train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


def setup(task: Task, config: ml_collections.ConfigDict, mesh: Mesh) -> StepSetup:
    """Optimizer, abstract sharded batch and state, and the jitted step; reads no data.

    Raises ConfigError when the global batch does not split over the processes and the mesh's batch
    axes. Trace, lower and call the step inside `sharding.logical_sharding(mesh, rules)` so that
    activation constraints bind.
    """
    batch = task.abstract_batch()
    config_checks.check_batch_divisibility(next(iter(batch.values())).shape[0], mesh)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.num_train_steps)
    batch_shardings = batch_shardings_for(batch, mesh)
    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), batch, batch_shardings
    )
    rules = sharding_lib.logical_axis_rules(config)
    abstract_state, shardings = state_shardings(task, tx, mesh, jax.random.key(config.seed), batch, rules)
    step = make_train_step(task, tx, schedule, config.seed, mesh, shardings, batch_shardings)
    return StepSetup(tx, schedule, batch, batch_shardings, abstract_state, shardings, step)
