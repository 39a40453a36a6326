"""Persistent XLA compilation cache under the repository's `.cache/` directory.

Compiles dominate small CPU runs (tests, smoke runs); caching them cuts a test session several-fold.
The cache key already includes the device count, but entries compiled for different simulated device
counts are kept in separate directories anyway so that no run can ever pick up another's executables.
"""

from __future__ import annotations

import os
import pathlib

import jax

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def cache_dir(device_count: int) -> pathlib.Path:
    """Directory holding compiled executables for runs with `device_count` local devices."""
    root = os.environ.get("INFOTOK_JAX_CACHE_DIR", str(_REPO_ROOT / ".cache" / "jax"))
    return pathlib.Path(root) / f"devices{device_count}"


def enable(device_count: int | None = None) -> pathlib.Path:
    """Turns on the persistent compilation cache; returns its directory.

    Call before the first compilation. `device_count` defaults to the local device count (which
    initializes the backend, so pass it explicitly when the caller knows it).
    """
    if device_count is None:
        device_count = jax.local_device_count()
    path = cache_dir(device_count)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
