"""The trainer's step against the machine's own matmul rate: is there time left to win?

For one experiment config (the study's `host=ar,...,batch=32`, or the main config) this builds the
trainer's own jitted train step (`train_state.setup`, lowered inside `sharding.logical_sharding`), runs it
on synthetic batches of the config's shapes and measures, in the same process:

  step_s          median step time after warm-up (`block_until_ready` after every step)
  xla_flops       XLA's cost analysis of the compiled step (the host LM's layer loop is unrolled by default,
                  so no loop body is counted once for all its trips)
  lm_flops        the analytic LM count of both passes (`mllm.flops`: 6 x matmul parameters per token +
                  attention), beside XLA's as a check
  matmul_flops    the FLOPs of the step's matrix products: every dot_general and convolution of the lowered
                  program, a convolution as the GEMM it amounts to (M = output positions, K = window x input
                  channels, N = output channels)
  own_matmul_s    those products timed one by one in isolation at their own shapes and dtype, summed: what
                  the step's matrix work alone takes on this machine
and, from `square_rates`, the float32 (and bf16) rate of a large square matmul. `step_s / own_matmul_s` says
how far the step is from its own matrix products; `xla_flops / step_s` against the square rate is the
classic roofline fraction.
"""

from __future__ import annotations

import collections
import math
import re
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax import sharding as sharding_lib
from infotok_jax import tasks
from infotok_jax.benchmarks import timing
from infotok_jax.benchmarks.step_bench import lm_sequence_lengths
from infotok_jax.configs import host as host_configs
from infotok_jax.mllm import flops as flops_lib
from infotok_jax.mllm.hosts.config import lm_config
from infotok_jax.training import train_state

_TYPES = r"\(tensor<([0-9x]*)x?(\w+)>, tensor<([0-9x]*)x?\w+>\) -> tensor<([0-9x]*)x?\w+>"
_DOT = re.compile(
    r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x \[([\d, ]*)\], )?"
    r"contracting_dims = \[([\d, ]*)\] x \[([\d, ]*)\].*?: " + _TYPES
)
_CONV = re.compile(
    r"stablehlo\.convolution.*?dim_numbers = \[[^\]]*\]x\[([^\]]*)\]->\[([^\]]*)\].*?: " + _TYPES
)


_FLOAT_TYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16, "f64": jnp.float64}


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split("x") if d]


def _ints(text: str | None) -> list[int]:
    return [int(d) for d in text.split(",") if d.strip()] if text else []


def _line_product(line: str) -> tuple | None:
    """(batch, M, K, N, dtype) of a dot_general or convolution line (a convolution as its GEMM)."""
    if m := _DOT.search(line):
        lhs_batch, _, lhs_contract, rhs_contract, lhs, dtype, rhs, _ = m.groups()
        lhs_shape, rhs_shape = _dims(lhs), _dims(rhs)
        batch = math.prod(lhs_shape[a] for a in _ints(lhs_batch))
        k = math.prod(lhs_shape[a] for a in _ints(lhs_contract))
        rows = math.prod(lhs_shape) // max(batch * k, 1)
        cols = math.prod(rhs_shape) // max(batch * math.prod(rhs_shape[a] for a in _ints(rhs_contract)), 1)
        return batch, rows, k, cols, dtype
    if m := _CONV.search(line):
        rhs_spec, out_spec, _, dtype, rhs, out = m.groups()
        rhs_shape, out_shape = _dims(rhs), _dims(out)
        cols = out_shape[[s.strip() for s in out_spec.split(",")].index("f")]
        k = math.prod(rhs_shape) // rhs_shape[[s.strip() for s in rhs_spec.split(",")].index("o")]
        return 1, math.prod(out_shape) // cols, k, cols, dtype
    return None


def matrix_products(stablehlo: str) -> collections.Counter:
    """{(batch, M, K, N, dtype): count} of the floating-point dot_generals and convolutions (as GEMMs) of a
    lowered program's text (`Lowered.as_text()`), each function's products counted once per call (a
    `while` body once: the host LM's layer loop is unrolled by default)."""
    products: dict[str, collections.Counter] = {}
    calls: dict[str, collections.Counter] = {}
    name = None
    for line in stablehlo.splitlines():
        if m := re.match(r"\s*func\.func (?:public |private )?@([\w.$-]+)\(", line):
            name = m.group(1)
            products[name], calls[name] = collections.Counter(), collections.Counter()
        elif name is not None:
            calls[name].update(re.findall(r"call @([\w.$-]+)\(", line))
            product = _line_product(line)
            if product is not None and product[-1] in _FLOAT_TYPES:
                products[name][product] += 1

    def total(function: str) -> collections.Counter:
        out = collections.Counter(products[function])
        for callee, count in calls[function].items():
            for product, n in total(callee).items():
                out[product] += n * count
        return out

    return total("main")


def product_flops(products: collections.Counter) -> float:
    return float(sum(2 * b * m * k * n * count for (b, m, k, n, _), count in products.items()))


def time_products(products: collections.Counter, reps: int = 10) -> float:
    """Seconds of all `products` (each timed alone, median of `reps`, times its count)."""
    total = 0.0
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    for (b, m, k, n, dtype), count in products.items():
        lhs = jnp.ones((b, m, k), _FLOAT_TYPES[dtype])
        rhs = jnp.ones((b, k, n), _FLOAT_TYPES[dtype])
        seconds, _, _ = timing.time_fn(lambda lhs=lhs, rhs=rhs: matmul(lhs, rhs), reps, budget_s=1.0)
        total += seconds * count
    return total


def square_rates(size: int, reps: int = 5) -> dict[str, float]:
    """FLOP/s of a size^3 matmul in float32 and bfloat16 (default precision)."""
    return {
        name: timing.matmul_rate(size, dtype, "fast", reps)
        for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))
    }


def synthetic_batch(abstract: dict[str, jax.ShapeDtypeStruct], vocab: int, seed: int = 0) -> dict:
    """Random arrays of the batch's shapes: images and other floats in [0, 1), token rows of words in
    [3, vocab) opened by BOS (1), small non-negative ints elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in abstract.items():
        if jnp.issubdtype(spec.dtype, jnp.floating):
            out[name] = rng.random(spec.shape, np.float32)
        elif name.endswith("_tokens"):
            tokens = rng.integers(3, vocab, spec.shape, np.int32)
            tokens[:, 0] = 1
            out[name] = tokens
        else:
            out[name] = rng.integers(0, 3, spec.shape, np.int32)
    return out


def lm_flops_per_step(host_config: Any, batch: int) -> float:
    """Analytic LM FLOPs of one train step: the understanding and the generation pass."""
    lengths = lm_sequence_lengths(host_config)
    lm_c = lm_config(host_config, max(lengths))
    return float(sum(flops_lib.flops_per_step(lm_c, batch, t) for t in lengths))


class StepUnderTest:
    """The trainer's step of the host config `arg` (host.py's arguments), compiled, with a fresh state and
    synthetic batches; `step()` runs one step and waits for it."""

    def __init__(self, arg: str, overrides: dict[str, Any] | None = None):
        self.arg = arg
        config = host_configs.get_config(arg)
        config.update_from_flattened_dict(overrides or {})  # {"host.lm.num_layers": 3, ...}
        self.config, self.task = config, tasks.build_task(config)
        mesh = sharding_lib.make_mesh(config.mesh_shape)
        self.setup = train_state.setup(self.task, config, mesh)
        self._context = sharding_lib.logical_sharding(mesh, sharding_lib.logical_axis_rules(config))
        with self._context:
            self.lowered = self.setup.train_step.lower()
            self.compiled = self.lowered.compile()
            self.state = train_state.create_sharded_state(
                self.task,
                self.setup.tx,
                self.setup.state_shardings,
                jax.random.key(0),
                self.setup.abstract_batch,
            )
        vocab = config.data.text_vocab_size
        self.batches = [
            jax.device_put(
                synthetic_batch(self.setup.abstract_batch, vocab, seed), self.setup.batch_shardings
            )
            for seed in range(4)
        ]
        self._count = 0

    def step(self) -> dict:
        batch = self.batches[self._count % len(self.batches)]
        self._count += 1
        self.state, metrics = jax.block_until_ready(self.compiled(self.state, batch, self.setup.seed))
        return metrics


def measure(
    under_test: StepUnderTest, *, steps: int = 20, warmup: int = 3, square: dict[str, float]
) -> dict[str, Any]:
    """The roofline row of a step (see the module docstring); `square` from `square_rates`."""
    arg = under_test.arg
    for _ in range(warmup):
        under_test.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        under_test.step()
        times.append(time.perf_counter() - start)
    cost = under_test.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    products = matrix_products(under_test.lowered.as_text())
    row = dict(
        config=arg,
        batch=under_test.config.data.global_batch_size,
        step_s=statistics.median(times),
        step_s_quartiles=[float(q) for q in np.percentile(times, [25, 75])],
        xla_flops=float(cost["flops"]),
        lm_flops=lm_flops_per_step(under_test.config.host, under_test.config.data.global_batch_size),
        matmul_flops=product_flops(products),
        matmul_shapes=len(products),
        own_matmul_s=time_products(products),
        square_float32_flops_per_s=square["float32"],
    )
    row["achieved_flops_per_s"] = row["xla_flops"] / row["step_s"]
    row["own_matmul_flops_per_s"] = row["matmul_flops"] / row["own_matmul_s"]
    row["step_over_own_matmul"] = row["step_s"] / row["own_matmul_s"]
    return row
