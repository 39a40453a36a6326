"""Bad input fails while tracing (no data needed: jax.eval_shape) with a message naming the argument."""

import jax
import numpy as np
import pytest

from infotok_jax import estimators as est


def _spec(*shape, dtype=np.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


X, Y = _spec(10, 3), _spec(10, 2)


@pytest.mark.parametrize(
    "x,y,kwargs,match",
    [
        (X, _spec(9, 2), {}, "x and y must have the same number of samples"),
        (_spec(3, 3), _spec(3, 2), {"estimator": "unbiased"}, "estimator='unbiased' needs n >= 4"),
        (_spec(10, 3, 1), Y, {}, "x must have rank 2"),
        (X, _spec(10), {}, "y must have rank 2"),
        (_spec(1, 3), _spec(1, 2), {}, "x needs at least 2 samples"),
        (X, Y, {"kernel_x": "rbf"}, "kernel_x must be one of"),
        (X, Y, {"kernel_y": "cosine"}, "kernel_y must be one of"),
        (X, Y, {"estimator": "debiased"}, "estimator must be one of"),
        (X, Y, {"bandwidth_x": 0.0}, "bandwidth_x must be a positive"),
        (X, Y, {"bandwidth_y": -2.0}, "bandwidth_y must be a positive"),
        (X, Y, {"bandwidth_x": float("nan")}, "bandwidth_x must be a positive"),
        (X, Y, {"bandwidth_x": "mean"}, 'bandwidth_x must be "median"'),
        (X, Y, {"bandwidth_x": np.ones(2, np.float32)}, "bandwidth_x must be a scalar"),
        (X, Y, {"block_size": 0}, "block_size must be None"),
        (X, Y, {"block_size": 2.5}, "block_size must be None"),
        (X, Y, {"precision": "tf32"}, "precision must be one of"),
        (X, Y, {"median_subsample": 1}, "median_subsample must be an int >= 2"),
        (_spec(10, 3, dtype=np.complex64), Y, {}, "x must have a real numeric dtype"),
    ],
)
@pytest.mark.parametrize("fn", [est.hsic, est.normalized_hsic])
def test_hsic_errors_at_trace_time(fn, x, y, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jax.eval_shape(lambda a, b: fn(a, b, **kwargs), x, y)


def test_other_entry_points_validate_arguments():
    with pytest.raises(ValueError, match="xs must have rank 3"):
        jax.eval_shape(est.batched_hsic, X, Y)
    with pytest.raises(ValueError, match="xs and y must have the same number of samples"):
        jax.eval_shape(est.batched_hsic, _spec(2, 9, 3), Y)
    with pytest.raises(ValueError, match="num_features must be even"):
        jax.eval_shape(lambda a, b: est.rff_hsic(a, b, key=jax.random.PRNGKey(0), num_features=7), X, Y)
    with pytest.raises(ValueError, match="num_permutations"):
        jax.eval_shape(
            lambda a, b: est.hsic_permutation_test(a, b, key=jax.random.PRNGKey(0), num_permutations=0), X, Y
        )
    with pytest.raises(ValueError, match="bandwidth must be numeric"):
        jax.eval_shape(lambda a: est.kernel_matrix(a, bandwidth="median"), X)
    with pytest.raises(ValueError, match="kernel must be one of"):
        jax.eval_shape(lambda a: est.kernel_matrix(a, kernel="poly"), X)
    with pytest.raises(ValueError, match="subsample must be an int"):
        jax.eval_shape(lambda a: est.median_bandwidth(a, subsample=0), X)
