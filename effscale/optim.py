"""Optimizers and learning-rate schedules from `config.train`, as pure functions.

The official EfficientNet recipe: RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3,
TF1's accumulator initialised to ones), 0.016 per 256 images, linear warm-up, then
staircase decay x0.97 every 2.4 epochs; L2 1e-5 on every weight except BatchNorm's.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from effscale import layers

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")


def peak_learning_rate(train: Any) -> float:
    """`learning_rate` is per 256 images; scaled linearly with the global batch size."""
    return float(train.learning_rate) * train.batch_size / 256


def check(train: Any) -> None:
    """Validates the optimizer and schedule fields, naming the choices."""
    if train.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {train.optimizer!r}.")
    if train.lr_schedule not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {SCHEDULES}, got {train.lr_schedule!r}.")
    if not train.learning_rate > 0:
        raise ValueError(f"train.learning_rate must be positive, got {train.learning_rate}.")
    if not 0 <= train.ema_decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}.")
    if not 0 <= train.label_smoothing < 1:
        raise ValueError(f"train.label_smoothing must be in [0, 1), got {train.label_smoothing}.")


def schedule(train: Any, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step: linear warm-up from 0, then the chosen decay.

    'exponential' follows TF's staircase `exponential_decay` on the global step (as the
    official code does, the warm-up steps count towards the decay); 'cosine' decays to 0
    at `total_steps`; 'constant' stays at the peak.
    """
    peak = peak_learning_rate(train)
    warmup = int(round(train.warmup_epochs * steps_per_epoch))
    if train.lr_schedule == "exponential":
        decay_steps = max(1, int(round(train.decay_epochs * steps_per_epoch)))
        after = optax.exponential_decay(peak, decay_steps, train.decay_rate, staircase=True)
    elif train.lr_schedule == "cosine":
        after_cos = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup))
        after = lambda step: after_cos(step - warmup)  # noqa: E731
    else:
        after = optax.constant_schedule(peak)

    def lr(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        ramp = peak * step / max(1, warmup)
        return jnp.where(step < warmup, ramp, after(step))

    return lr


def decay_mask(params: Any) -> Any:
    """True for every parameter that takes weight decay: all but BatchNorm's scale and bias."""

    def is_decayed(path: tuple[Any, ...], _: Any) -> bool:
        modules = [str(getattr(k, "key", k)) for k in path[:-1]]
        return not (modules and layers.is_batchnorm(modules))

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def create(train: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer named by `train.optimizer`, with weight decay on non-BatchNorm weights.

    RMSProp and SGD take classic L2 (the gradient of weight_decay / 2 * ||w||^2, TF's
    `l2_loss` convention of the official code); AdamW its decoupled decay.
    """
    check(train)
    wd = float(train.weight_decay)
    if train.optimizer == "adamw":
        return optax.adamw(lr, b1=train.momentum, eps=train.epsilon, weight_decay=wd, mask=decay_mask)
    if train.optimizer == "rmsprop":
        # TF1's RMSPropOptimizer starts its mean-square accumulator at 1 and adds epsilon inside the sqrt.
        opt = optax.rmsprop(
            lr, decay=train.rmsprop_decay, eps=train.epsilon, initial_scale=1.0, momentum=train.momentum
        )
    else:
        opt = optax.sgd(lr, momentum=train.momentum, nesterov=True)
    return optax.chain(optax.add_decayed_weights(wd, mask=decay_mask), opt) if wd else opt


def total_steps(train: Any, steps_per_epoch: int) -> int:
    """`num_steps` if set, else `num_epochs` worth of steps (at least one)."""
    if train.num_steps is not None:
        if train.num_steps < 1:
            raise ValueError(f"train.num_steps must be >= 1, got {train.num_steps}.")
        return int(train.num_steps)
    return max(1, int(math.ceil(train.num_epochs * steps_per_epoch)))
