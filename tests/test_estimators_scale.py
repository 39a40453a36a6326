"""Large n: n = 65536 traces and runs in blocked mode, and the blocked memory is O(n (d + block)).

The baseline hit an OverflowError from `n**2` passed into jit as a Python int; here every scale factor is
a Python float. Memory is checked from XLA's compiled memory analysis (no need to run the big gradient).
"""

import jax
import numpy as np

from infotok_jax import estimators as est
from infotok_jax.estimators.gram_sums import STATS_ROWS


def _inputs(n: int):
    x = np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32)
    return x, np.tanh(x[:, :2]) ** 2


def test_n65536_blocked_runs_and_detects_dependence():
    x, y = _inputs(65536)
    value = jax.jit(lambda a, b: est.hsic(a, b, block_size=4096))(x, y)  # block_size=None also blocks here
    assert np.isfinite(value) and float(value) > 0
    # Cross-check against the exact dense value on a subsample: same order of magnitude (HSIC is a
    # population quantity; the subsample estimate differs only by sampling noise and bandwidth).
    sub = jax.jit(est.hsic)(x[:1024], y[:1024])
    assert 0.5 < float(value) / float(sub) < 2.0


def test_blocked_memory_is_linear_in_n_also_for_the_gradient():
    block = 512
    for n in (65536, 262144):
        x = jax.ShapeDtypeStruct((n, 4), np.float32)
        y = jax.ShapeDtypeStruct((n, 2), np.float32)
        f = lambda a, b: est.hsic(a, b, block_size=block)
        for compiled in (jax.jit(f).lower(x, y).compile(), jax.jit(jax.grad(f)).lower(x, y).compile()):
            temp = compiled.memory_analysis().temp_size_in_bytes
            # O(n (d + block + stats rows)) float32 words with a constant of 4; n^2 would be 16 / 256 GiB.
            assert temp <= 4 * 4 * n * (4 + block + STATS_ROWS), (n, temp)
