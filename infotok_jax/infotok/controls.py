"""The supervised control arm (`config.infotok.estimator="supervised"`): the InfoTok signal without the IB.

It gives the tokens the same Y and T the HSIC arm sees, through plain supervised losses and no
compression term, so that an IB arm is credited only with what it adds beyond them:
  probe      a linear probe from the Z view to the Y embedding, mean squared error summed over Y's
             features (one formulation for every `relevance_target`: Y is a fixed, non-negative
             embedding, bag of words, multi-hot or one-hot), weighted by lambda_y. Zero-initialized, so
             it starts at ||Y||^2 (1 for the unit-norm text Y) whatever the scale of the latents;
  alignment  symmetric InfoNCE (CLIP-style) between linear projections of the Z view and of T, both
             L2-normalized, at temperature `control_temperature`, weighted by lambda_c.
The heads live in `variables["params"]["controls"]`, which the tasks create only for this arm, so the
parameter trees (and checkpoints) of the other arms are unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from infotok_jax.tokenizer.layers import dense

PARAMS_KEY = "controls"


def _unit(v_BxP: jax.Array) -> jax.Array:
    return v_BxP / jnp.maximum(jnp.linalg.norm(v_BxP, axis=-1, keepdims=True), 1e-6)


class SupervisedControls(nn.Module):
    """Linear Y-probe and caption-alignment heads on the Z view; returns {"probe", "alignment"} losses."""

    y_dim: int
    proj_dim: int
    temperature: float

    @nn.compact
    def __call__(self, z_BxF: jax.Array, y_BxE: jax.Array, t_BxV: jax.Array) -> dict[str, jax.Array]:
        z_BxF = z_BxF.astype(jnp.float32)
        y_hat_BxE = dense(self.y_dim, (None, None), zero_init=True, name="probe")(z_BxF)
        probe = jnp.mean(jnp.sum(jnp.square(y_hat_BxE - y_BxE), axis=-1))
        z_BxP = _unit(dense(self.proj_dim, (None, None), name="z_proj")(z_BxF))
        t_BxP = _unit(dense(self.proj_dim, (None, None), name="t_proj")(t_BxV.astype(jnp.float32)))
        logits_BxB = z_BxP @ t_BxP.T / self.temperature
        labels_B = jnp.arange(z_BxF.shape[0])
        alignment = 0.5 * (
            optax.softmax_cross_entropy_with_integer_labels(logits_BxB, labels_B).mean()
            + optax.softmax_cross_entropy_with_integer_labels(logits_BxB.T, labels_B).mean()
        )
        return {"probe": probe, "alignment": alignment}
