r"""The HSIC arm's shared Gram work against the old per-pair path, timed interleaved in one process.

The old path (kept here only, as the reference) computed nHSIC(X,Z), nHSIC(Z,Y) and nHSIC(Z,T) as three
independent calls, rebuilding Z's view, median bandwidth, Gram matrix and centring for each pair. The
library now builds Z's side once (`estimators.hsic_one_to_many`). Both variants are compiled from the
real `HostTask` train step (the trainer's jitted, donated AdamW step, lowered inside
`sharding.logical_sharding`) on a synthetic batch of the experiment config's shapes; one step of each is
timed per round, alternating, so machine drift hits both alike. The regularizer alone (value and gradient
with respect to the tokens) is timed the same way. Prints medians, quartiles, the old/new ratios, and the
largest difference between the two variants' losses (they must agree).

  python experiments/bench_regularizer_sharing.py                 # host.py:host=ar, batch 64, CPU
  python experiments/bench_regularizer_sharing.py --config_arg=host=ar,tiny --rounds=3   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from infotok_jax import estimators, infotok, sharding, tasks  # noqa: E402
from infotok_jax.infotok import bottleneck  # noqa: E402
from infotok_jax.training import train_state  # noqa: E402

HOST_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "host.py"


def per_pair_dependences(z_view, others, *, kernel_z, bandwidth, hsic_estimator, normalized):
    """The old path: one independent (n)HSIC call per pair, Z's side rebuilt every time."""
    fn = estimators.normalized_hsic if normalized else estimators.hsic
    out = {}
    for name, (other, kernel) in others.items():
        a, b, ka, kb = (
            (other, z_view, kernel, kernel_z) if name == "compression" else (z_view, other, kernel_z, kernel)
        )
        out[name] = fn(
            a,
            b,
            kernel_x=ka,
            kernel_y=kb,
            bandwidth_x=bandwidth,
            bandwidth_y=bandwidth,
            estimator=hsic_estimator,
        )
    return out


@contextlib.contextmanager
def old_path():
    """Traces the regularizer with the per-pair dependences (only while lowering the old variant)."""
    shared = bottleneck._dependences
    bottleneck._dependences = per_pair_dependences
    try:
        yield
    finally:
        bottleneck._dependences = shared


def load_config(arg: str):
    spec = importlib.util.spec_from_file_location("host_config", HOST_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.infotok.warmup_steps = 0  # full weights from step 0
    return config


def synthetic_batch(abstract: dict, seed: int) -> dict:
    """Random float fields (images) and token rows (BOS, words), -1 elsewhere: the real batch's shapes."""
    rng = np.random.default_rng(seed)
    batch = {}
    for name, s in abstract.items():
        if jnp.issubdtype(s.dtype, jnp.floating):
            batch[name] = rng.random(s.shape).astype(s.dtype)
        elif name.endswith("_tokens"):
            tokens = rng.integers(4, 40, size=s.shape).astype(np.int32)
            tokens[:, 0] = 1
            batch[name] = tokens
        else:
            batch[name] = np.full(s.shape, -1, np.int32)
    return batch


def interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    """One warm-up call each, then `rounds` rounds of one timed call per variant, alternating."""
    times = {k: [] for k in fns}
    for r in range(rounds + 1):
        for k, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            if r:
                times[k].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]], what: str) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        q1, q3 = np.percentile(v, [25, 75])
        quartiles = f"quartiles {1e3 * q1:.2f}-{1e3 * q3:.2f}, n={len(v)}"
        print(f"{what} {k:>6}: median {1e3 * med[k]:.2f} ms ({quartiles})")
    print(f"{what} ratio old/new: {med['old'] / med['new']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_arg", default="host=ar", help="argument of experiments/configs/host.py")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timed rounds per section")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = load_config(args.config_arg)
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    task = tasks.build_task(config)
    setups = {k: train_state.setup(task, config, mesh) for k in ("old", "new")}  # separate jit caches
    batch = jax.device_put(synthetic_batch(task.abstract_batch(), args.seed), setups["new"].batch_shardings)
    compiled = {}
    with sharding.logical_sharding(mesh):
        for k, s in setups.items():
            with old_path() if k == "old" else contextlib.nullcontext():
                compiled[k] = s.train_step.lower(s.abstract_state, s.abstract_batch).compile()
    s = setups["new"]
    initial = train_state.create_sharded_state(
        task, s.tx, s.state_shardings, jax.random.key(config.seed), s.abstract_batch
    )
    states = {k: jax.device_put(initial, s.state_shardings, may_alias=False) for k in compiled}
    first = {}
    for k in compiled:  # one step of each from the same state: the two paths must agree
        states[k], metrics = compiled[k](states[k], batch, s.seed)
        first[k] = {m: float(v) for m, v in metrics.items() if m == "loss" or m.startswith("infotok/")}
    diff = max(abs(first["old"][m] - first["new"][m]) for m in first["new"])
    print(
        f"host {config.host.kind}, batch {config.data.global_batch_size}, backend {jax.default_backend()}; "
        f"largest |old - new| over loss and infotok metrics after one step: {diff:.2e}"
    )

    def step(k):
        def run():
            states[k], metrics = compiled[k](states[k], batch, s.seed)
            return metrics["loss"]

        return run

    summary(interleaved({k: step(k) for k in compiled}, args.rounds), "train step")

    views = task.infotok_views(batch, {config.infotok.z_source: jnp.zeros((1,))})
    b = config.data.global_batch_size
    z = jax.random.normal(jax.random.key(1), (b, 16, config.host.tokenizer.token_dim))
    views = {**views, "z_BxNxD": z}

    def reg(z_):
        return infotok.regularizer(config.infotok, **{**views, "z_BxNxD": z_}, step=jnp.asarray(0))[0]

    regs = {}
    for k in ("old", "new"):
        with old_path() if k == "old" else contextlib.nullcontext():
            f = jax.jit(jax.value_and_grad(reg)).lower(z).compile()
        regs[k] = lambda f=f: f(z)
    (v_old, g_old), (v_new, g_new) = regs["old"](), regs["new"]()
    rel = float(jnp.linalg.norm(g_old - g_new) / jnp.linalg.norm(g_new))
    print(f"regularizer: |old - new| value {abs(float(v_old - v_new)):.2e}, gradient relative {rel:.2e}")
    summary(interleaved(regs, 5 * args.rounds), "regularizer value+grad")


if __name__ == "__main__":
    main()
