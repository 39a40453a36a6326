"""Compile time of the trainer's state initializer with and without LLVM optimization (CPU).

    python experiments/bench_init_compile.py --rounds=3

An initializer runs once per run, yet on CPU its compile is a fixed cost of every cold start (tests,
smoke runs, study runs on a fresh machine). Per config (host.py arguments; the three study configs and
the tiny hosts), the initializer is lowered and compiled with XLA's default options (the baseline) and
with `train_state.initializer_compiler_options()` (what the trainer uses), alternating, in this process,
without the persistent cache; both executables then run once and their states are compared leaf by leaf.
Prints the median compile seconds (their range over the rounds), the ratio of the medians, and how many
leaves differ and by how many ulps at most.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from infotok_jax import sharding as sharding_lib
from infotok_jax import tasks
from infotok_jax.benchmarks import roofline_report
from infotok_jax.configs import host as host_configs
from infotok_jax.training import train_state

TINY = ("host=ar,tiny", "host=masked,tiny", "host=continuous,tiny")


def _max_ulps(a: np.ndarray, b: np.ndarray) -> int:
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"integer leaves differ ({a.dtype}{a.shape}): not the same initial state")
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(a.dtype))
    return int(np.max(np.abs(a.astype(np.float64) - b) / spacing, initial=0))


def _spread(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f})"


def measure(arg: str, rounds: int) -> dict:
    config = host_configs.get_config(arg)
    task = tasks.build_task(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape)
    setup = train_state.setup(task, config, mesh)
    rng = jax.random.key(config.seed)
    seconds = {"default": [], "initializer": []}
    compiled = {}
    with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
        for _ in range(rounds):
            for name, optimize in (("default", True), ("initializer", False)):
                init = train_state.sharded_initializer(
                    task, setup.tx, setup.state_shardings, optimize=optimize
                )
                lowered = init.lower(rng, setup.abstract_batch)
                start = time.perf_counter()
                compiled[name] = lowered.compile()
                seconds[name].append(time.perf_counter() - start)
    batch = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype, device=s.sharding), setup.abstract_batch)
    states = {name: jax.device_get(fn(rng, batch)) for name, fn in compiled.items()}
    pairs = list(zip(jax.tree.leaves(states["default"]), jax.tree.leaves(states["initializer"]), strict=True))
    differing = [(a, b) for a, b in pairs if not np.array_equal(a, b)]
    return {
        "config": arg,
        "rounds": seconds,
        "ratio": statistics.median(seconds["default"]) / statistics.median(seconds["initializer"]),
        "leaves": len(pairs),
        "differing": len(differing),
        "max_ulps": max((_max_ulps(a, b) for a, b in differing), default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--configs", default="|".join((*roofline_report.CONFIGS[:3], *TINY)))
    parser.add_argument("--rounds", type=int, default=3, help="compiles per variant, alternating")
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; median of {args.rounds} compiles each")
    print("| config | default (s) | no LLVM optimization (s) | ratio | leaves differing | max ulps |")
    print("|---|---|---|---|---|---|")
    for arg in args.configs.split("|"):
        r = measure(arg, args.rounds)
        print(
            f"| {r['config']} | {_spread(r['rounds']['default'])} | {_spread(r['rounds']['initializer'])} "
            f"| {r['ratio']:.2f}x | {r['differing']} of {r['leaves']} | {r['max_ulps']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
