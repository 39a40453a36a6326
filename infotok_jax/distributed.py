"""Multi-process start-up: the one place that calls `jax.distributed.initialize()`.

The training binary calls `initialize(FLAGS.distributed)` before touching any JAX device. Where the
coordinator comes from, in order of precedence:

1. explicit arguments to `initialize`;
2. the environment variables INFOTOK_COORDINATOR_ADDRESS, INFOTOK_NUM_PROCESSES and INFOTOK_PROCESS_ID,
   which `launch/local_multiprocess.py` sets for each child;
3. JAX's own cluster auto-detection (Cloud TPU VMs, SLURM, Open MPI, Kubernetes), used when none of the
   three is given.

The three settings go together: giving some but not all of them is almost always a launcher bug (for
example an address without a process id would make every process claim id 0), so it is an error here
rather than a silent fallback to auto-detection.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

ENV_COORDINATOR_ADDRESS = "INFOTOK_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "INFOTOK_NUM_PROCESSES"
ENV_PROCESS_ID = "INFOTOK_PROCESS_ID"
_ENV_NAMES = (ENV_COORDINATOR_ADDRESS, ENV_NUM_PROCESSES, ENV_PROCESS_ID)

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Coordinator settings; all three None means "let JAX auto-detect the cluster"."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None

    @property
    def auto_detect(self) -> bool:
        return self.coordinator_address is None


def _int_from(value: int | str, name: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; set it to a whole number.") from None


def resolve_settings(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merges explicit arguments over INFOTOK_* environment variables and validates the result.

    Raises ValueError naming the missing or bad setting when only some of the three are given, when a
    count or id is not an integer or out of range, or when the address is not `host:port`.
    """
    env = os.environ if environ is None else environ
    sources = {
        "coordinator_address": (coordinator_address, ENV_COORDINATOR_ADDRESS),
        "num_processes": (num_processes, ENV_NUM_PROCESSES),
        "process_id": (process_id, ENV_PROCESS_ID),
    }
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for arg, (explicit, env_name) in sources.items():
        if explicit is not None:
            values[arg], labels[arg] = explicit, arg
        elif env.get(env_name, "") != "":
            values[arg], labels[arg] = env[env_name], env_name
        else:
            values[arg], labels[arg] = None, f"{arg} (or {env_name})"

    given = [arg for arg, value in values.items() if value is not None]
    if given and len(given) < 3:
        missing = [labels[arg] for arg in values if values[arg] is None]
        present = [f"{labels[arg]}={values[arg]!r}" for arg in given]
        raise ValueError(
            f"Partial distributed settings: got {', '.join(present)} but not {', '.join(missing)}. "
            "Give all three of coordinator address, process count and process id, or none of them "
            "to let jax.distributed auto-detect the cluster (Cloud TPU, SLURM)."
        )
    if not given:
        return Settings(None, None, None)

    address = str(values["coordinator_address"])
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"{labels['coordinator_address']}={address!r} is not of the form host:port "
            "(for example 127.0.0.1:12345)."
        )
    count = _int_from(values["num_processes"], labels["num_processes"])
    index = _int_from(values["process_id"], labels["process_id"])
    if count < 1:
        raise ValueError(f"{labels['num_processes']}={count} must be at least 1.")
    if not 0 <= index < count:
        raise ValueError(
            f"{labels['process_id']}={index} must satisfy 0 <= process_id < num_processes={count}."
        )
    return Settings(address, count, index)


def initialize(
    enabled: bool,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int = 100,
) -> bool:
    """Calls `jax.distributed.initialize` once when `enabled`; returns whether JAX is now multi-process.

    Must run before the first JAX computation (JAX raises otherwise). A second call, or a call after
    someone else initialized jax.distributed, does nothing. With `enabled=False` nothing is initialized;
    a warning is logged if a launcher has set INFOTOK_* variables, since each process would then train
    alone. `local_device_ids` restricts the GPUs this process uses (JAX_LOCAL_DEVICE_IDS also works).
    A process that sends no heartbeat for `heartbeat_timeout_seconds` is declared lost: the coordination
    service then stops the other processes with an error naming the lost task, rather than leaving
    them blocked in a collective.
    """
    if not enabled:
        leftover = [name for name in _ENV_NAMES if os.environ.get(name)]
        if leftover:
            _log.warning(
                "%s set but distributed start-up is disabled: each process runs alone. Pass --distributed.",
                ", ".join(leftover),
            )
        return jax.distributed.is_initialized()
    if jax.distributed.is_initialized():
        return True

    settings = resolve_settings(coordinator_address, num_processes, process_id)
    kwargs: dict[str, Any] = {
        "initialization_timeout": initialization_timeout,
        "heartbeat_timeout_seconds": heartbeat_timeout_seconds,
    }
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    if not settings.auto_detect:
        kwargs.update(
            coordinator_address=settings.coordinator_address,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
        )
    _log.info("jax.distributed.initialize(%s)", kwargs)
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:
        if not settings.auto_detect:
            raise
        raise ValueError(
            f"jax.distributed could not auto-detect a cluster ({e}). Outside Cloud TPU / SLURM, run under "
            f"launch/local_multiprocess.py or set {', '.join(_ENV_NAMES)}."
        ) from e
    return True


_barrier_uses: collections.Counter[str] = collections.Counter()


def barrier(name: str, timeout_seconds: int = 3600) -> None:
    """Blocks until every process reaches the barrier `name` (coordination service, no device collective).

    Unlike a device collective (e.g. `multihost_utils.sync_global_devices`), which on CPU must
    rendezvous within 30 s, this waits up to `timeout_seconds`, so it can cover long host-side work such
    as building a dataset on process 0. A name may be reused: each use is a new barrier, so every
    process must pass the same names in the same order. A no-op on one process.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    _barrier_uses[name] += 1
    key = f"{name} #{_barrier_uses[name]}"
    multihost.sync_global_processes(key, timeout=timeout_seconds, processes=set(range(jax.process_count())))


def _signature(leaf: Any) -> tuple:
    sharding = getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None
    return (np.shape(leaf), str(getattr(leaf, "dtype", type(leaf))), sharding)


class CompiledTogether:
    """A jitted function whose compilations end at a barrier across processes, before they first run.

    On CPU, the first cross-process collective of a device group rendezvouses within a fixed 30 s
    (XLA's gloo key-value timeout). A process still compiling when its peer starts the computation makes
    that rendezvous fail, which happens on loaded machines. Compiling ahead of time on every process
    and waiting at a coordination-service barrier makes all processes start the computation together.
    """

    def __init__(self, jitted: Callable, name: str, static_argnums: Sequence[int] = ()):
        self._jitted, self._name, self._static = jitted, name, tuple(static_argnums)
        self._compiled: dict[tuple, Any] = {}

    def lower(self, *args: Any):
        return self._jitted.lower(*args)

    def __call__(self, *args: Any) -> Any:
        dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
        key = (
            tuple(args[i] for i in self._static),
            jax.tree.structure(dynamic),
            tuple(_signature(leaf) for leaf in jax.tree.leaves(dynamic)),
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._jitted.lower(*args).compile()
            barrier(f"compiled {self._name}")
            self._compiled[key] = compiled
        return compiled(*dynamic)
