"""infotok_jax: Information-Bottleneck regularized shared visual tokenizers for unified MLLMs.

Subpackages:
  estimators  dependence and rate estimators (HSIC family, variational-IB rates), pure JAX.
  data        TFDS datasets built locally (captioned scenes, Fashion-MNIST), scene oracle, input pipeline.
  tokenizer   the shared visual tokenizer (Flax linen).
  infotok     the InfoTok objective: compression, relevance and cross-modal consistency terms.
  mllm        decoder-only backbone, sampling, and the three unified-MLLM hosts (mllm.hosts).
  tasks       what the training binary trains (tokenizer, host) on top of the generic loop.
  training    the training loop: sharded state, jitted step, checkpoints, reports.
  evaluate    understanding / oracle-scored generation / reconstruction evaluation and its binary.
  study       the InfoTok study protocol runner and aggregation.
  benchmarks  accelerator benchmark sections (experiments/bench_accelerator.py).
Binaries: `python -m infotok_jax.train`, `python -m infotok_jax.evaluate`.
"""

__version__ = "0.1.0"
