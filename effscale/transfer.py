"""Transfer learning: freezing by specification, new heads.

The recipe (Keras' fine-tuning guide): import ImageNet weights, drop the
1000-way top, pool (avg or max), put a new dropout + dense head on top, train the
head with the base frozen, then unfreeze the top blocks and train them with the
head at a low learning rate, keeping BatchNorm statistics frozen.

Freeze specifications (`freeze=`):

* ``'none'``: everything trains.
* ``'base'``: only the head (``predictions`` and any other non-base module) trains.
* ``'below:<target>'``: everything before `target` (in forward order) is frozen,
  `target` and everything after it trains. Targets: a block (``block6a``), a
  stage (``stage6``: its first block), ``top`` (the head convolution
  ``top_conv``: all blocks frozen), ``stem`` (same as 'none'), a layer inside a
  block (``block7a/project_conv``), or ``se<k>``: the layers after the k-th
  squeeze-excite multiply, as Keras counts them (``multiply_16`` is the SE gate
  of B0's 16th and last block: ``'below:se16'`` trains block7a's project_conv /
  project_bn, top_conv / top_bn and the head).

The "base" is what Keras' ``include_top=False`` model holds: stem, blocks and
the head convolution top_conv / top_bn. Frozen parts also keep their BatchNorm
statistics (used, not updated): see `frozen_batchnorm`.

How effscale.train uses it, per phase (nothing here touches the training loop):

    labels = transfer.param_labels(spec, variables['params'], freeze)
    tx = transfer.freeze_optimizer(tx, labels)          # frozen leaves get no optimizer state
    frozen_bn = transfer.frozen_batchnorm(spec, freeze, mode=config.transfer.batchnorm)
    module = model.create(spec, config.model, frozen_bn)  # those BatchNorms normalise with running stats

A block whose output BatchNorm is frozen also skips stochastic depth, so a frozen block gives
the same features in training as in evaluation (Keras: ``base_model(training=False)``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from effscale import layers
from effscale.spec import NetworkSpec

# Imported weights into fresh variables: effscale.weights' job, re-exported for callers of transfer.
from effscale.weights.merge import merge_imported as merge_imported

TRAINABLE = "trainable"
FROZEN = "frozen"
BN_MODES = ("frozen", "base")


# --------------------------------------------------------------------------------------------------
# Structure in forward order.


def base_layers(spec: NetworkSpec) -> tuple[str, ...]:
    """The base's weighted layers in forward order, as '/'-joined module paths ('block2a/se/se_reduce')."""
    return tuple(path for path, _ in layers.weighted(spec) if layers.is_base_module(path.split("/", 1)[0]))


def freeze_targets(spec: NetworkSpec) -> tuple[str, ...]:
    """The names 'below:<name>' accepts for `spec` (sub-block layers aside)."""
    stages = [f"stage{s.stage}" for s in spec.stages]
    ses = [f"se{i}" for i in range(1, sum(1 for b in spec.blocks if b.se_channels) + 1)]
    return ("stem", *spec.block_names(), *stages, *ses, "top")


def _describe_targets(spec: NetworkSpec) -> str:
    blocks = spec.block_names()
    n_se = sum(1 for b in spec.blocks if b.se_channels)
    return (
        f"'none', 'base', or 'below:<target>' with <target> one of: stem, blocks {', '.join(blocks)}; "
        f"stages stage1..stage{len(spec.stages)}; se1..se{n_se} (after the k-th squeeze-excite multiply); top; "
        f"or a layer inside a block such as '{blocks[-1]}/project_conv'"
    )


def frozen_count(spec: NetworkSpec, freeze: str) -> int:
    """How many of `base_layers(spec)` (a prefix, in forward order) `freeze` freezes."""
    base = base_layers(spec)
    freeze = freeze.strip()
    if freeze == "none":
        return 0
    if freeze == "base":
        return len(base)
    if not freeze.startswith("below:"):
        raise ValueError(f"Unknown freeze specification {freeze!r}: expected {_describe_targets(spec)}.")
    target = freeze[len("below:") :].strip()
    first = _first_layer(spec, target)
    if first is None:
        raise ValueError(f"freeze={freeze!r}: no {target!r} in this network; expected {_describe_targets(spec)}.")
    return base.index(first)


def _first_layer(spec: NetworkSpec, target: str) -> str | None:
    base = base_layers(spec)
    if target == "stem":
        return base[0]
    if target == "top":
        return "top_conv"
    if m := re.fullmatch(r"stage(\d+)", target):
        blocks = [b for b in spec.blocks if b.stage == int(m.group(1))]
        target = blocks[0].name if blocks else ""
    elif m := re.fullmatch(r"se(\d+)", target):
        with_se = [b for b in spec.blocks if b.se_channels]
        k = int(m.group(1))
        if not 1 <= k <= len(with_se):
            return None
        # What follows the k-th SE multiply (Keras' multiply_k) is that block's projection.
        return f"{with_se[k - 1].name}/project_conv"
    if target in base:
        return target
    prefixed = [layer for layer in base if layer.startswith(target + "/")]
    return prefixed[0] if prefixed else None


# --------------------------------------------------------------------------------------------------
# Labels for optax.multi_transform.


def _module_of(path: tuple[str, ...], base: Iterable[str]) -> str | None:
    """The base layer a parameter path belongs to, or None for a head parameter."""
    if not layers.is_base_module(path[0]):
        return None
    for depth in range(len(path) - 1, 0, -1):
        candidate = "/".join(path[:depth])
        if candidate in base:
            return candidate
    raise ValueError(f"Parameter {'/'.join(path)} is in the base but matches no known layer; model and spec disagree.")


def param_labels(spec: NetworkSpec, params: Mapping[str, Any], freeze: str) -> dict[str, Any]:
    """A pytree like `params` of 'trainable' / 'frozen' labels for `optax.multi_transform`.

    Args:
      spec: the network description the params belong to.
      params: the 'params' collection (not the whole variables dict).
      freeze: a freeze specification (see the module docstring).
    """
    from flax import traverse_util

    if "params" in params and "stem_conv" not in params:
        raise ValueError("param_labels expects variables['params'], not the whole variables dict.")
    base = base_layers(spec)
    frozen = set(base[: frozen_count(spec, freeze)])
    labels = {}
    for path in traverse_util.flatten_dict(dict(params)):
        layer = _module_of(path, base)
        labels[path] = FROZEN if layer in frozen else TRAINABLE
    return traverse_util.unflatten_dict(labels)


def freeze_optimizer(tx: Any, labels: Any) -> Any:
    """Wraps `tx` so that only 'trainable' leaves are updated and only they carry optimizer state."""
    import optax

    return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


def count_trainable(params: Any, labels: Any) -> tuple[int, int]:
    """(trainable, frozen) parameter counts, for logging what a freeze specification did."""
    from flax import traverse_util

    flat_labels = traverse_util.flatten_dict(dict(labels))
    counts = {TRAINABLE: 0, FROZEN: 0}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        counts[flat_labels[path]] += int(np.size(value))
    return counts[TRAINABLE], counts[FROZEN]


# --------------------------------------------------------------------------------------------------
# BatchNorm of frozen parts.


def frozen_batchnorm(spec: NetworkSpec, freeze: str, *, mode: str = "frozen") -> frozenset[str]:
    """BatchNorm layers ('/'-joined module paths) that must use, and not update, their running statistics.

    mode='frozen': the BatchNorms of the frozen part only. mode='base': every BatchNorm of
    the base, also in unfrozen blocks (Keras' fine-tuning guide calls the base with
    training=False, so its BatchNorms stay in inference mode while their scale / bias train).
    """
    if mode not in BN_MODES:
        raise ValueError(f"mode must be one of {BN_MODES}, got {mode!r}.")
    base = base_layers(spec)
    chosen = base if mode == "base" else base[: frozen_count(spec, freeze)]
    return frozenset(layer for layer in chosen if layers.is_batchnorm(layer))


def keep_frozen_batch_stats(new_stats: Any, old_stats: Any, frozen: Iterable[str]) -> Any:
    """`new_stats` with the statistics of the `frozen` BatchNorm layers ('/'-joined module paths, as
    `frozen_batchnorm` gives them) taken from `old_stats`; the tree keeps its structure (jit-friendly).

    The trainer applies it after every step to the statistics and their moving average, so frozen
    layers keep theirs bit for bit.
    """
    import jax

    frozen = frozenset(frozen)

    def keep(path: tuple[Any, ...], old: Any, new: Any) -> Any:
        names = [str(getattr(k, "key", k)) for k in path]
        return old if "/".join(names[:-1]) in frozen else new

    return jax.tree_util.tree_map_with_path(keep, old_stats, new_stats)


# --------------------------------------------------------------------------------------------------
# Heads.


def head_spec(
    spec: NetworkSpec,
    num_classes: int,
    *,
    pooling: str = "avg",
    dropout: float | None = None,
    hidden: tuple[int, ...] = (),
) -> NetworkSpec:
    """`spec` with a new classification head: pooling ('avg' | 'max') -> [dense(h) + swish for h in
    `hidden`] -> dropout -> dense(num_classes).

    The same as building from a config with model.include_top=True, model.num_classes=N,
    model.pooling=..., model.dropout=..., model.head_hidden=...; import the weights with the
    1000-way top dropped.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if pooling not in ("avg", "max"):
        raise ValueError(f"A classification head needs pooling 'avg' or 'max', got {pooling!r}.")
    dropout = spec.dropout if dropout is None else float(dropout)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden layer widths must be >= 1, got {hidden!r}.")
    return dataclasses.replace(
        spec,
        include_top=True,
        num_classes=int(num_classes),
        pooling=pooling,
        dropout=dropout,
        head_hidden=tuple(int(h) for h in hidden),
    )
