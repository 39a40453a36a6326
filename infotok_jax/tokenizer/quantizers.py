"""Discrete bottlenecks of the shared tokenizer: an EMA vector quantizer and finite scalar quantization.

VectorQuantizer (van den Oord et al. 2017, EMA codebook as in big_vision UViM): the codebook and its
statistics live in the "state" collection, never in "params", so the optimizer never touches them:
  codebook   (K, D)  current code vectors
  ema_usage  (K,)    EMA of the fraction of tokens assigned to each code (sums to ~1 once warm)
  ema_sums   (K, D)  EMA of (sum of tokens assigned to the code) / (tokens in the batch)
  steps      ()      number of statistics updates done
With train=True and mutable=["state"], one step does, on the *global* batch (plain reductions inside jit,
so it is the same under any sharding):
  usage <- d*usage + (1-d)*counts/M;  sums <- d*sums + (1-d)*(assigned token sum)/M;
  codebook <- sums/usage where usage > 0;
then dead-code revival: every code whose EMA usage is below dead_code_threshold/K is replaced by a random
token of the current batch (rng stream "revive", else a key derived from `steps`), with usage reset to
1/K. Usage starts at 0, so the first training step seeds the codebook with encoder outputs.

FiniteScalarQuantizer (Mentzer et al. 2023): bound each of d = len(levels) channels with tanh to
levels[i] values, round with a straight-through estimator; the implicit codebook is the product grid of
prod(levels) codes. When the token width D differs from d, linear maps D -> d and d -> D wrap it.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from infotok_jax.tokenizer import layers

_TINY = 1e-12


def straight_through(x: jax.Array, q: jax.Array) -> jax.Array:
    """Forward value q, gradient of the identity to x: x + stop_gradient(q - x)."""
    return x + jax.lax.stop_gradient(q - x)


def usage_metrics(indices_M: jax.Array, num_codes: int) -> dict[str, jax.Array]:
    """Batch codebook statistics from flat code indices: perplexity, usage, max and zeros ratios."""
    counts_K = jnp.zeros((num_codes,), jnp.float32).at[indices_M].add(1.0)
    p_K = counts_K / jnp.maximum(jnp.sum(counts_K), 1.0)
    entropy = -jnp.sum(jnp.where(p_K > 0, p_K * jnp.log(jnp.where(p_K > 0, p_K, 1.0)), 0.0))
    used = jnp.mean((counts_K > 0).astype(jnp.float32))
    return {
        "codebook_perplexity": jnp.exp(entropy),
        "codebook_usage": used,
        "codebook_max_ratio": jnp.max(p_K),
        "codebook_zeros_ratio": 1.0 - used,
    }


def squared_distances(z_MxD: jax.Array, codebook_KxD: jax.Array) -> jax.Array:
    """||z_m - e_k||^2 for all pairs, in float32 with full-precision matmul (TPU default would be bf16)."""
    z2_Mx1 = jnp.sum(jnp.square(z_MxD), axis=-1, keepdims=True)
    e2_1xK = jnp.sum(jnp.square(codebook_KxD), axis=-1)[None, :]
    ze_MxK = jnp.matmul(z_MxD, codebook_KxD.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(z2_Mx1 - 2.0 * ze_MxK + e2_1xK, 0.0)


class VectorQuantizer(nn.Module):
    """Nearest-code VQ with an EMA codebook in the "state" collection (see the module docstring)."""

    codebook_size: int
    dim: int
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.1
    logit_temperature: float = 1.0

    def setup(self):
        k, d = self.codebook_size, self.dim

        def boxed(names, make):
            return lambda: nn.LogicallyPartitioned(make(), names)

        self.codebook_var = self.variable(
            "state",
            "codebook",
            boxed(
                ("codebook", None), lambda: jax.random.normal(self.make_rng("params"), (k, d), jnp.float32)
            ),
        )
        self.usage_var = self.variable(
            "state", "ema_usage", boxed(("codebook",), lambda: jnp.zeros((k,), jnp.float32))
        )
        self.sums_var = self.variable(
            "state", "ema_sums", boxed(("codebook", None), lambda: jnp.zeros((k, d), jnp.float32))
        )
        self.steps_var = self.variable("state", "steps", boxed((), lambda: jnp.zeros((), jnp.int32)))

    def codebook(self) -> jax.Array:
        """The current (K, D) code vectors."""
        return self.codebook_var.value

    def indices_to_z(self, indices_BxN: jax.Array) -> jax.Array:
        """Code vectors (B, N, D) of integer code indices."""
        return jnp.take(self.codebook_var.value, indices_BxN, axis=0)

    def __call__(self, z_pre_BxNxD: jax.Array, *, train: bool) -> dict:
        b, n, d = z_pre_BxNxD.shape
        k = self.codebook_size
        codebook_KxD = self.codebook_var.value
        z_MxD = z_pre_BxNxD.astype(jnp.float32).reshape(b * n, d)
        dist_MxK = squared_distances(z_MxD, codebook_KxD)
        indices_M = jnp.argmin(dist_MxK, axis=-1).astype(jnp.int32)
        q_BxNxD = jnp.take(codebook_KxD, indices_M, axis=0).reshape(b, n, d)
        z_f32 = z_pre_BxNxD.astype(jnp.float32)
        commitment = jnp.mean(jnp.square(z_f32 - jax.lax.stop_gradient(q_BxNxD)))
        metrics = usage_metrics(indices_M, k)
        threshold = self.dead_code_threshold / k
        if train and self.is_mutable_collection("state") and not self.is_initializing():
            dead_K = self._update(jax.lax.stop_gradient(z_MxD), indices_M, threshold)
        else:
            dead_K = self.usage_var.value < threshold
        metrics["dead_codes"] = jnp.sum(dead_K.astype(jnp.float32))
        return {
            "z": straight_through(z_f32, q_BxNxD),
            "indices": indices_M.reshape(b, n),
            "code_logits": -dist_MxK.reshape(b, n, k) / self.logit_temperature,
            "losses": {"commitment": self.commitment * commitment, "codebook": jnp.zeros((), jnp.float32)},
            "metrics": metrics,
        }

    def _update(self, z_MxD: jax.Array, indices_M: jax.Array, threshold: float) -> jax.Array:
        """One EMA step plus dead-code revival on the global batch; returns the dead mask (K,)."""
        m, d = z_MxD.shape
        k = self.codebook_size
        decay = self.ema_decay
        counts_K = jnp.zeros((k,), jnp.float32).at[indices_M].add(1.0)
        sums_KxD = jnp.zeros((k, d), jnp.float32).at[indices_M].add(z_MxD)
        usage_K = decay * self.usage_var.value + (1.0 - decay) * counts_K / m
        ema_sums_KxD = decay * self.sums_var.value + (1.0 - decay) * sums_KxD / m
        live_K = usage_K > _TINY
        safe_usage_K = jnp.where(live_K, usage_K, 1.0)
        codebook_KxD = jnp.where(
            live_K[:, None], ema_sums_KxD / safe_usage_K[:, None], self.codebook_var.value
        )

        dead_K = usage_K < threshold
        steps = self.steps_var.value
        key = (
            self.make_rng("revive")
            if self.has_rng("revive")
            else jax.random.fold_in(jax.random.PRNGKey(0), steps)
        )
        pick_K = jax.random.choice(key, m, shape=(k,), replace=m < k)
        fresh_KxD = jnp.take(z_MxD, pick_K, axis=0)
        self.codebook_var.value = jnp.where(dead_K[:, None], fresh_KxD, codebook_KxD)
        self.usage_var.value = jnp.where(dead_K, 1.0 / k, usage_K)
        self.sums_var.value = jnp.where(dead_K[:, None], fresh_KxD / k, ema_sums_KxD)
        self.steps_var.value = steps + 1
        return dead_K


def fsq_basis(levels: Sequence[int]) -> np.ndarray:
    """Mixed-radix place values: index = sum_i digit_i * basis_i, basis = cumprod([1] + levels[:-1])."""
    return np.cumprod([1, *levels[:-1]]).astype(np.int32)


def _per_channel(values: Sequence[float] | np.ndarray, dtype: jnp.dtype) -> jax.Array:
    """A per-channel constant shaped (1, 1, d) to broadcast against (B, N, d) without rank promotion."""
    return jnp.asarray(np.asarray(values), dtype).reshape(1, 1, -1)


class FiniteScalarQuantizer(nn.Module):
    """FSQ over d = len(levels) channels, with D <-> d linear maps when D != d."""

    levels: tuple[int, ...]
    dim: int

    def setup(self):
        d = len(self.levels)
        if self.dim != d:
            self.proj_in = layers.dense(d, (None, None), dtype=jnp.float32, name="proj_in")
            self.proj_out = layers.dense(self.dim, (None, None), dtype=jnp.float32, name="proj_out")

    @property
    def num_codes(self) -> int:
        """Size of the implicit codebook, prod(levels)."""
        return int(np.prod(self.levels))

    def _half_width(self) -> jax.Array:
        return _per_channel([lv // 2 for lv in self.levels], jnp.float32)

    def bound(self, z_BxNxd: jax.Array) -> jax.Array:
        """tanh-bound each channel so that rounding yields exactly levels[i] integer values."""
        levels = np.asarray(self.levels, np.float64)
        half_l = (levels - 1.0) * (1.0 - 1e-3) / 2.0
        offset = np.where(levels % 2 == 0, 0.5, 0.0)
        shift = np.arctanh(offset / half_l)
        return jnp.tanh(z_BxNxd + _per_channel(shift, jnp.float32)) * _per_channel(
            half_l, jnp.float32
        ) - _per_channel(offset, jnp.float32)

    def quantize(self, z_BxNxd: jax.Array) -> jax.Array:
        """Normalized codes in [-1, 1] (straight-through rounding)."""
        bounded = self.bound(z_BxNxd)
        return straight_through(bounded, jnp.round(bounded)) / self._half_width()

    def codes_to_indices(self, codes_BxNxd: jax.Array) -> jax.Array:
        """Normalized grid codes (B, N, d) -> int32 indices (B, N)."""
        half = self._half_width()
        digits = jnp.round(codes_BxNxd * half + half).astype(jnp.int32)
        return jnp.sum(digits * _per_channel(fsq_basis(self.levels), jnp.int32), axis=-1).astype(jnp.int32)

    def indices_to_codes(self, indices_BxN: jax.Array) -> jax.Array:
        """int32 indices (B, N) -> normalized grid codes (B, N, d)."""
        half = self._half_width()
        levels = _per_channel(self.levels, jnp.int32)
        digits = (indices_BxN[..., None] // _per_channel(fsq_basis(self.levels), jnp.int32)) % levels
        return (digits.astype(jnp.float32) - half) / half

    def _out(self, codes_BxNxd: jax.Array) -> jax.Array:
        return self.proj_out(codes_BxNxd) if self.dim != len(self.levels) else codes_BxNxd

    def indices_to_z(self, indices_BxN: jax.Array) -> jax.Array:
        """Token latents (B, N, D) of integer code indices."""
        return self._out(self.indices_to_codes(indices_BxN))

    def codebook(self) -> jax.Array:
        """The implicit codebook mapped to token latents, (prod(levels), D)."""
        return self.indices_to_z(jnp.arange(self.num_codes, dtype=jnp.int32)[None])[0]

    def __call__(self, z_pre_BxNxD: jax.Array, *, train: bool) -> dict:
        del train
        z_f32 = z_pre_BxNxD.astype(jnp.float32)
        z_BxNxd = self.proj_in(z_f32) if self.dim != len(self.levels) else z_f32
        codes_BxNxd = self.quantize(z_BxNxd)
        indices_BxN = self.codes_to_indices(codes_BxNxd)
        return {
            "z": self._out(codes_BxNxd),
            "codes": codes_BxNxd,
            "indices": indices_BxN,
            "losses": {},
            "metrics": usage_metrics(indices_BxN.reshape(-1), self.num_codes),
        }
