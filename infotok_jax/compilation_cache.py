"""Persistent XLA compilation cache, in a directory chosen without ever writing into site-packages.

Compiles dominate small CPU runs (tests, smoke runs); caching them cuts a test session several-fold.
Where the cache lives (first that applies):

1. `$INFOTOK_JAX_CACHE_DIR/devices<N>`: this project's override (the study runner sets it);
2. JAX's own setting, `JAX_COMPILATION_CACHE_DIR` or `jax.config.jax_compilation_cache_dir` set before
   `enable()`: used as it is, never overridden;
3. `<repository>/.cache/jax/devices<N>` when running from a source checkout (`pip install -e .`);
4. `$XDG_CACHE_HOME/infotok_jax/jax/devices<N>`, else `~/.cache/infotok_jax/jax/devices<N>`, for an
   installed package.

JAX's cache key already includes the device count, but this project's directories keep entries compiled
for different simulated device counts apart anyway, so that no run can pick up another's executables.
"""

from __future__ import annotations

import os
import pathlib

import jax
from etils import epath

_PACKAGE_PARENT = pathlib.Path(__file__).resolve().parent.parent
_THRESHOLDS = {  # cache every compile (CPU test programs compile fast), unless the user chose otherwise
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
}


def _source_checkout() -> pathlib.Path | None:
    """The repository root when the package is imported from a checkout rather than site-packages."""
    return _PACKAGE_PARENT if (_PACKAGE_PARENT / "pyproject.toml").is_file() else None


def user_cache_root() -> pathlib.Path:
    """Per-user cache root of this project: $XDG_CACHE_HOME/infotok_jax, else ~/.cache/infotok_jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "infotok_jax"


def cache_dir(device_count: int) -> pathlib.Path:
    """Directory holding compiled executables for runs with `device_count` local devices.

    Ignores JAX's own setting (rule 2 above), which `enable()` honours before calling this.
    """
    if os.environ.get("INFOTOK_JAX_CACHE_DIR"):
        root = pathlib.Path(os.environ["INFOTOK_JAX_CACHE_DIR"])
    elif (checkout := _source_checkout()) is not None:
        root = checkout / ".cache" / "jax"
    else:
        root = user_cache_root() / "jax"
    return root / f"devices{device_count}"


def enable(device_count: int | None = None) -> epath.Path:
    """Turns on the persistent compilation cache; returns its directory (JAX's own setting may be gs://).

    Call before the first compilation. `device_count` defaults to the local device count (which
    initializes the backend, so pass it explicitly when the caller knows it).
    """
    for name, value in _THRESHOLDS.items():
        if name.upper() not in os.environ:
            jax.config.update(name, value)
    user_dir = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if user_dir and not os.environ.get("INFOTOK_JAX_CACHE_DIR"):
        return epath.Path(user_dir)
    if device_count is None:
        device_count = jax.local_device_count()
    path = cache_dir(device_count)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return epath.Path(path)
