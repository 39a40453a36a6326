"""Optimizer construction from config: AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `config.learning_rate`, then cosine decay to `end_lr_fraction` of it."""
    warmup_steps = min(int(config.warmup_steps), max(num_train_steps - 1, 0))
    decay_steps = max(num_train_steps - warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=warmup_steps + decay_steps,
        end_value=config.learning_rate * config.end_lr_fraction,
    )


def make_optimizer(
    config: ml_collections.ConfigDict, num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, schedule) for `config` (the `optimizer` block of an experiment config).

    Weight decay applies only to parameters with two or more dimensions (kernels, embeddings), not to
    biases and norm scales.
    """
    schedule = learning_rate_schedule(config, num_train_steps)

    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(
            learning_rate=schedule,
            b1=config.b1,
            b2=config.b2,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule


def default_config() -> ml_collections.ConfigDict:
    """Optimizer defaults shared by every experiment config."""
    return ml_collections.ConfigDict(
        dict(
            learning_rate=1e-3,  # peak learning rate after warm-up
            warmup_steps=100,  # linear warm-up length in steps
            end_lr_fraction=0.05,  # final learning rate as a fraction of the peak
            b1=0.9,  # Adam first-moment decay
            b2=0.99,  # Adam second-moment decay
            weight_decay=1e-4,  # decoupled weight decay on >=2-D parameters
            grad_clip_norm=1.0,  # global-norm gradient clipping threshold
        )
    )
