r"""Ahead-of-time compile of a config's train step for a pod-sized mesh, without the hardware or the data.

Two targets, chosen by --topology:

  TPU topology (what maxtext's train_compile does): `libtpu` from PyPI describes a TPU slice without any
  TPU attached (`jax.experimental.topologies.get_topology_desc`), the mesh is built from that slice's
  devices and the step is compiled by the real TPU compiler, so memory_analysis() is the TPU's. It needs
  jax with libtpu; keep it in its own venv so the main one stays CPU-only:
      python3 -m venv .tpuvenv && .tpuvenv/bin/pip install -c constraints.txt -e . 'jax[tpu]'
      .tpuvenv/bin/python experiments/aot_compile.py --config=experiments/configs/base.py --topology=v5e:8x8
  (measured on the 2-core CPU dev box, no TPU: 64 v5e chips, FSDP, see docs/study.md for the numbers.)

  Simulated CPU devices (fallback, any install): --topology=cpu:N sets
  XLA_FLAGS=--xla_force_host_platform_device_count=N and compiles for N CPU devices (CPU memory
  accounting and CPU fusion decisions: a sanity check of sharding and shapes, not a TPU memory budget).
      python experiments/aot_compile.py --config=experiments/configs/base.py --topology=cpu:8

Prints the mesh, the parameter count, memory_analysis() per device (arguments = sharded state + batch,
outputs, temporaries, total = arguments + outputs + temporaries - aliased), the compiler's FLOP estimate
and the wall time of lowering and compiling. Config overrides work as in the binaries
(`--config.data.global_batch_size=512`).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    "topology", "v5e:8x8", "TPU topology name for libtpu (v5e:8x8, v4:4x4x4, v5p:4x4x4, v6e:8x8) or cpu:N."
)
flags.mark_flags_as_required(["config"])

GIB = 1024**3
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}  # per chip


def _devices(topology: str):
    """The devices to compile for: a libtpu topology's, or N simulated CPU devices."""
    import jax

    if topology.startswith("cpu:"):
        return jax.devices("cpu")
    from jax.experimental import topologies

    return topologies.get_topology_desc(platform="tpu", topology_name=topology).devices


def compile_train_step(config, devices):
    """(compiled train step, mesh, parameter count) for `config` on a mesh over `devices`.

    Lowers exactly what the training binary runs: `train_state.setup` inside `sharding.logical_sharding`.
    """
    import jax
    import numpy as np

    from infotok_jax import sharding as sharding_lib
    from infotok_jax import tasks
    from infotok_jax.training import config_checks, train_state

    config_checks.check_training_config(config)
    task = tasks.build_task(config)
    mesh = sharding_lib.make_mesh(config.mesh_shape, devices)
    step_setup = train_state.setup(task, config, mesh)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(step_setup.abstract_state.params))
    with sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config)):
        compiled = step_setup.train_step.lower(step_setup.abstract_state, step_setup.abstract_batch).compile()
    return compiled, mesh, num_params


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    topology = _TOPOLOGY.value
    if topology.startswith("cpu:"):  # read when the CPU backend starts, i.e. after this line
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} "
            f"--xla_force_host_platform_device_count={int(topology[4:])}".strip()
        )
        os.environ["JAX_PLATFORMS"] = "cpu"
        from infotok_jax import compilation_cache

        compilation_cache.enable(int(topology[4:]))  # the binaries' persistent cache (CPU only)
    start = time.perf_counter()
    compiled, mesh, num_params = compile_train_step(_CONFIG.value, _devices(topology))
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    device = mesh.devices.flat[0]
    print(f"target: {topology} ({mesh.devices.size} x {getattr(device, 'device_kind', device.platform)})")
    print(
        f"mesh: {dict(mesh.shape)}   parameters: {num_params / 1e6:.1f}M   "
        f"global batch: {_CONFIG.value.data.global_batch_size}"
    )
    print(
        "memory per device (GiB): "
        f"arguments {m.argument_size_in_bytes / GIB:.3f}  outputs {m.output_size_in_bytes / GIB:.3f}  "
        f"temporaries {m.temp_size_in_bytes / GIB:.3f}  aliased {m.alias_size_in_bytes / GIB:.3f}  "
        f"total {total / GIB:.3f}"
    )
    chip = topology.split(":")[0]
    if chip in HBM_GIB:
        print(f"fits in {chip} HBM ({HBM_GIB[chip]} GiB/chip): {total < HBM_GIB[chip] * GIB}")
    if cost and "flops" in cost:
        print(f"compiler FLOP estimate per device and step: {cost['flops'] / 1e12:.2f} TFLOP")
    print(f"lower + compile wall time: {seconds:.1f} s")


if __name__ == "__main__":
    app.run(main)
