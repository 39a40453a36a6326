"""Device mesh and logical-axis sharding rules shared by every model in the project.

Parameters and activations are annotated with *logical* axis names (`nn.with_logical_partitioning`,
`nn.with_logical_constraint`); `LOGICAL_AXIS_RULES` maps them onto the physical mesh axes
`("data", "fsdp", "model")`. Both are config fields: `config.mesh_shape`, with at most one -1 entry that
is filled with the remaining devices, and `config.logical_axis_rules` (default: `LOGICAL_AXIS_RULES`).

Logical names used by the models:
  batch        leading example axis of activations          -> ("data", "fsdp")
  length       sequence / token axis of activations         -> not sharded
  embed        model width of parameters                    -> "fsdp"
  mlp          hidden width of MLP blocks                   -> "model"
  heads        attention heads                              -> "model"
  kv           per-head width                               -> not sharded
  vocab        (text + image code) vocabulary               -> "model"
  codebook     VQ codebook entries                          -> not sharded
  conv_in      convolution input channels                   -> not sharded
  conv_out     convolution output channels                  -> "model"
  height/width spatial kernel axes                          -> not sharded
  layers       stacked layer axis of scanned transformers   -> not sharded
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("vocab", "model"),
    ("codebook", None),
    ("conv_in", None),
    ("conv_out", "model"),
    ("height", None),
    ("width", None),
    ("layers", None),
)


Rules = Sequence[tuple[str, str | Sequence[str] | None]]


def logical_axis_rules(config) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """`config.logical_axis_rules` as hashable tuples, or `LOGICAL_AXIS_RULES` when the config has none."""
    rules = config.get("logical_axis_rules") or LOGICAL_AXIS_RULES
    return tuple(
        (str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in rules
    )


def fill_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces a single -1 in `shape` so that the product equals `num_devices`.

    Raises ValueError naming the problem when the shape cannot tile the devices.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries for axes {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1 (auto-filled)")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape {shape}: entries must be positive or -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if num_devices % known:
            raise ValueError(
                f"mesh shape {shape}: {num_devices} devices are not divisible by the fixed axes ({known})"
            )
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if int(np.prod(shape)) != num_devices:
        raise ValueError(
            f"mesh shape {shape} covers {int(np.prod(shape))} devices but {num_devices} are available; "
            "set one axis to -1 to auto-fill"
        )
    return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ("data", "fsdp", "model") mesh with Auto axis types (linen constraints need Auto)."""
    devices = list(jax.devices() if devices is None else devices)
    filled = fill_mesh_shape(shape, len(devices))
    device_grid = np.asarray(devices, dtype=object).reshape(filled)
    return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Sharding of a batch array: leading axis over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_axis_size(mesh: Mesh) -> int:
    """Number of shards the batch axis is split into."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


@contextlib.contextmanager
def logical_sharding(mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES) -> Iterator[Mesh]:
    """Makes the models' logical activation constraints bind while tracing inside this context.

    `nn.with_logical_constraint` is a no-op unless logical axis rules and a mesh are in scope when the
    function is traced; `jax.set_mesh` must be entered outside `jax.jit`, so trace, lower and call jitted
    steps inside `with logical_sharding(mesh):`.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield mesh
