"""The train step computes what it computed before it became `TrainStep`: same losses, gradients and keys.

The reference values were printed by the previous step (`_SeededStep` wrapped in
`distributed.CompiledTogether`, commit 5031a63) for the toy task below on the 8 simulated CPU devices of
conftest.py. The loss adds a term drawn from the step's key, so the values pin the key derivation
fold_in(key(seed), step) as well as the optimizer update.
"""

import jax
import numpy as np
import pytest

from infotok_jax import sharding as sharding_lib
from infotok_jax.training import train_state
from tests.configs import toy_regression
from tests.toy_task import ToyRegressionTask

# (loss, noise, l2_grads, l2_params) after steps 1..4, seed 3
REFERENCE = [
    (0.693303644657135, 0.008695363998413086, 1.6423238515853882, 5.7415995597839355),
    (1.0176270008087158, 0.02599465847015381, 3.3930983543395996, 5.739552974700928),
    (1.143993854522705, 0.2783395051956177, 2.527468204498291, 5.735014915466309),
    (1.0071576833724976, 0.27357733249664307, 3.315378427505493, 5.731085777282715),
]


class _NoisyToyTask(ToyRegressionTask):
    """The toy regression plus 0.01 x a uniform draw from the step's key."""

    def loss(self, params, mutable, batch, rng, step):
        mse, (metrics, mutable) = super().loss(params, mutable, batch, rng, step)
        noise = jax.random.uniform(rng)
        return mse + 0.01 * noise, ({**metrics, "noise": noise}, mutable)


def test_four_steps_match_the_reference_values():
    config = toy_regression.get_config("steps=10")
    config.seed = 3
    task = _NoisyToyTask(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    setup = train_state.setup(task, config, mesh)
    state = train_state.create_sharded_state(
        task, setup.tx, setup.state_shardings, jax.random.key(config.seed), setup.abstract_batch
    )
    batches = task.train_iterator(mesh)
    observed = []
    with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
        for _ in REFERENCE:
            state, metrics = setup.train_step(state, next(batches), setup.seed)
            metrics = jax.device_get(metrics)
            observed.append(tuple(float(metrics[k]) for k in ("loss", "noise", "l2_grads", "l2_params")))
    assert int(jax.device_get(state.step)) == len(REFERENCE)
    np.testing.assert_allclose(np.array(observed), np.array(REFERENCE), rtol=1e-5)
    assert observed[0][1] != pytest.approx(observed[1][1])  # each step draws from its own key
