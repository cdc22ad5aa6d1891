"""The pure parts of training: the train state, one train step, one eval step.

Nothing here reads the config or touches the host: every choice arrives as an argument, so the
steps compile once (effscale.training.compiled) and a resumed run repeats an uninterrupted one.
The dropout key is derived from (seed, step), which makes the step the only randomness state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from effscale import model, spec, transfer
from effscale.augment import mix

Batch = Mapping[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; the unit that is checkpointed."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any


def start_state(params: Any, batch_stats: Any, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 at `params` / `batch_stats`: a fresh optimizer, the EMA equal to the weights."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=params,
        ema_batch_stats=batch_stats,
    )


def init_state(
    module: model.EfficientNet, tx: optax.GradientTransformation, seed: int, net: spec.NetworkSpec
) -> TrainState:
    """A fresh TrainState from the module's initialisers; the EMA starts equal to the initial weights."""
    x = jnp.zeros((1, net.resolution, net.resolution, net.in_channels), jnp.float32)
    variables = module.init({"params": jax.random.key(seed)}, x, train=False)
    return start_state(variables["params"], variables.get("batch_stats", {}), tx)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy against label-smoothed one-hot targets."""
    if not smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing))


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """TF's ExponentialMovingAverage with num_updates: min(decay, (1 + n) / (10 + n))."""
    n = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def _mixed(
    batch: Batch,
    step: jax.Array,
    seed: jax.Array | int,
    num_classes: int,
    smoothing: float,
    groups: int,
    mixing: dict[str, float],
) -> tuple[jax.Array, jax.Array | None]:
    """The images to train on and, when mixup or CutMix is on, their mixed targets (else None).

    Decided from the static alphas when the step is traced: an unmixed step has no mixing ops at all.
    """
    if not mix.enabled(mixing["mixup_alpha"], mixing["cutmix_alpha"]):
        return batch["image"], None
    key = mix.step_key(seed, step)
    images, targets, _ = mix.mix_batch(
        key, batch["image"], batch["label"], num_classes=num_classes, smoothing=smoothing, groups=groups, **mixing
    )
    return images, targets


def train_step(
    state: TrainState,
    batch: Batch,
    seed: jax.Array | int = 0,
    *,
    module: model.EfficientNet,
    tx: optax.GradientTransformation,
    lr: optax.Schedule,
    num_classes: int,
    label_smoothing: float,
    ema: float,
    labels: Any = None,
    frozen_bn: frozenset[str] = frozenset(),
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    mix_groups: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a (global) batch; returns the new state and scalar metrics.

    `labels` (effscale.transfer.param_labels) marks frozen parameters: they, their moving
    averages and the statistics of the `frozen_bn` BatchNorms are carried over bit for bit.
    A positive `mixup_alpha` or `cutmix_alpha` mixes the batch (effscale.augment.mix, each example
    with one of its own block of `mix_groups`, e.g. its device) and trains on the mixed targets;
    with both 0 the step is traced exactly as without them. Accuracy is against the unmixed labels.
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)
    mixing = dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob)
    images, targets = _mixed(batch, state.step, seed, num_classes, label_smoothing, mix_groups, mixing)

    def loss_fn(params):
        logits, updates = module.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        if targets is None:
            loss = cross_entropy(logits, batch["label"], num_classes, label_smoothing).mean()
        else:
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    d = ema_decay(ema, step)
    average = lambda old, new: jax.tree.map(lambda o, n: d * o + (1.0 - d) * n, old, new)  # noqa: E731
    ema_params = average(state.ema_params, params)
    ema_batch_stats = average(state.ema_batch_stats, batch_stats)
    if labels is not None:
        # p + 0 is not always p bit for bit (-0.0), and the average of a constant drifts by rounding:
        # frozen leaves are taken over as they were, decided per leaf at trace time.
        keep = lambda label, old, new: old if label == transfer.FROZEN else new  # noqa: E731
        params = jax.tree.map(keep, labels, state.params, params)
        ema_params = jax.tree.map(keep, labels, state.ema_params, ema_params)
    if frozen_bn:
        ema_batch_stats = transfer.keep_frozen_batch_stats(ema_batch_stats, state.ema_batch_stats, frozen_bn)
        batch_stats = transfer.keep_frozen_batch_stats(batch_stats, state.batch_stats, frozen_bn)
    new_state = TrainState(
        step=step,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
        ema_batch_stats=ema_batch_stats,
    )
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "lr": lr(state.step),
    }
    return new_state, metrics


def eval_step(variables: Any, batch: Batch, *, module: model.EfficientNet, num_classes: int) -> dict[str, jax.Array]:
    """Sums over the real (mask=True) examples of a padded batch: top-1 / top-5 hits, loss, count."""
    logits = module.apply(variables, batch["image"], train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    k = min(5, num_classes)
    topk = jax.lax.top_k(logits, k)[1]
    hits = topk == labels[:, None]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {
        "top1": jnp.sum(hits[:, 0] * mask),
        "top5": jnp.sum(jnp.any(hits, axis=1) * mask),
        "loss": jnp.sum(loss * mask),
        "count": jnp.sum(mask),
    }
