"""The measurement library behind experiments/bench_accelerator.py (one-run accelerator benchmark).

Why a package: the benchmark measures its own floors and then everything else against them in one process;
the driver script only parses flags, orchestrates the sections and writes the tables and JSON, while the
measurements live here where tests can import them.

Modules (imported on demand, not from here, so importing the package stays cheap; none of them needs
tensorflow-datasets or grain, which the accelerator image lacks):
  timing      warm-up + median timers, threaded compilation, matmul and Gram-matmul floors, the row sink.
  hsic_bench  HSIC dense/blocked x fast/exact x fwd/fwd+bwd, batched HSIC, compiled memory, and the float64
              textbook reference (value and analytic gradient) every fast path is checked against.
  step_bench  the trainer's train step for the tokenizer and each host with InfoTok none/hsic/vib: step
              time, tokens/s, MFU against the measured bf16 rate, regularizer overhead.
The roofline modules (experiments/bench_roofline.py, issue 27) build the experiment task itself, so they
do import tensorflow-datasets and grain (bench_accelerator.py skips its roofline section without them):
  roofline        the study/main configs' step: FLOPs, its own matrix products timed alone, square rates.
  step_profile    a jax.profiler trace of steps attributed to model parts; the host-side work.
  roofline_report the rows of both and their Markdown.

PROFILES holds the sizes of the two profiles: "full" (an H200, everything in < ~8 min) and "tiny" (a CPU
smoke test of every code path).
"""

from typing import Any

# sizes: HSIC n values; d: HSIC feature dimension; dense_max: largest n run on the dense path too;
# ref_max: largest n checked against float64; batched: n values of the batched section; mm: size of the
# size^3 matmul floors; steps: train-step model profile (step_bench.tokenizer_config / host_config).
PROFILES: dict[str, dict[str, Any]] = {
    "full": dict(
        sizes=(4096, 16384, 65536, 262144),
        d=1024,
        dense_max=16384,
        ref_max=16384,
        batched=(4096, 16384),
        mm=8192,
        steps="base",
    ),
    "tiny": dict(sizes=(200, 700), d=16, dense_max=1024, ref_max=1024, batched=(300,), mm=256, steps="tiny"),
}
