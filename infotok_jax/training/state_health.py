"""The guard before every checkpoint save: is the train state finite, and has it diverged?

One jitted reduction over the (sharded) state gives replicated scalars, so every process of a
multi-process run gets the same answer and all stop together. A state can be finite and already lost:
after one step at a huge learning rate the parameters are ~1e38 (their norm overflows to inf), or many
orders of magnitude above where the run started. Saved as the "last good checkpoint", such a state made
the advice "resume with a lower learning rate" resume it and fail again, so it is never saved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from infotok_jax import distributed

PyTree = Any

# A state whose parameter norm grew past this factor of the norm its run started from (at least 1) has
# diverged and is never saved; ordinary training stays well within 10x.
PARAM_NORM_GROWTH_LIMIT = 1e3


@dataclasses.dataclass(frozen=True)
class StateHealth:
    """What the guard before a save reads of a train state: all floating-point leaves finite
    (parameters, model state, optimizer moments) and the global parameter norm."""

    finite: bool
    l2_params: float

    def problem(self, start_l2_params: float) -> str | None:
        """Why the state must not be saved (non-finite, or diverged from `start_l2_params`), or None."""
        if not self.finite:
            return "non-finite values in the train state (parameters or optimizer state)"
        limit = PARAM_NORM_GROWTH_LIMIT * max(start_l2_params, 1.0)
        if not math.isfinite(self.l2_params) or self.l2_params > limit:
            return (
                f"diverged parameters (l2_params={self.l2_params:.3g}, over {PARAM_NORM_GROWTH_LIMIT:g} "
                f"times the {start_l2_params:.3g} this run started from)"
            )
        return None


def make_state_check(mesh: Mesh) -> Callable[[PyTree], StateHealth]:
    """A jitted check of a (sharded) train state, run before each save: one reduction to replicated
    scalars, so every process gets the same answer."""

    def health(state: PyTree) -> tuple[jax.Array, jax.Array]:
        flags = [
            jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)
        ]
        squares = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(state.params)]
        finite = jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)
        return finite, jnp.sqrt(sum(squares, jnp.float32(0.0)))

    jitted = distributed.CompiledTogether(
        jax.jit(health, out_shardings=NamedSharding(mesh, PartitionSpec())), "state_health"
    )

    def check(state: PyTree) -> StateHealth:
        finite, l2_params = jax.device_get(jitted(state))
        return StateHealth(finite=bool(finite), l2_params=float(l2_params))

    return check
