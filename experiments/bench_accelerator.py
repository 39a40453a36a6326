"""One-run accelerator benchmark: matmul floors, the HSIC hot path against them, and train-step MFU.

Everything is measured in the same process, so every ratio is against floors of the same run:
  floors   8192^3 matmul rates (bf16; float32 at DEFAULT = TF32 on NVIDIA; float32 HIGHEST) and, per n,
           one (n, d) x (d, n) Gram matmul at DEFAULT and HIGHEST (n > 16384: a 16384-row slab x n / 16384).
  hsic     n in --sizes, d = 1024, gaussian kernels at fixed bandwidths (medians of the inputs, computed
           once; the median's own cost is reported apart), "fast" and "exact", dense (n <= dense_max: the
           library's dense path, called past its n <= 1024 switch) and blocked (the public `hsic`), forward
           and forward+backward (gradient w.r.t. x). Floor = two Gram matmuls (4 n^2 d FLOP) at the same
           precision. Value and gradient are checked against a float64 reference (JAX x64, textbook formula,
           analytic gradient) on fresh random inputs wherever n <= ref_max.
  batched  12 feature sets against one target: `batched_hsic` vs 12 separate `hsic` calls; floor = 13 Grams.
  memory   compiled.memory_analysis() of every blocked forward+backward (n = 262144: the O(n d) claim).
  steps    the project's jitted, donated AdamW train step (training.train_state.make_train_step) of the
           tokenizer and of each host (ar, masked, continuous) at a base size in bf16, InfoTok estimator
           none / hsic / vib: step time, tokens/s, MFU against the measured bf16 rate, regularizer overhead.
           MFU counts the LM honestly (mllm.flops: 6 x matmul params per token + causal attention at half,
           also for omni masks, so it under-counts) plus 3 x the XLA cost_analysis FLOPs of the tokenizer
           forward (convs, VQ distances, elementwise work); heads, losses, regularizer, optimizer are not.

  python experiments/bench_accelerator.py --out bench_accelerator.json      # H200: everything, ~8 min
  python experiments/bench_accelerator.py --tiny --out /tmp/tiny.json       # CPU smoke test, every code path
  python experiments/bench_accelerator.py --cpu_overhead                    # default host, batch 32, on a CPU
The JSON is rewritten after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import importlib.util
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import infotok_jax

if not (importlib.util.find_spec("tensorflow_datasets") and importlib.util.find_spec("grain")):
    # infotok.views needs only infotok_jax.data.scenes_spec (pure NumPy), but the package's __init__ imports
    # the input pipeline (tensorflow-datasets, grain), which the accelerator image lacks: a bare package
    # object stands in so that only the submodules this benchmark uses are loaded.
    _data = types.ModuleType("infotok_jax.data")
    _data.__path__ = [str(pathlib.Path(infotok_jax.__file__).parent / "data")]
    sys.modules["infotok_jax.data"] = _data

from infotok_jax import estimators as est  # noqa: E402
from infotok_jax import infotok, sharding  # noqa: E402
from infotok_jax import tokenizer as tok  # noqa: E402
from infotok_jax.estimators import gram_sums, hsic_estimators  # noqa: E402
from infotok_jax.mllm import flops as flops_lib  # noqa: E402
from infotok_jax.mllm import hosts  # noqa: E402
from infotok_jax.mllm.hosts import common as host_common  # noqa: E402
from infotok_jax.training import optimizer as optimizer_lib  # noqa: E402
from infotok_jax.training import train_state  # noqa: E402

SLAB = 16384
VALUE_TOL = {"fast": 1e-3, "exact": 1e-5}  # relative error of the value vs float64 (issue 2 policy)
GRAD_TOL = {"fast": 1e-2, "exact": 1e-4}  # relative Frobenius error of the gradient w.r.t. x
PROFILES = {
    "full": dict(sizes=(4096, 16384, 65536, 262144), d=1024, dense_max=16384, ref_max=16384,
                 batched=(4096, 16384), mm=8192, steps="base"),
    "tiny": dict(sizes=(200, 700), d=16, dense_max=1024, ref_max=1024, batched=(300,), mm=256, steps="tiny"),
}
TEXT_WORDS = 44  # caption words of the scenes data: the T view's bag-of-words size
NUM_CLASSES = 10  # Y view: one-hot labels
ALL_ARMS = ("none", "hsic", "vib")
# --tiny: every model and every estimator code path (categorical rate: masked; Gaussian rate: continuous)
TINY_ARMS = {"tokenizer": ALL_ARMS, "ar": ("none", "hsic"), "masked": ("none", "vib"),
             "continuous": ("none", "vib")}
CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class Report:
    """Collects sections and rewrites the JSON file after every added row."""

    def __init__(self, path: str, meta: dict[str, Any]):
        self.path, self.data = path, {"meta": meta}

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.data.setdefault(section, []).append(row)
        with open(self.path, "w") as f:
            json.dump(self.data, f, indent=1, default=float)


def time_fn(fn: Callable[[], Any], reps: int, budget_s: float = 5.0) -> tuple[float, Any, int]:
    """(median seconds, last output, timed calls): one warm-up call, then up to `reps` timed calls
    (fewer when a call is slow, so that the timed calls fit in about `budget_s`)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    count = max(1, min(reps, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    times = []
    for _ in range(count):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, count


def compile_all(lowered: dict[Any, Any], threads: int, options: dict | None = None) -> dict[Any, Any]:
    """Compiles lowered programs, `threads` at a time (XLA compiles outside the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        futures = {name: pool.submit(low.compile, options) for name, low in lowered.items()}
        return {name: f.result() for name, f in futures.items()}


def _prec(precision: str) -> lax.Precision:
    return lax.Precision.HIGHEST if precision == "exact" else lax.Precision.DEFAULT


def matmul_rate(size: int, dtype: Any, precision: str, reps: int) -> float:
    """FLOP/s of a size^3 matmul in `dtype` at the policy's precision."""
    a = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
    mm = jax.jit(lambda p, q: jnp.matmul(p, q, precision=_prec(precision)))
    seconds, _, _ = time_fn(lambda: mm(a, a), reps)
    return 2.0 * size**3 / seconds


def gram_seconds(n: int, d: int, precision: str, reps: int) -> tuple[float, bool]:
    """Seconds of one (n, d) x (d, n) float32 matmul (slab-extrapolated past SLAB rows), extrapolated?"""
    rows = min(n, SLAB)
    a = jax.random.normal(jax.random.PRNGKey(2), (rows, d), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(3), (n, d), jnp.float32)
    mm = jax.jit(lambda p, q: lax.dot_general(p, q, (((1,), (1,)), ((), ())), precision=_prec(precision),
                                              preferred_element_type=jnp.float32))
    seconds, _, _ = time_fn(lambda: mm(a, b), reps)
    return seconds * n / rows, rows < n


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def hsic_inputs(key: jax.Array, sets: int, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """Dependent pairs: y ~ N(0, I) (n, d); xs[s] = tanh(y W_s) + (0.25 + 0.1 s) noise, (sets, n, d)."""
    ky, kw, kn = jax.random.split(key, 3)
    y_NxD = jax.random.normal(ky, (n, d), jnp.float32)
    w_SxDxD = jax.random.normal(kw, (sets, d, d), jnp.float32) / math.sqrt(d)
    scale_S = 0.25 + 0.1 * jnp.arange(sets, dtype=jnp.float32)
    xs = jnp.tanh(jnp.einsum("nd,sde->sne", y_NxD, w_SxDxD, precision=lax.Precision.HIGHEST))
    return xs + scale_S[:, None, None] * jax.random.normal(kn, (sets, n, d), jnp.float32), y_NxD


def dense_hsic(x_NxD: jax.Array, y_NxE: jax.Array, bandwidths: tuple[float, float],
               precision: str) -> jax.Array:
    """The library's dense biased-HSIC path (what `hsic` runs for n <= 1024), for any n."""
    sides = [gram_sums.make_side(a[None].astype(jnp.float32), jnp.full((1,), bw, jnp.float32), "gaussian")
             for a, bw in zip((x_NxD, y_NxE), bandwidths, strict=True)]
    s = gram_sums.dense_sums(*sides, unbiased=False, precision=precision, need_self=False)
    return gram_sums.combine(s.s_kl_S, s.r_k_SxN, s.r_l_N[None], x_NxD.shape[0], False)[0]


@jax.jit
def reference_hsic(x_NxD: jax.Array, y_NxE: jax.Array, bw_x: jax.Array, bw_y: jax.Array):
    """Biased HSIC tr(K H L H) / (n-1)^2 and its gradient w.r.t. x, from the textbook formulas.

    Call under `jax.enable_x64(True)` with float64 inputs. With G = H L H / (n-1)^2 and W = G * K
    (elementwise), d HSIC / d x_i = -(2 / bw_x^2) sum_j W_ij (x_i - x_j) for the gaussian kernel.
    """
    n = x_NxD.shape[0]

    def gram(a: jax.Array, bw: jax.Array) -> jax.Array:
        sq_N = jnp.sum(a * a, axis=1)
        d2 = sq_N[:, None] + sq_N[None, :] - 2.0 * jnp.matmul(a, a.T, precision=lax.Precision.HIGHEST)
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2.0 * bw * bw))

    def center(m: jax.Array) -> jax.Array:
        return m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + jnp.full((1, 1), m.mean())

    k, lc = gram(x_NxD, bw_x), center(gram(y_NxE, bw_y)) / ((n - 1.0) * (n - 1.0))
    w = lc * k
    grad = -(2.0 / (bw_x * bw_x)) * (w.sum(1)[:, None] * x_NxD
                                      - jnp.matmul(w, x_NxD, precision=lax.Precision.HIGHEST))
    return jnp.sum(k * lc), grad


def reference(x: jax.Array, y: jax.Array, bw: tuple[float, float]) -> tuple[float, np.ndarray]:
    with jax.enable_x64(True):
        value, grad = reference_hsic(x.astype(jnp.float64), y.astype(jnp.float64),
                                     jnp.float64(bw[0]), jnp.float64(bw[1]))
        return float(value), np.asarray(grad)


def rel_err(value: Any, ref: Any) -> float:
    value, ref = np.asarray(value, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(value - ref) / max(np.linalg.norm(ref), 1e-300))


def bench_hsic(args: argparse.Namespace, prof: dict, report: Report, gram_s: dict) -> None:
    """Dense/blocked x fast/exact x fwd/fwd+bwd for every n, checked against float64 where affordable."""
    for n in args.sizes:
        xs, y = hsic_inputs(jax.random.PRNGKey(args.seed + n), 1, n, args.d)
        x = xs[0]
        bw = (float(est.median_bandwidth(x)), float(est.median_bandwidth(y)))
        medians = jax.jit(lambda a, b: (est.median_bandwidth(a), est.median_bandwidth(b)))
        median_s, _, _ = time_fn(functools.partial(medians, x, y), args.reps)
        ref = reference(x, y, bw) if n <= prof["ref_max"] else None
        block = args.block_size or hsic_estimators.default_block_size(n)
        for precision in ("fast", "exact"):
            for variant in (("dense", "blocked") if n <= prof["dense_max"] else ("blocked",)):
                if variant == "dense":
                    f = functools.partial(dense_hsic, bandwidths=bw, precision=precision)
                else:
                    f = functools.partial(est.hsic, bandwidth_x=bw[0], bandwidth_y=bw[1], precision=precision,
                                          block_size=block)
                fwd, fb = jax.jit(f), jax.jit(jax.value_and_grad(f))
                row: dict[str, Any] = dict(n=n, d=args.d, precision=precision, variant=variant,
                                           block=block if variant == "blocked" else n, median_bw_s=median_s)
                lowered_fb = fb.lower(x, y)
                compiled_fb = lowered_fb.compile()
                if variant == "blocked":
                    report.add("memory", memory_row(compiled_fb, n, args.d, precision))
                row["fwd_s"], value, row["fwd_reps"] = time_fn(functools.partial(fwd, x, y), args.reps)
                row["fwd_bwd_s"], (value_fb, grad), row["fwd_bwd_reps"] = time_fn(
                    functools.partial(compiled_fb, x, y), args.reps)
                floor = 2.0 * gram_s[(n, precision)]
                row.update(floor_s=floor, fwd_over_floor=row["fwd_s"] / floor,
                           fwd_bwd_over_floor=row["fwd_bwd_s"] / floor, value=float(value))
                if ref is not None:
                    row.update(rel_err=max(rel_err(value, ref[0]), rel_err(value_fb, ref[0])),
                               grad_rel_err=rel_err(grad, ref[1]), tol=VALUE_TOL[precision],
                               grad_tol=GRAD_TOL[precision])
                    row["check_passed"] = bool(row["rel_err"] <= row["tol"]
                                               and row["grad_rel_err"] <= row["grad_tol"])
                report.add("hsic", row)
                print_row(row)
        del xs, y, x


def memory_row(compiled: Any, n: int, d: int, precision: str) -> dict[str, Any]:
    """Compiled memory of a blocked forward+backward against O(n d) and n^2."""
    m = compiled.memory_analysis()
    row = dict(n=n, d=d, precision=precision, temp_bytes=m.temp_size_in_bytes,
               argument_bytes=m.argument_size_in_bytes, output_bytes=m.output_size_in_bytes,
               n_d_float32_bytes=4.0 * n * d, n2_float32_bytes=4.0 * n * n)
    row["temp_over_n_d"] = row["temp_bytes"] / row["n_d_float32_bytes"]
    return row


def bench_batched(args: argparse.Namespace, prof: dict, report: Report, gram_s: dict) -> None:
    """batched_hsic over `sets` feature sets vs as many separate hsic calls (fast precision)."""
    for n in prof["batched"]:
        xs, y = hsic_inputs(jax.random.PRNGKey(args.seed + 7 * n), args.sets, n, args.d)
        bw = (float(est.median_bandwidth(xs[0])), float(est.median_bandwidth(y)))
        kw = dict(bandwidth_x=bw[0], bandwidth_y=bw[1], precision="fast")
        batched = jax.jit(functools.partial(est.batched_hsic, **kw))
        single = jax.jit(functools.partial(est.hsic, **kw))
        parts = [xs[i] for i in range(args.sets)]
        row: dict[str, Any] = dict(n=n, d=args.d, sets=args.sets)
        row["batched_s"], values, _ = time_fn(functools.partial(batched, xs, y), args.reps)
        row["separate_s"], separate, _ = time_fn(
            lambda single=single, y=y, parts=parts: [single(p, y) for p in parts], args.reps)
        floor = (args.sets + 1) * gram_s[(n, "fast")]
        row.update(speedup=row["separate_s"] / row["batched_s"], floor_s=floor,
                   batched_over_floor=row["batched_s"] / floor, sets_per_s=args.sets / row["batched_s"],
                   rel_diff_vs_separate=rel_err(values, np.asarray(separate)), tol=VALUE_TOL["fast"])
        if n <= prof["ref_max"]:
            refs = [reference(p, y, bw)[0] for p in parts]
            row["max_rel_err"] = max(rel_err(v, r) for v, r in zip(np.asarray(values), refs, strict=True))
            row["check_passed"] = bool(row["max_rel_err"] <= row["tol"]
                                       and row["rel_diff_vs_separate"] <= row["tol"])
        report.add("batched", row)
        print(f"batched n={n} sets={args.sets}: {1e3 * row['batched_s']:.2f} ms vs separate "
              f"{1e3 * row['separate_s']:.2f} ms ({row['speedup']:.2f}x), "
              f"{row['batched_over_floor']:.2f}x floor", flush=True)


def print_row(row: dict[str, Any]) -> None:
    check = (f"rel {row['rel_err']:.1e} grad {row['grad_rel_err']:.1e} "
             f"{'ok' if row['check_passed'] else 'FAIL'}" if "rel_err" in row else "unchecked")
    print(f"hsic n={row['n']} {row['precision']} {row['variant']}: fwd {1e3 * row['fwd_s']:.2f} ms "
          f"({row['fwd_over_floor']:.2f}x floor), fwd+bwd {1e3 * row['fwd_bwd_s']:.2f} ms "
          f"({row['fwd_bwd_over_floor']:.2f}x), {check}", flush=True)


# ---------------------------------------------------------------------------------------------- steps
def tokenizer_config(profile: str) -> Any:
    c = tok.default_config()
    if profile == "base":
        c.update(image_size=64, patch_size=4, width=128, conv_max_mult=2, num_blocks=2, norm_groups=32,
                 token_dim=16, codebook_size=1024, dtype="bfloat16")
    elif profile == "tiny":
        c.update(image_size=16, patch_size=4, width=16, norm_groups=4, token_dim=8, codebook_size=32,
                 dtype="bfloat16")
    return c


def host_config(kind: str, profile: str) -> Any:
    c = hosts.default_host_config(kind)
    if profile == "default":
        return c
    quantizer = c.tokenizer.quantizer
    c.tokenizer = tokenizer_config(profile)
    c.tokenizer.quantizer = quantizer
    if profile == "base":  # GPT-2-small sized LM, 32768-entry vocabulary as in the anchors' baseline
        c.lm.update(num_layers=12, embed_dim=768, num_heads=12, num_kv_heads=12, head_dim=64, mlp_dim=3072,
                    dtype="bfloat16")
        c.text_vocab_size = 32768 - tok.num_codes(c.tokenizer) - 2
    else:
        c.lm.update(num_layers=2, embed_dim=32, num_heads=2, num_kv_heads=2, head_dim=16, mlp_dim=64,
                    dtype="bfloat16")
        c.update(max_caption_len=8, max_question_len=4, max_answer_len=4)
        c.flow.update(width=16, depth=1, samples_per_token=1)
    return c


class BenchTask:
    """The training.task.Task methods the train step needs: the tokenizer/host losses plus InfoTok, as in
    infotok_jax.tasks, on synthetic batches (Y: one-hot labels; T: bag of caption words)."""

    def __init__(self, model: nn.Module, is_host: bool, ib_config: Any):
        self.model, self.is_host, self.ib = model, is_host, ib_config

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        del batch
        init = hosts.init_variables if self.is_host else tok.init_variables
        return dict(init(self.model, rng))

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        rngs = {"sample": sample_rng, "revive": revive_rng}
        variables = {"params": params, **mutable}
        if self.is_host:
            (loss, metrics, out), new = self.model.apply(variables, batch, train=True, rngs=rngs,
                                                         mutable=list(mutable))
        else:
            out, new = self.model.apply(variables, batch["image"], train=True, rngs=rngs,
                                        mutable=list(mutable))
            loss = jnp.mean(jnp.square(out["recon"] - batch["image"]))
            loss, metrics = loss + sum(out["losses"].values(), jnp.zeros((), jnp.float32)), {}
        reg, ib_metrics = infotok.regularizer(
            self.ib, x_view_BxF=infotok.pixel_view(batch["image"], self.ib.x_view_size),
            z_BxNxD=out[self.ib.z_source], y_BxE=infotok.label_embedding(batch["label"], NUM_CLASSES),
            t_BxE=infotok.caption_embedding(batch["caption_tokens"], TEXT_WORDS), tokenizer_out=out,
            step=step)
        return loss + reg, ({**metrics, **ib_metrics}, dict(new))


def synthetic_batch(c: Any, tok_c: Any, batch: int, seed: int) -> dict[str, jax.Array]:
    """Random images, labels and all-valid token rows (words in [3, TEXT_WORDS))."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    s = tok_c.image_size
    out = {"image": jax.random.uniform(keys[0], (batch, s, s, 3)),
           "label": jax.random.randint(keys[1], (batch,), 0, NUM_CLASSES)}
    lengths = dict(caption_tokens=c.max_caption_len, question_tokens=c.max_question_len,
                   answer_tokens=c.max_answer_len) if c is not None else dict(caption_tokens=8)
    for key, (name, length) in zip(keys[2:], lengths.items(), strict=False):
        out[name] = jax.random.randint(key, (batch, length), 3, TEXT_WORDS).at[:, 0].set(1)
    return out


def lm_sequence_lengths(c: Any) -> tuple[int, int]:
    """LM positions per example of host config `c`: understanding [question | BOI | image | EOI | answer] and
    generation [caption | BOI | image (| EOI: masked, continuous)]; both passes run in every train step."""
    n = tok.num_tokens(c.tokenizer)
    return (c.max_question_len + n + 2 + c.max_answer_len,
            c.max_caption_len + 1 + n + (0 if c.kind == "ar" else 1))


def xla_flops(fn: Callable, *args: Any) -> float:
    """XLA's FLOP count of fn(*args) (no loops in the tokenizer, so nothing is counted once per scan)."""
    lowered = jax.jit(fn).lower(*args)
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def step_variant(kind: str, estimator: str, profile: str, batch_size: int, seed: int) -> dict[str, Any]:
    """Model, task, batch, abstract state, jitted step and the model-FLOP count of one variant."""
    is_host = kind != "tokenizer"
    c = host_config(kind, profile) if is_host else None
    tok_c = c.tokenizer if is_host else tokenizer_config(profile)
    model = hosts.build_host(c) if is_host else tok.build_tokenizer(tok_c)
    ib = infotok.default_config()
    ib.update(estimator=estimator, warmup_steps=0, x_view_size=min(8, tok_c.image_size))
    infotok.validate(ib, tok_c.quantizer)
    task = BenchTask(model, is_host, ib)
    tx, schedule = optimizer_lib.make_optimizer(optimizer_lib.default_config(), 1000)
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    batch = synthetic_batch(c, tok_c, batch_size, seed)
    rng = jax.random.PRNGKey(seed)
    abstract, shardings = train_state.state_shardings(task, tx, mesh, rng, batch)
    batch_sh = train_state.batch_shardings_for(batch, mesh)
    step = train_state.make_train_step(task, tx, schedule, seed, mesh, shardings, batch_sh)
    tmodel = tok.SharedTokenizer(tok_c)
    tvars = nn.unbox(jax.eval_shape(lambda: tok.init_variables(tmodel, rng)))
    images = jax.ShapeDtypeStruct((batch_size, tok_c.image_size, tok_c.image_size, 3), jnp.float32)
    tok_flops = 3.0 * xla_flops(lambda v, im: tmodel.apply(v, im, train=False), tvars, images)
    v = dict(kind=kind, estimator=estimator, batch=batch_size, tokenizer_flops=tok_flops, lm_flops=0.0,
             image_tokens_per_step=batch_size * tok.num_tokens(tok_c), lm_tokens_per_step=0)
    if is_host:
        t_und, t_gen = lm_sequence_lengths(c)
        lm_c = host_common.lm_config(c, max(t_und, t_gen))
        v["lm_flops"] = sum(flops_lib.flops_per_step(lm_c, batch_size, t) for t in (t_und, t_gen))
        v["lm_tokens_per_step"] = batch_size * (t_und + t_gen)
        v["lm_params"] = flops_lib.matmul_params(lm_c)
    v["model_flops"] = v["lm_flops"] + v["tokenizer_flops"]
    return dict(row=v, task=task, tx=tx, shardings=shardings, batch=jax.device_put(batch, batch_sh),
                lowered=step.lower(abstract, batch), rng=rng)


def bench_steps(args: argparse.Namespace, profile: str, arms: dict[str, Sequence[str]], report: Report,
                bf16_rate: float | None, section: str = "steps") -> None:
    """Compiles every (model, estimator) step (threaded). Per model, every arm starts from a copy of the same
    initial state and the arms are timed interleaved (one step of each per round, median over rounds after
    one warm-up step), so machine drift hits all arms alike. Overhead is relative to the "none" arm."""
    variants = {}
    for kind, estimators in arms.items():
        size = args.tokenizer_batch if kind == "tokenizer" else args.host_batch
        for estimator in estimators:
            variants[(kind, estimator)] = step_variant(kind, estimator, profile, size, args.seed)
    start = time.perf_counter()
    options = CPU_FAST_COMPILE if args.tiny else None
    compiled = compile_all({k: v["lowered"] for k, v in variants.items()}, args.compile_threads, options)
    print(f"compiled {len(compiled)} train steps in {time.perf_counter() - start:.1f} s", flush=True)
    for kind in arms:
        keys = [k for k in variants if k[0] == kind]
        first = variants[keys[0]]
        initial = train_state.create_sharded_state(first["task"], first["tx"], first["shardings"],
                                                   first["rng"], first["batch"])
        states = {k: jax.device_put(initial, variants[k]["shardings"], may_alias=False) for k in keys}
        del initial
        times: dict[Any, list[float]] = {k: [] for k in keys}
        for round_ in range(args.reps + 1):
            for k in keys:
                begin = time.perf_counter()
                states[k], metrics = jax.block_until_ready(compiled[k](states[k], variants[k]["batch"]))
                if round_:
                    times[k].append(time.perf_counter() - begin)
                variants[k]["row"]["loss_finite"] = bool(np.isfinite(float(metrics["loss"])))
        for k in keys:
            row = variants[k]["row"]
            row["step_s"], row["reps"] = statistics.median(times[k]), len(times[k])
            row["step_s_p25"], row["step_s_p75"] = (float(q) for q in np.percentile(times[k], [25, 75]))
            if args.profile_dir:
                with jax.profiler.trace(os.path.join(args.profile_dir, f"{k[0]}_{k[1]}")):
                    for _ in range(3):
                        states[k], _ = jax.block_until_ready(compiled[k](states[k], variants[k]["batch"]))
            row["images_per_s"] = row["batch"] / row["step_s"]
            row["lm_tokens_per_s"] = row["lm_tokens_per_step"] / row["step_s"]
            row["image_tokens_per_s"] = row["image_tokens_per_step"] / row["step_s"]
            if bf16_rate:
                row["mfu"] = row["model_flops"] / row["step_s"] / bf16_rate
                row["mfu_lm_only"] = row["lm_flops"] / row["step_s"] / bf16_rate
            row["overhead_pct"] = 100.0 * (row["step_s"] / variants[keys[0]]["row"]["step_s"] - 1.0)
            report.add(section, row)
            print(f"step {kind:>10} {k[1]:>4}: {1e3 * row['step_s']:.2f} ms (quartiles "
                  f"{1e3 * row['step_s_p25']:.2f}-{1e3 * row['step_s_p75']:.2f}), overhead "
                  f"{row['overhead_pct']:+.1f}%, MFU {row.get('mfu', float('nan')):.3f}", flush=True)
        del states


# ---------------------------------------------------------------------------------------------- output
def _f(x: float | None, scale: float = 1e3, spec: str = ".2f") -> str:
    return "-" if x is None else format(x * scale, spec)


def _check(row: dict[str, Any]) -> str:
    return ("ok" if row["check_passed"] else "FAIL") if "check_passed" in row else "-"


def _table(title: str, header: str, lines: list[str]) -> list[str]:
    return ["", f"## {title}", f"| {header} |", "|" + "---|" * (header.count("|") + 1)] + lines


def markdown(data: dict[str, Any]) -> str:
    """Compact Markdown tables of every section present."""
    m = data["meta"]
    out = [f"device {m['device']} ({m['backend']}), jax {m['jax']}, {m['date']}, seed {m['seed']}"]
    if "floors" in data:
        out += _table("Matmul rates (size^3)", "dtype / precision | size | TFLOP/s",
                      [f"| {r['what']} | {r['size']} | {r['tflops']:.1f} |" for r in data["floors"]])
    if "hsic" in data:
        out += _table("HSIC (floor = two (n,d)x(d,n) Gram matmuls at the same precision)",
                      "n | prec | variant | block | fwd ms | fwd/floor | f+b ms | f+b/floor | floor ms | "
                      "median bw ms | rel err | grad rel err | check",
                      [f"| {r['n']} | {r['precision']} | {r['variant']} | {r['block']} | {_f(r['fwd_s'])} | "
                       f"{r['fwd_over_floor']:.2f} | {_f(r['fwd_bwd_s'])} | {r['fwd_bwd_over_floor']:.2f} | "
                       f"{_f(r['floor_s'])} | {_f(r['median_bw_s'])} | {_f(r.get('rel_err'), 1, '.1e')} | "
                       f"{_f(r.get('grad_rel_err'), 1, '.1e')} | {_check(r)} |" for r in data["hsic"]])
    if "batched" in data:
        out += _table("Batched HSIC (fast; floor = sets + 1 Gram matmuls)",
                      "n | sets | batched ms | separate ms | speed-up | batched/floor | max rel err | check",
                      [f"| {r['n']} | {r['sets']} | {_f(r['batched_s'])} | {_f(r['separate_s'])} | "
                       f"{r['speedup']:.2f} | {r['batched_over_floor']:.2f} | "
                       f"{_f(r.get('max_rel_err'), 1, '.1e')} | {_check(r)} |" for r in data["batched"]])
    if "memory" in data:
        out += _table("Compiled memory of the blocked fwd+bwd", "n | prec | temp MiB | arguments MiB | "
                      "temp / (4 n d bytes) | n^2 float32 GiB",
                      [f"| {r['n']} | {r['precision']} | {r['temp_bytes'] / 2**20:.1f} | "
                       f"{r['argument_bytes'] / 2**20:.1f} | {r['temp_over_n_d']:.2f} | "
                       f"{r['n2_float32_bytes'] / 2**30:.1f} |" for r in data["memory"]])
    for section in ("steps", "cpu_overhead"):
        if section in data:
            out += _table(f"Train steps ({section})", "model | estimator | batch | step ms | LM tokens/s | "
                          "images/s | model TFLOP/step | MFU % | MFU % (LM only) | overhead %",
                          [f"| {r['kind']} | {r['estimator']} | {r['batch']} | {_f(r['step_s'])} | "
                           f"{r['lm_tokens_per_s']:.0f} | {r['images_per_s']:.0f} | "
                           f"{_f(r['model_flops'], 1e-12, '.3f')} | {_f(r.get('mfu'), 100, '.1f')} | "
                           f"{_f(r.get('mfu_lm_only'), 100, '.1f')} | {r['overhead_pct']:+.1f} |"
                           for r in data[section]])
    return "\n".join(out)


def all_checks_passed(data: dict[str, Any]) -> bool:
    rows = data.get("hsic", []) + data.get("batched", [])
    steps = data.get("steps", []) + data.get("cpu_overhead", [])
    return all(r.get("check_passed", True) for r in rows) and all(r["loss_finite"] for r in steps)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", help="HSIC n values (default 4096 16384 65536 262144)")
    p.add_argument("--d", type=int, help="HSIC feature dimension (default 1024)")
    p.add_argument("--block_size", type=int, help="blocked tile rows (default: the library's choice)")
    p.add_argument("--sets", type=int, default=12, help="feature sets of the batched HSIC")
    p.add_argument("--skip_hsic", action="store_true", help="skip the HSIC, batched and memory sections")
    p.add_argument("--skip_steps", action="store_true", help="skip the train-step section")
    p.add_argument("--tiny", action="store_true",
                   help="CPU smoke test: tiny sizes and models, every code path")
    p.add_argument("--step_models", nargs="+", default=list(TINY_ARMS), choices=list(TINY_ARMS),
                   help="models of the train-step section")
    p.add_argument("--cpu_overhead", action="store_true",
                   help="only the default (small) ar host step, batch 32: estimator none vs hsic vs vib")
    p.add_argument("--host_batch", type=int,
                   help="host step batch (default 64 base, 4 tiny, 32 cpu_overhead)")
    p.add_argument("--tokenizer_batch", type=int, help="tokenizer step batch (default 256 base, 4 tiny)")
    p.add_argument("--reps", type=int, default=5, help="timed calls after one warm-up (median reported)")
    p.add_argument("--compile_threads", type=int, default=min(4, os.cpu_count() or 1),
                   help="train steps compiled concurrently (1 = sequential)")
    p.add_argument("--profile_dir", default="", help="write a jax.profiler trace of 3 steps per variant here")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000, help="inputs seed (default: fresh)")
    p.add_argument("--out", default="bench_accelerator.json", help="JSON output path")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    prof = PROFILES["tiny" if args.tiny else "full"]
    args.sizes, args.d = args.sizes or list(prof["sizes"]), args.d or prof["d"]
    profile = "default" if args.cpu_overhead else prof["steps"]
    args.host_batch = args.host_batch or {"base": 64, "tiny": 4, "default": 32}[profile]
    args.tokenizer_batch = args.tokenizer_batch or {"base": 256, "tiny": 4, "default": 32}[profile]
    dev = jax.devices()[0]
    meta = dict(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                jax=jax.__version__, backend=jax.default_backend(), device=dev.device_kind,
                cpu_count=os.cpu_count(), platform=platform.platform(), seed=args.seed, tiny=args.tiny,
                argv=list(sys.argv[1:] if argv is None else argv))
    report = Report(args.out, meta)
    start = time.perf_counter()
    if args.cpu_overhead:
        bench_steps(args, "default", {"ar": ALL_ARMS}, report, None, section="cpu_overhead")
    else:
        if jax.default_backend() == "cpu" and not args.tiny:
            print("warning: full sizes on a CPU take very long; use --tiny for a smoke test", flush=True)
        rates = {"bf16": matmul_rate(prof["mm"], jnp.bfloat16, "fast", args.reps),
                 "float32 DEFAULT (TF32)": matmul_rate(prof["mm"], jnp.float32, "fast", args.reps),
                 "float32 HIGHEST": matmul_rate(prof["mm"], jnp.float32, "exact", args.reps)}
        for what, rate in rates.items():
            report.add("floors", dict(what=what, size=prof["mm"], tflops=rate / 1e12))
        gram_s = {}
        if not args.skip_hsic:
            for n in sorted(set(args.sizes) | set(prof["batched"])):
                for precision in ("fast", "exact"):
                    gram_s[(n, precision)], extrapolated = gram_seconds(n, args.d, precision, args.reps)
                    report.add("gram_floor", dict(n=n, d=args.d, precision=precision,
                                                  extrapolated=extrapolated,
                                                  one_gram_s=gram_s[(n, precision)]))
            bench_hsic(args, prof, report, gram_s)
            bench_batched(args, prof, report, gram_s)
            print(f"hsic sections done at {time.perf_counter() - start:.0f} s", flush=True)
        if not args.skip_steps:
            arms = {k: v for k, v in (TINY_ARMS if args.tiny else dict.fromkeys(TINY_ARMS, ALL_ARMS)).items()
                    if k in args.step_models}
            bench_steps(args, profile, arms, report, rates["bf16"])
    report.data["meta"]["wall_s"] = time.perf_counter() - start
    report.data["checks_passed"] = all_checks_passed(report.data)
    report.data["markdown"] = markdown(report.data)
    report.add("done", {"ok": True})
    print(report.data["markdown"])
    print(f"all checks passed: {report.data['checks_passed']}; wrote {args.out} "
          f"({report.data['meta']['wall_s']:.0f} s)")
    return report.data


if __name__ == "__main__":
    main()
