"""The faster train step computes what the slower one did (issue 27): the host LM's layer scan unrolled
(`host.lm.unroll_layers`, the default) gives the losses and parameters of the looped scan to float
tolerance over a few steps from the same state and batches; the initializer compiled without LLVM
optimization (the trainer's cold-start saving) draws the state of the optimized one to a few ulps. The
three hosts share the backbone, so the AR host stands for all of them."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from infotok_jax import sharding, tasks
from infotok_jax.benchmarks import roofline
from infotok_jax.configs import host as host_configs
from infotok_jax.training import train_state


def _trajectory(arg: str, unroll: bool, steps: int = 3) -> tuple[list[float], dict]:
    overrides = {"host.lm.num_layers": 2, "host.lm.unroll_layers": unroll}  # tiny has 1 layer: give it 2
    under_test = roofline.StepUnderTest(arg, overrides=overrides)
    losses = [float(under_test.step()["loss"]) for _ in range(steps)]
    return losses, jax.device_get(under_test.state.params)


@pytest.mark.slow
def test_unrolled_layers_follow_the_scanned_trajectory():
    arg = "host=ar,tiny,batch=8"
    scanned_losses, scanned_params = _trajectory(arg, unroll=False)
    unrolled_losses, unrolled_params = _trajectory(arg, unroll=True)
    np.testing.assert_allclose(unrolled_losses, scanned_losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), unrolled_params, scanned_params
    )
    assert scanned_losses[0] != scanned_losses[-1]  # the steps moved the state


def test_the_unoptimized_initializer_draws_the_optimized_state():
    config = host_configs.get_config("host=ar,tiny,batch=8")
    task, mesh = tasks.build_task(config), sharding.make_mesh(config.mesh_shape)
    setup = train_state.setup(task, config, mesh)
    states = []
    with sharding.logical_sharding(mesh, sharding.logical_axis_rules(config)):
        for optimize in (True, False):
            init = train_state.sharded_initializer(task, setup.tx, setup.state_shardings, optimize=optimize)
            states.append(jax.device_get(init(jax.random.key(0), setup.abstract_batch)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), *states)
