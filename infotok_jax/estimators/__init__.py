"""Dependence and rate estimators, as pure JAX functions (jit / vmap / grad compatible).

HSIC family (kernel dependence between paired samples x (n, dx), y (n, dy)):
  hsic, normalized_hsic, batched_hsic, hsic_one_to_many, linear_hsic, linear_cka, rff_hsic,
  hsic_permutation_test
Kernels and bandwidths:
  kernel_matrix, gaussian_kernel, laplacian_kernel, inverse_multiquadric_kernel, linear_kernel,
  multiscale_gaussian_kernel, median_bandwidth, random_fourier_features
Variational-IB rates (nats):
  gaussian_kl, categorical_rate, monte_carlo_rate, gaussian_channel_rate_bound, nats_to_bits, bits_to_nats
See docs/estimators.md for conventions, the precision policy and runnable examples.
"""

from infotok_jax.estimators.bandwidth import median_bandwidth
from infotok_jax.estimators.hsic_estimators import (
    batched_hsic,
    hsic,
    hsic_one_to_many,
    linear_cka,
    linear_hsic,
    normalized_hsic,
)
from infotok_jax.estimators.kernels import (
    gaussian_kernel,
    inverse_multiquadric_kernel,
    kernel_matrix,
    laplacian_kernel,
    linear_kernel,
    multiscale_gaussian_kernel,
)
from infotok_jax.estimators.permutation_test import hsic_permutation_test
from infotok_jax.estimators.rates import (
    bits_to_nats,
    categorical_rate,
    gaussian_channel_rate_bound,
    gaussian_kl,
    monte_carlo_rate,
    nats_to_bits,
)
from infotok_jax.estimators.rff import random_fourier_features, rff_hsic

__all__ = [
    "batched_hsic",
    "bits_to_nats",
    "categorical_rate",
    "gaussian_channel_rate_bound",
    "gaussian_kernel",
    "gaussian_kl",
    "hsic",
    "hsic_one_to_many",
    "hsic_permutation_test",
    "inverse_multiquadric_kernel",
    "kernel_matrix",
    "laplacian_kernel",
    "linear_cka",
    "linear_hsic",
    "linear_kernel",
    "median_bandwidth",
    "monte_carlo_rate",
    "multiscale_gaussian_kernel",
    "nats_to_bits",
    "normalized_hsic",
    "random_fourier_features",
    "rff_hsic",
]
