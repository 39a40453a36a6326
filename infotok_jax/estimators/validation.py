"""Trace-time argument checks shared by every estimator.

Every check here runs on static information only (shapes, dtypes, Python values), so a bad call fails
while `jax.jit` traces it, with a message that names the argument and says what to change. Values that
are only known at run time (a traced bandwidth array) cannot be checked here and are documented as the
caller's responsibility: a bandwidth passed as a concrete array (numpy or jax) is checked like a
Python number, but a traced one (an argument of the jitted function, or computed inside it) is not: a
non-positive or non-finite traced bandwidth gives wrong kernel values rather than an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KERNELS = ("gaussian", "linear", "inverse_multiquadric", "laplacian", "multiscale")
ESTIMATORS = ("biased", "unbiased")
PRECISIONS = ("exact", "fast")


def check_features(name: str, x: Any) -> None:
    """Checks that `x` is a rank-2 floating-point (or integer) array of shape (n, d)."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array of shape (n, d); got {type(x).__name__}")
    if len(shape) != 2:
        raise ValueError(
            f"{name} must have rank 2 with shape (n, d) (samples, features); got shape {tuple(shape)}. "
            f"Reshape it, e.g. {name}.reshape({name}.shape[0], -1)."
        )
    if shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples (rows); got shape {tuple(shape)}")
    if shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 feature (column); got shape {tuple(shape)}")
    dtype = jnp.dtype(x.dtype)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must have a real numeric dtype; got {dtype}")


def check_feature_sets(name: str, xs: Any) -> None:
    """Checks a stack of feature sets of shape (s, n, d)."""
    shape = getattr(xs, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{name} must have rank 3 with shape (sets, n, d); got "
            f"{None if shape is None else tuple(shape)}. Stack the feature sets along a new leading axis."
        )
    check_features(f"{name}[i]", jax.ShapeDtypeStruct(tuple(shape[1:]), xs.dtype))


def check_same_n(name_x: str, x: Any, name_y: str, y: Any, axis_x: int = 0) -> int:
    """Checks that both arrays have the same number of samples and returns it."""
    n_x, n_y = x.shape[axis_x], y.shape[0]
    if n_x != n_y:
        raise ValueError(
            f"{name_x} and {name_y} must have the same number of samples (paired rows); got "
            f"{name_x}.shape={tuple(x.shape)} and {name_y}.shape={tuple(y.shape)}"
        )
    return int(n_x)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Checks that `value` is one of the allowed strings."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def check_estimator_n(estimator: str, n: int) -> None:
    """The unbiased estimator divides by n (n - 3) and (n - 2): it needs n >= 4."""
    if estimator == "unbiased" and n < 4:
        raise ValueError(f"estimator='unbiased' needs n >= 4 samples; got n={n}. Use estimator='biased'.")


def check_bandwidth(name: str, bandwidth: Any, kernel: str) -> None:
    """Checks a bandwidth: "median", a positive number, a scalar array, or (multiscale) a sequence."""
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f'{name} must be "median" or a positive number; got {bandwidth!r}')
        return
    if kernel == "multiscale" and isinstance(bandwidth, (list, tuple)):
        if len(bandwidth) == 0:
            raise ValueError(f"{name} for kernel 'multiscale' must list at least one bandwidth")
        for b in bandwidth:
            check_bandwidth(name, b, "gaussian")
        return
    if isinstance(bandwidth, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive number or 'median'; got a bool")
    if isinstance(bandwidth, (int, float, np.integer, np.floating)):
        if not np.isfinite(bandwidth) or bandwidth <= 0:
            raise ValueError(f"{name} must be a positive finite number (or 'median'); got {bandwidth!r}")
        return
    shape = getattr(bandwidth, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be a positive number, a scalar array or 'median'; got {bandwidth!r}")
    if len(shape) != 0 and not (kernel == "multiscale" and len(shape) == 1):
        raise ValueError(f"{name} must be a scalar; got an array of shape {tuple(shape)}")
    if isinstance(bandwidth, jax.core.Tracer):
        return  # a traced value is unknown until run time: the caller's responsibility (module docstring)
    values = np.asarray(bandwidth)  # numpy or a concrete jax array: checked the same way
    if values.size == 0 or not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(f"{name} must be positive and finite; got {bandwidth!r}")


def check_block_size(block_size: Any) -> None:
    """block_size is None (automatic) or a positive Python int."""
    if block_size is None:
        return
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be None (automatic) or a positive int; got {block_size!r}")


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Checks a static integer option such as a subsample size or a number of permutations."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)
