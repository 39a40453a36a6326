"""Training state, its sharded creation from logical axis rules, and the jitted train step.

The state is created already sharded: `jax.eval_shape` gives the abstract (boxed) state, flax turns its
logical axis names into mesh shardings, and `jax.jit(init, out_shardings=...)` materializes each
parameter directly on its devices. The per-step random key is derived from (seed, step), so a resumed run
draws exactly the randomness of an uninterrupted one (`TrainStep`).
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

from infotok_jax import distributed
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


def initializer_compiler_options() -> dict[str, int] | None:
    """XLA options for programs that run once, such as parameter initializers: on CPU, no LLVM optimization.

    An initializer is hundreds of small random-number kernels that XLA's CPU backend spends most of its
    compile time optimizing, for a program that runs once (`experiments/bench_init_compile.py` measures
    both; docs/performance.md has its table). The values are the same draws: some leaves differ from the
    optimized program's by a few ulps (floating-point contraction). None on other backends.
    """
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def sharded_initializer(
    task: Task, tx: optax.GradientTransformation, shardings: TrainState, *, optimize: bool = False
) -> Callable[[jax.Array, Batch], TrainState]:
    """The jitted `(rng, batch) -> state` that writes each leaf directly in its sharded layout.

    `optimize=False` compiles it with `initializer_compiler_options()` (what the trainer does).
    """
    return jax.jit(
        lambda r, b: nn.unbox(_init_state_boxed(task, tx, r, b)),
        out_shardings=shardings,
        compiler_options=None if optimize else initializer_compiler_options(),
    )


def create_sharded_state(
    task: Task, tx: optax.GradientTransformation, shardings: TrainState, rng: jax.Array, batch: Batch
) -> TrainState:
    """Initializes the state directly in its sharded layout."""
    return sharded_initializer(task, tx, shardings)(rng, batch)


def _l2(tree: PyTree) -> jax.Array:
    return optax.tree.norm(tree)


class TrainStep:
    """The jitted train step `step(state, batch, seed) -> (state, metrics)`, compiled once, together.

    The seed is an argument of the jitted function (a replicated int32 array, `StepSetup.seed`) that the
    loop passes in, as big_vision passes its rng: every seed of a study runs the same executable (one
    persistent-cache entry), and the per-step key is fold_in(key(seed), state.step), so a resumed run
    draws exactly the randomness of an uninterrupted one.

    The first call compiles for the fixed abstract state and batch and then waits at a barrier across
    processes before running: on CPU the first cross-process collective rendezvouses within a fixed 30 s
    (XLA's gloo key-value timeout), which a peer still compiling on a loaded machine would miss. Later
    calls go straight to the compiled executable (it checks shapes and shardings itself; nothing walks
    the state in Python). `lower` / `compile` give the AOT stages (aot_compile.py, --compile_only).
    """

    def __init__(self, jitted: Callable, abstract_state: TrainState, abstract_batch: PyTree, seed: jax.Array):
        self._jitted, self._abstract = jitted, (abstract_state, abstract_batch)
        self.seed = seed
        self._compiled: jax.stages.Compiled | None = None

    def lower(self, state: TrainState | None = None, batch: Batch | None = None) -> jax.stages.Lowered:
        """The lowered step for `state` and `batch` (default: the abstract ones); call its compiled form
        as `compiled(state, batch, seed)`."""
        return self._jitted.lower(
            self._abstract[0] if state is None else state,
            self._abstract[1] if batch is None else batch,
            self.seed,
        )

    def compile(self) -> jax.stages.Compiled:
        """Compiles the step for the abstract state and batch once (every process), then meets the others
        at a barrier; returns the executable."""
        if self._compiled is None:
            self._compiled = self.lower().compile()
            distributed.barrier("compiled train_step")
        return self._compiled

    def __call__(self, state: TrainState, batch: Batch, seed: jax.Array) -> tuple[TrainState, dict]:
        return (self._compiled or self.compile())(state, batch, seed)


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    shardings: TrainState,
    batch_shardings: PyTree,
    replicated: NamedSharding,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted, donated train step `(state, batch, seed) -> (state, metrics)` with explicit shardings."""

    def train_step(state: TrainState, batch: Batch, seed: jax.Array):
        rng = jax.random.fold_in(jax.random.key(seed), state.step)
        grad_fn = jax.value_and_grad(task.loss, has_aux=True)
        (loss, (metrics, new_mutable)), grads = grad_fn(state.params, state.mutable, batch, rng, state.step)
        with jax.named_scope("optimizer"):  # names the ops for profiles (benchmarks/step_profile.py)
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

    return jax.jit(
        train_step,
        in_shardings=(shardings, batch_shardings, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )


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
    train_step: TrainStep  # called as train_step(state, batch, seed)
    seed: jax.Array  # config.seed as a replicated int32 array: the train step's seed argument


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
    replicated = NamedSharding(mesh, PartitionSpec())
    seed = jax.make_array_from_callback((), replicated, lambda _: np.asarray(config.seed, np.int32))
    jitted = make_train_step(task, tx, schedule, shardings, batch_shardings, replicated)
    step = TrainStep(jitted, abstract_state, batch, seed)
    return StepSetup(tx, schedule, batch, batch_shardings, abstract_state, shardings, step, seed)
