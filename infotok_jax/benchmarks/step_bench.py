"""Train-step section of the accelerator benchmark: step time, MFU and the InfoTok regularizer's overhead.

Runs the trainer's own jitted, donated AdamW train step (training.train_state.setup, lowered and run inside
sharding.logical_sharding, as the trainer does) for the tokenizer and for each host (ar, masked,
continuous) with InfoTok estimator none / hsic / vib on synthetic batches, so the numbers are those of
training. The arms of one model are timed interleaved from copies of one initial state (machine drift hits
all arms alike); overhead is relative to the "none" arm. MFU counts the LM with mllm.flops (6 x matmul
params per token + causal attention at half, also for omni masks, so it under-counts) plus 3 x the XLA
cost_analysis FLOPs of the tokenizer forward; heads, losses, regularizer and optimizer are not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infotok_jax import infotok, sharding
from infotok_jax import tokenizer as tok
from infotok_jax.benchmarks.timing import RowSink, compile_all
from infotok_jax.mllm import flops as flops_lib
from infotok_jax.mllm import hosts
from infotok_jax.mllm.hosts.config import lm_config
from infotok_jax.training import optimizer as optimizer_lib
from infotok_jax.training import train_state

TEXT_WORDS = 44  # caption words of the scenes data: the T view's bag-of-words size
NUM_CLASSES = 10  # Y view: one-hot labels
ALL_ARMS = ("none", "hsic", "vib")
# --tiny: every model and every estimator code path (categorical rate: masked; Gaussian rate: continuous)
TINY_ARMS = {
    "tokenizer": ALL_ARMS,
    "ar": ("none", "hsic"),
    "masked": ("none", "vib"),
    "continuous": ("none", "vib"),
}
CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def tokenizer_config(profile: str) -> Any:
    """Tokenizer config of a step profile: "base" (64 x 64 images, bf16), "tiny", else the default."""
    c = tok.default_config()
    if profile == "base":
        c.update(
            image_size=64,
            patch_size=4,
            width=128,
            conv_max_mult=2,
            num_blocks=2,
            norm_groups=32,
            token_dim=16,
            codebook_size=1024,
            dtype="bfloat16",
        )
    elif profile == "tiny":
        c.update(
            image_size=16,
            patch_size=4,
            width=16,
            norm_groups=4,
            token_dim=8,
            codebook_size=32,
            dtype="bfloat16",
        )
    return c


def host_config(kind: str, profile: str) -> Any:
    """Host config of `kind` at a step profile: "default" (the library's), "base" (GPT-2-small LM, bf16) or
    "tiny"; the tokenizer is `tokenizer_config(profile)` with the host's quantizer."""
    c = hosts.default_host_config(kind)
    if profile == "default":
        return c
    quantizer = c.tokenizer.quantizer
    c.tokenizer = tokenizer_config(profile)
    c.tokenizer.quantizer = quantizer
    if profile == "base":  # GPT-2-small sized LM, 32768-entry vocabulary as in the anchors' baseline
        c.lm.update(
            num_layers=12,
            embed_dim=768,
            num_heads=12,
            num_kv_heads=12,
            head_dim=64,
            mlp_dim=3072,
            dtype="bfloat16",
        )
        c.text_vocab_size = 32768 - tok.num_codes(c.tokenizer) - 2
    else:
        c.lm.update(
            num_layers=2, embed_dim=32, num_heads=2, num_kv_heads=2, head_dim=16, mlp_dim=64, dtype="bfloat16"
        )
        c.update(max_caption_len=8, max_question_len=4, max_answer_len=4)
        c.flow.update(width=16, depth=1, samples_per_token=1)
    return c


class BenchTask:
    """The training.task.Task methods the train step needs: the tokenizer/host losses plus InfoTok, as in
    infotok_jax.tasks, on synthetic batches (Y: one-hot labels; T: bag of caption words)."""

    def __init__(self, model: nn.Module, is_host: bool, ib_config: Any, batch: dict[str, jax.Array]):
        self.model, self.is_host, self.ib = model, is_host, ib_config
        self._abstract_batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        return self._abstract_batch

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        del batch
        init = hosts.init_variables if self.is_host else tok.init_variables
        return dict(init(self.model, rng))

    def loss(self, params, mutable, batch, rng, step):
        sample_rng, revive_rng = jax.random.split(rng)
        rngs = {"sample": sample_rng, "revive": revive_rng}
        variables = {"params": params, **mutable}
        if self.is_host:
            (loss, metrics, out), new = self.model.apply(
                variables, batch, train=True, rngs=rngs, mutable=list(mutable)
            )
        else:
            out, new = self.model.apply(
                variables, batch["image"], train=True, rngs=rngs, mutable=list(mutable)
            )
            loss = jnp.mean(jnp.square(out["recon"] - batch["image"]))
            loss, metrics = loss + sum(out["losses"].values(), jnp.zeros((), jnp.float32)), {}
        reg, ib_metrics = infotok.regularizer(
            self.ib,
            x_view_BxF=infotok.pixel_view(batch["image"], self.ib.x_view_size),
            z_BxNxD=out[self.ib.z_source],
            y_BxE=infotok.label_embedding(batch["label"], NUM_CLASSES),
            t_BxE=infotok.caption_embedding(batch["caption_tokens"], TEXT_WORDS),
            tokenizer_out=out,
            step=step,
        )
        return loss + reg, ({**metrics, **ib_metrics}, dict(new))


def synthetic_batch(c: Any, tok_c: Any, batch: int, seed: int) -> dict[str, jax.Array]:
    """Random images, labels and all-valid token rows (words in [3, TEXT_WORDS))."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    s = tok_c.image_size
    out = {
        "image": jax.random.uniform(keys[0], (batch, s, s, 3)),
        "label": jax.random.randint(keys[1], (batch,), 0, NUM_CLASSES),
    }
    lengths = (
        dict(
            caption_tokens=c.max_caption_len,
            question_tokens=c.max_question_len,
            answer_tokens=c.max_answer_len,
        )
        if c is not None
        else dict(caption_tokens=8)
    )
    for key, (name, length) in zip(keys[2:], lengths.items(), strict=False):
        out[name] = jax.random.randint(key, (batch, length), 3, TEXT_WORDS).at[:, 0].set(1)
    return out


def lm_sequence_lengths(c: Any) -> tuple[int, int]:
    """LM positions per example of host config `c`: understanding [question | BOI | image | EOI | answer] and
    generation [caption | BOI | image (| EOI: masked, continuous)]; both passes run in every train step."""
    n = tok.num_tokens(c.tokenizer)
    return (
        c.max_question_len + n + 2 + c.max_answer_len,
        c.max_caption_len + 1 + n + (0 if c.kind == "ar" else 1),
    )


def xla_flops(fn: Callable, *args: Any) -> float:
    """XLA's FLOP count of fn(*args) (no loops in the tokenizer, so nothing is counted once per scan)."""
    lowered = jax.jit(fn).lower(*args)
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def step_variant(kind: str, estimator: str, profile: str, batch_size: int, seed: int, mesh: Any) -> dict:
    """Model, task, batch, the trainer's step setup (`train_state.setup`) and the model-FLOP count of one
    variant. Like the trainer, call it outside `sharding.logical_sharding` and lower/run the step inside."""
    is_host = kind != "tokenizer"
    c = host_config(kind, profile) if is_host else None
    tok_c = c.tokenizer if is_host else tokenizer_config(profile)
    model = hosts.build_host(c) if is_host else tok.build_tokenizer(tok_c)
    ib = infotok.default_config()
    ib.update(estimator=estimator, warmup_steps=0, x_view_size=min(8, tok_c.image_size))
    infotok.validate(ib, tok_c.quantizer)
    batch = synthetic_batch(c, tok_c, batch_size, seed)
    task = BenchTask(model, is_host, ib, batch)
    config = ml_collections.ConfigDict(
        dict(optimizer=optimizer_lib.default_config(), num_train_steps=1000, seed=seed)
    )
    setup = train_state.setup(task, config, mesh)
    rng = jax.random.key(seed)
    tmodel = tok.SharedTokenizer(tok_c)
    tvars = nn.unbox(jax.eval_shape(lambda: tok.init_variables(tmodel, rng)))
    images = jax.ShapeDtypeStruct((batch_size, tok_c.image_size, tok_c.image_size, 3), jnp.float32)
    tok_flops = 3.0 * xla_flops(lambda v, im: tmodel.apply(v, im, train=False), tvars, images)
    v = dict(
        kind=kind,
        estimator=estimator,
        batch=batch_size,
        tokenizer_flops=tok_flops,
        lm_flops=0.0,
        image_tokens_per_step=batch_size * tok.num_tokens(tok_c),
        lm_tokens_per_step=0,
    )
    if is_host:
        t_und, t_gen = lm_sequence_lengths(c)
        lm_c = lm_config(c, max(t_und, t_gen))
        v["lm_flops"] = sum(flops_lib.flops_per_step(lm_c, batch_size, t) for t in (t_und, t_gen))
        v["lm_tokens_per_step"] = batch_size * (t_und + t_gen)
        v["lm_params"] = flops_lib.matmul_params(lm_c)
    v["model_flops"] = v["lm_flops"] + v["tokenizer_flops"]
    return dict(row=v, task=task, setup=setup, rng=rng, batch=jax.device_put(batch, setup.batch_shardings))


def time_arms(args: argparse.Namespace, keys: list, variants: dict, compiled: dict) -> dict[Any, list[float]]:
    """Step times of the arms of one model, interleaved: one warm-up round, then `reps` rounds of one step
    per arm, each arm from a copy of the same initial state (so drift of the machine hits all arms)."""
    first = variants[keys[0]]
    setup = first["setup"]
    initial = train_state.create_sharded_state(
        first["task"], setup.tx, setup.state_shardings, first["rng"], setup.abstract_batch
    )
    states = {k: jax.device_put(initial, variants[k]["setup"].state_shardings, may_alias=False) for k in keys}
    del initial
    times: dict[Any, list[float]] = {k: [] for k in keys}
    for round_ in range(args.reps + 1):
        for k in keys:
            begin = time.perf_counter()
            states[k], metrics = jax.block_until_ready(
                compiled[k](states[k], variants[k]["batch"], variants[k]["setup"].seed)
            )
            if round_:
                times[k].append(time.perf_counter() - begin)
            variants[k]["row"]["loss_finite"] = bool(np.isfinite(float(metrics["loss"])))
    for k in keys if args.profile_dir else ():
        with jax.profiler.trace(os.path.join(args.profile_dir, f"{k[0]}_{k[1]}")):
            for _ in range(3):
                states[k], _ = jax.block_until_ready(
                    compiled[k](states[k], variants[k]["batch"], variants[k]["setup"].seed)
                )
    return times


def bench_steps(
    args: argparse.Namespace,
    profile: str,
    arms: dict[str, Sequence[str]],
    report: RowSink,
    bf16_rate: float | None,
    section: str = "steps",
) -> None:
    """Sets up every (model, estimator) train step, lowers them inside `sharding.logical_sharding` (as the
    trainer does), compiles them (threaded), times the arms of each model interleaved; overhead is relative
    to the "none" arm."""
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    sizes = {kind: args.tokenizer_batch if kind == "tokenizer" else args.host_batch for kind in arms}
    variants = {
        (kind, estimator): step_variant(kind, estimator, profile, sizes[kind], args.seed, mesh)
        for kind, estimators in arms.items()
        for estimator in estimators
    }
    with sharding.logical_sharding(mesh):
        lowered = {
            k: v["setup"].train_step.lower(v["setup"].abstract_state, v["setup"].abstract_batch)
            for k, v in variants.items()
        }
        start = time.perf_counter()
        options = CPU_FAST_COMPILE if args.tiny else None
        compiled = compile_all(lowered, args.compile_threads, options)
        print(f"compiled {len(compiled)} train steps in {time.perf_counter() - start:.1f} s", flush=True)
        for kind in arms:
            keys = [k for k in variants if k[0] == kind]
            times = time_arms(args, keys, variants, compiled)
            for k in keys:
                row = variants[k]["row"]
                row["step_s"], row["reps"] = statistics.median(times[k]), len(times[k])
                row["step_s_p25"], row["step_s_p75"] = (float(q) for q in np.percentile(times[k], [25, 75]))
                row["images_per_s"] = row["batch"] / row["step_s"]
                row["lm_tokens_per_s"] = row["lm_tokens_per_step"] / row["step_s"]
                row["image_tokens_per_s"] = row["image_tokens_per_step"] / row["step_s"]
                if bf16_rate:
                    row["mfu"] = row["model_flops"] / row["step_s"] / bf16_rate
                    row["mfu_lm_only"] = row["lm_flops"] / row["step_s"] / bf16_rate
                row["overhead_pct"] = 100.0 * (row["step_s"] / variants[keys[0]]["row"]["step_s"] - 1.0)
                report.add(section, row)
                print(
                    f"step {kind:>10} {k[1]:>4}: {1e3 * row['step_s']:.2f} ms (quartiles "
                    f"{1e3 * row['step_s_p25']:.2f}-{1e3 * row['step_s_p75']:.2f}), overhead "
                    f"{row['overhead_pct']:+.1f}%, MFU {row.get('mfu', float('nan')):.3f}",
                    flush=True,
                )
