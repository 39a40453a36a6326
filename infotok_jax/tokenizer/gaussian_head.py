"""Continuous (VIB) bottleneck of the shared tokenizer: a diagonal Gaussian q(z|x) per token.

The mean is the token latent z_pre; the log-variance is a linear map of the encoder's token features
(so the uncertainty can depend on more than the mean), initialized to a constant `init_log_var`
(a small sigma, so early reconstruction is not drowned in noise) and clipped to [min_log_var, max_log_var].

  train=True:  z = mean + exp(0.5 * log_var) * eps, eps ~ N(0, I) from the rng stream "sample"
               (explicit reparameterization, Alemi et al. 2016).
  train=False: z = mean.

The KL to N(0, I) is the InfoTok compression term and is computed by the objective; it is reported here
only as a metric (nats per token, summed over D).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from infotok_jax.tokenizer import layers


def gaussian_kl_to_standard(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over the last axis: 0.5 * sum(mu^2 + s^2 - 1 - log s^2)."""
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


class GaussianHead(nn.Module):
    """Diagonal Gaussian token posterior with reparameterized sampling (see the module docstring)."""

    dim: int
    init_log_var: float = -4.0
    min_log_var: float = -20.0
    max_log_var: float = 10.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, mean_BxNxD: jax.Array, features_BxNxC: jax.Array, *, train: bool) -> dict:
        if mean_BxNxD.shape[-1] != self.dim:
            raise ValueError(
                f"GaussianHead: mean has width {mean_BxNxD.shape[-1]}, expected token_dim={self.dim}"
            )
        log_var = layers.dense(
            self.dim,
            ("embed", None),
            dtype=self.dtype,
            name="log_var",
            bias_init=nn.initializers.constant(self.init_log_var),
        )(features_BxNxC)
        log_var_BxNxD = jnp.clip(log_var.astype(jnp.float32), self.min_log_var, self.max_log_var)
        mean_BxNxD = mean_BxNxD.astype(jnp.float32)
        if train:
            if not self.has_rng("sample"):
                raise ValueError(
                    "quantizer='gaussian' with train=True samples z: pass rngs={'sample': key} "
                    "to apply (or use train=False for the mean)"
                )
            eps_BxNxD = jax.random.normal(self.make_rng("sample"), mean_BxNxD.shape, jnp.float32)
            z_BxNxD = mean_BxNxD + jnp.exp(0.5 * log_var_BxNxD) * eps_BxNxD
        else:
            z_BxNxD = mean_BxNxD
        return {
            "z": z_BxNxD,
            "mean": mean_BxNxD,
            "log_var": log_var_BxNxD,
            "losses": {},
            "metrics": {
                "kl_nats_per_token": jnp.mean(gaussian_kl_to_standard(mean_BxNxD, log_var_BxNxD)),
                "sigma_mean": jnp.mean(jnp.exp(0.5 * log_var_BxNxD)),
            },
        }
