"""infotok_jax: Information-Bottleneck regularized shared visual tokenizers for unified MLLMs.

Subpackages:
  estimators  dependence and rate estimators (HSIC family, variational-IB rates), pure JAX.
  data        TFDS datasets built locally (captioned scenes, Fashion-MNIST), scene oracle, input pipeline.
  tokenizer   the shared visual tokenizer (Flax linen).
  infotok     the InfoTok objective: compression, relevance and cross-modal consistency terms.
"""

__version__ = "0.1.0"
