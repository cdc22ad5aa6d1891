"""Keras applications' names and layouts for effscale's variables.

Keras names a layer by joining the module path with '_' (``block2a_se_reduce``); its BatchNorm
weights are gamma / beta / moving_mean / moving_variance; its depthwise kernel is stored
(kh, kw, C, 1), effscale's (kh, kw, 1, C). Other kernels are HWIO in both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from effscale import layers
from effscale import spec as spec_lib
from effscale.spec import NetworkSpec
from effscale.weights.imported import Path
from effscale.weights.names import Format

_BN_WEIGHTS = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}
_KIND_CLASS = {  # layers.Layer kind -> Keras class (snake case)
    layers.CONV: "conv2d",
    layers.DEPTHWISE: "depthwise_conv2d",
    layers.BN: "batch_normalization",
    layers.DENSE: "dense",
}
# Keras 3 .weights.h5 keeps a layer's weights by position; the order of each layer class's weights.
VARS = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "normalization": ("mean", "variance", "count"),
}
NORMALIZATION = "normalization"  # the input Normalization layer (its weights describe the preprocessing)
_IN_BLOCK = re.compile(r"block\d+[a-z]+_(.+)")


def keras_layer_name(path: Path) -> str:
    """Keras layer name of an effscale module path: ('block2a', 'se', 'se_reduce') -> 'block2a_se_reduce'."""
    return "_".join(p for p in path if p != layers.SE)


def keras_key(path: Path) -> str:
    """Source key ('layer/weight') of an effscale variable path ('params', module..., leaf)."""
    module, leaf = path[1:-1], path[-1]
    weight = _BN_WEIGHTS[leaf] if layers.is_batchnorm(module) else leaf
    return f"{keras_layer_name(module)}/{weight}"


def keras_to_ours(path: Path, value: np.ndarray) -> np.ndarray:
    if path[-2] == "dwconv" and value.ndim == 4:
        return np.transpose(value, (0, 1, 3, 2))  # (kh, kw, C, 1) -> (kh, kw, 1, C)
    return value


def keras_format(name: str) -> Format:
    """The Keras `Format` (by layer name); `name` says which file layout, for messages."""
    return Format(
        name=name,
        key=keras_key,
        to_ours=keras_to_ours,
        head_key=f"{layers.HEAD_MODULE}/kernel",
        head_classes=lambda kernel: int(kernel.shape[-1]),
        ignorable=lambda key: False,
        block_pattern=r"^(block\d+[a-z]+)_dwconv/",
    )


def _base_layers(spec: NetworkSpec) -> list[tuple[str, layers.Layer]]:
    """(Keras name, layer) of the base's weighted layers, in forward order."""
    out = []
    for path, layer in layers.weighted(spec):
        module = tuple(path.split("/"))
        if layers.is_base_module(module[0]):
            out.append((keras_layer_name(module), layer))
    return out


def keras_layer_order(spec: NetworkSpec, include_top: bool = True) -> list[str]:
    """Names of the weighted Keras layers in the order Keras creates them (for files without names)."""
    names = [NORMALIZATION, *(name for name, _ in _base_layers(spec))]
    return names + ([layers.HEAD_MODULE] if include_top else [])


def layer_classes() -> dict[str, str]:
    """Keras class (snake case) of each EfficientNet layer name, block prefixes stripped ('se_reduce': 'conv2d')."""
    # B0 has every optional layer: block2a expands and squeezes-and-excites.
    net = spec_lib.build({"preset": "b0"})
    out = {_strip_block(name): _KIND_CLASS[layer.kind] for name, layer in _base_layers(net)}
    return {**out, layers.HEAD_MODULE: _KIND_CLASS[layers.DENSE]}


def _strip_block(name: str) -> str:
    m = _IN_BLOCK.fullmatch(name)
    return m.group(1) if m else name


def layer_class(name: str, classes: Mapping[str, str]) -> str | None:
    """Keras class of a layer named `name` (`classes` from `layer_classes`); None for a layer EfficientNet lacks."""
    if re.fullmatch(r"normalization(_\d+)?", name):
        return NORMALIZATION
    return classes.get(_strip_block(name))
