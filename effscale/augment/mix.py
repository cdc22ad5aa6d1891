"""mixup and CutMix of a training batch, on the device inside the train step (JAX).

Each example is mixed with its mirror in its group (the group reversed): with one group per
device, the partner lives on the same device and mixing moves no data between devices. One
lam ~ Beta(alpha, alpha) per step: mixup blends whole images, lam * x + (1 - lam) * partner;
CutMix pastes the partner's box of area about (1 - lam) and then takes lam from the box actually
pasted (the box is clipped at the borders). With both on, CutMix is chosen with probability
`switch_prob`; `mix_prob` is the probability that a step mixes at all. The targets are the same
mixture of the two examples' label-smoothed one-hot vectors, so every target sums to one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# The mixing key is a child of the step's key under this index: a stream of its own, apart from dropout's.
_STREAM = 0x6D6978


def enabled(mixup_alpha: float, cutmix_alpha: float) -> bool:
    """Whether the train step mixes at all: decided from static config values when the step is traced."""
    return mixup_alpha > 0 or cutmix_alpha > 0


def step_key(seed: int, step: jax.Array) -> jax.Array:
    """The key of a step's mixing draws: a pure function of (seed, step), so a resumed run repeats them."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), _STREAM)


def partner(x: jax.Array, groups: int) -> jax.Array:
    """`x` with each of its `groups` equal consecutive blocks reversed along the batch axis."""
    blocks = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
    return jnp.flip(blocks, axis=1).reshape(x.shape)


def smoothed(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Label-smoothed one-hot vectors, (B, classes): 1 - smoothing + smoothing / classes on the label."""
    return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)


def mixed_targets(labels, partner_labels, lam, num_classes: int, smoothing: float) -> jax.Array:
    """lam * smooth(onehot(labels)) + (1 - lam) * smooth(onehot(partner_labels))."""
    return lam * smoothed(labels, num_classes, smoothing) + (1.0 - lam) * smoothed(
        partner_labels, num_classes, smoothing
    )


def cutmix_box(key: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(keep, lam): keep is 1 outside and 0 inside a box of sides int(side * sqrt(1 - lam)) centred on
    a uniform pixel and clipped to the image; lam is the fraction of the image the box leaves kept."""
    cut = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = (height * cut).astype(jnp.int32), (width * cut).astype(jnp.int32)
    ky, kx = jax.random.split(key)
    cy, cx = jax.random.randint(ky, (), 0, height), jax.random.randint(kx, (), 0, width)
    y1, y2 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x1, x2 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    kept = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (height * width)
    return jnp.where(inside, 0.0, 1.0), kept


def _draw(key, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, height, width):
    """(weight, lam): weight (H, W) of the example itself at each pixel, lam the share of its label."""
    k_apply, k_switch, k_mixup, k_cutmix, k_box = jax.random.split(key, 5)
    one = jnp.ones((), jnp.float32)
    lam_mixup = jax.random.beta(k_mixup, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else one
    if cutmix_alpha > 0:
        keep, lam_cutmix = cutmix_box(k_box, jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha), height, width)
    else:
        keep, lam_cutmix = jnp.ones((height, width), jnp.float32), one
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    weight = jnp.where(use_cutmix, keep, lam_mixup)
    lam = jnp.where(use_cutmix, lam_cutmix, lam_mixup)
    if mix_prob < 1:
        apply = jax.random.uniform(k_apply) < mix_prob
        weight, lam = jnp.where(apply, weight, 1.0), jnp.where(apply, lam, 1.0)
    return weight.astype(jnp.float32), lam.astype(jnp.float32)


def mix_batch(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    smoothing: float,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    groups: int = 1,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mixed images (B, H, W, C), targets (B, classes), lam) of one batch; one draw for the whole batch."""
    height, width = images.shape[1], images.shape[2]
    weight, lam = _draw(key, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, height, width)
    weight = weight.reshape(1, height, width, 1).astype(images.dtype)
    mixed = weight * images + (1.0 - weight) * partner(images, groups)
    return mixed, mixed_targets(labels, partner(labels, groups), lam, num_classes, smoothing), lam


def options(train: Any, devices: int) -> dict[str, Any]:
    """The train step's mixing arguments from `config.train`, grouped by device (defaults: no mixing)."""
    return {
        "mixup_alpha": float(train.get("mixup_alpha", 0.0)),
        "cutmix_alpha": float(train.get("cutmix_alpha", 0.0)),
        "mix_prob": float(train.get("mix_prob", 1.0)),
        "switch_prob": float(train.get("switch_prob", 0.5)),
        "mix_groups": int(devices),
    }
