"""The faster train step computes what the slower one did (issue 27): the host LM's layer scan unrolled
(`host.lm.unroll_layers`, the default) gives the losses and parameters of the looped scan to float
tolerance over a few steps from the same state and batches. The three hosts share the backbone, so the
AR host stands for all of them."""

from __future__ import annotations

import jax
import numpy as np

from infotok_jax.benchmarks import roofline


def _trajectory(arg: str, unroll: bool, steps: int = 3) -> tuple[list[float], dict]:
    overrides = {"host.lm.num_layers": 3, "host.lm.unroll_layers": unroll}  # tiny has 1 layer: give it 3
    under_test = roofline.StepUnderTest(arg, overrides=overrides)
    losses = [float(under_test.step()["loss"]) for _ in range(steps)]
    return losses, jax.device_get(under_test.state.params)


def test_unrolled_layers_follow_the_scanned_trajectory():
    arg = "host=ar,tiny,batch=8"
    scanned_losses, scanned_params = _trajectory(arg, unroll=False)
    unrolled_losses, unrolled_params = _trajectory(arg, unroll=True)
    np.testing.assert_allclose(unrolled_losses, scanned_losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), unrolled_params, scanned_params
    )
    assert scanned_losses[0] != scanned_losses[-1]  # the steps moved the state
