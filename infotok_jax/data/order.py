"""Example order as a pure function of (seed, step), and per-host sharding of each global batch.

The examples form one stream: position j of the stream is example perm_e[j mod N] of epoch e = j // N,
where perm_e is a permutation drawn from (seed, e) (the identity without shuffling). Global batch k is
positions [k G, (k+1) G); process p of P takes the contiguous slice [p G/P, (p+1) G/P) of it, so the
hosts' slices tile the global batch exactly once and any step can be recomputed without replaying the
stream. The QA pair shown with an example is picked by a hash of (seed, epoch, example id).
"""

from __future__ import annotations

import functools
import threading

import jax
import numpy as np

_MASK64 = (1 << 64) - 1
_lock = threading.Lock()


def check_global_batch(global_batch_size: int, process_count: int, batch_shards: int = 1) -> int:
    """Returns the local batch size; raises if the global batch does not split evenly."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size} must be >= 1")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the process count "
            f"({process_count}); use a multiple of {process_count}"
        )
    if global_batch_size % batch_shards:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the mesh's batch axes "
            f"('data' x 'fsdp' = {batch_shards}); use a multiple of {batch_shards}"
        )
    return global_batch_size // process_count


def host_slice(
    global_batch_size: int, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """Rows of each global batch that this host loads (defaults: jax.process_index()/process_count())."""
    process_index = jax.process_index() if process_index is None else int(process_index)
    process_count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count})")
    local = check_global_batch(global_batch_size, process_count)
    return slice(process_index * local, (process_index + 1) * local)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_examples)
    perm.setflags(write=False)
    return perm


def permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """Read-only permutation of range(num_examples) for one epoch (thread-safe, cached)."""
    with _lock:
        return _permutation(int(seed), int(epoch), int(num_examples))


def stream_position_to_example(position: int, num_examples: int, seed: int, shuffle: bool) -> tuple[int, int]:
    """(example id, epoch) at a stream position."""
    epoch, pos = divmod(int(position), int(num_examples))
    if not shuffle:
        return pos, epoch
    return int(permutation(seed, epoch, num_examples)[pos]), epoch


def qa_key(seed: int, epoch: int, example_id: int) -> int:
    """Deterministic 31-bit key from (seed, epoch, example id) (splitmix64 finaliser)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(example_id)) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & 0x7FFFFFFF
