"""The layers of a `NetworkSpec`, in forward order: one description for every part that walks the network.

The Flax modules (effscale.model), the complexity count (effscale.complexity), freezing
(effscale.transfer) and weight import (effscale.weights) all read these records, so a layer's
name, kind and channels are written down once. Names are the Flax module names, which follow
Keras applications: ``stem_conv``, ``expand_conv``, ``dwconv``, ``se/se_reduce``, ``top_bn``,
``predictions``; a block's layers are named inside the block (``block2a/expand_conv``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

from effscale.spec import BlockSpec, NetworkSpec

CONV, DEPTHWISE, BN, DENSE = "conv", "depthwise", "bn", "dense"
AVG_POOL, MAX_POOL, SE, DROPOUT, DROP_PATH = "avg_pool", "max_pool", "se", "dropout", "drop_path"
WEIGHTED = (CONV, DEPTHWISE, BN, DENSE)
KINDS = (*WEIGHTED, AVG_POOL, MAX_POOL, SE, DROPOUT, DROP_PATH)
ACTIVATIONS = ("none", "swish", "sigmoid")
HEAD_MODULE = "predictions"  # the classifier: the only layer of the 1000-way top that weight files hold
_BLOCK_NAME = re.compile(r"^block\d+[a-z]+$")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: what it computes, on how many channels, at what output size.

    kind: 'conv' (kxk, no bias unless `bias`), 'depthwise', 'bn' (BatchNorm), 'dense',
    'avg_pool' / 'max_pool' (global), 'se' (squeeze-excite: its `parts` are the squeeze
    and two 1x1 convolutions, and it multiplies its input by their output), 'dropout',
    'drop_path' (per-sample stochastic depth). `act` is applied to the layer's output.
    """

    name: str
    kind: str
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    size: int = 1  # side of the output map; 1 after global pooling and for dense layers
    bias: bool = False
    act: str = "none"
    rate: float = 0.0  # dropout and drop_path only
    parts: tuple[Layer, ...] = ()

    @property
    def weighted(self) -> bool:
        """Whether the layer holds variables of its own (an 'se' layer holds them in its parts)."""
        return self.kind in WEIGHTED


def _conv(name: str, c_in: int, c_out: int, size: int, kernel: int = 1, stride: int = 1) -> Layer:
    return Layer(name, CONV, c_in, c_out, kernel, stride, size)


def _bn(name: str, channels: int, size: int, act: str = "swish") -> Layer:
    return Layer(name, BN, channels, channels, size=size, act=act)


def stem(spec: NetworkSpec) -> tuple[Layer, ...]:
    """Stride-2 3x3 convolution, BatchNorm + swish."""
    size = spec.stem_resolution
    return (
        _conv("stem_conv", spec.in_channels, spec.stem_channels, size, kernel=3, stride=2),
        _bn("stem_bn", spec.stem_channels, size),
    )


def squeeze_excite(channels: int, reduced: int, size: int) -> Layer:
    """Global average pool -> 1x1 conv (bias) + swish -> 1x1 conv (bias) + sigmoid, gating the input."""
    parts = (
        Layer("se_squeeze", AVG_POOL, channels, channels),
        Layer("se_reduce", CONV, channels, reduced, bias=True, act="swish"),
        Layer("se_expand", CONV, reduced, channels, bias=True, act="sigmoid"),
    )
    return Layer(SE, SE, channels, channels, size=size, parts=parts)


def block(b: BlockSpec) -> tuple[Layer, ...]:
    """One MBConv block: [expand 1x1 + BN], depthwise + BN, [squeeze-excite], project 1x1 + BN, [drop path].

    The identity shortcut (`b.residual`) is added after the last layer.
    """
    e, size = b.expanded_channels, b.out_resolution
    out: list[Layer] = []
    if b.expand != 1:
        out += [_conv("expand_conv", b.in_channels, e, b.in_resolution), _bn("expand_bn", e, b.in_resolution)]
    out += [Layer("dwconv", DEPTHWISE, e, e, b.kernel, b.stride, size), _bn("bn", e, size)]
    if b.se_channels:
        out.append(squeeze_excite(e, b.se_channels, size))
    out += [_conv("project_conv", e, b.out_channels, size), _bn("project_bn", b.out_channels, size, act="none")]
    if b.residual and b.drop_path > 0:
        out.append(Layer("drop", DROP_PATH, b.out_channels, b.out_channels, size=size, rate=b.drop_path))
    return tuple(out)


def head(spec: NetworkSpec) -> tuple[Layer, ...]:
    """Head 1x1 conv + BN, then (with pooling) global pooling, then (with the top) the classifier."""
    c_in = spec.blocks[-1].out_channels if spec.blocks else spec.stem_channels
    c, size = spec.head_channels, spec.feature_resolution
    out = [_conv("top_conv", c_in, c, size), _bn("top_bn", c, size)]
    if spec.pooling is None:
        return tuple(out)
    out.append(Layer(f"{spec.pooling}_pool", f"{spec.pooling}_pool", c, c))
    if not spec.include_top:
        return tuple(out)
    widths = (c, *spec.head_hidden)
    for k, (a, b) in enumerate(zip(widths, widths[1:], strict=False), start=1):
        out.append(Layer(f"head_dense{k}", DENSE, a, b, bias=True, act="swish"))
    if spec.dropout > 0:
        out.append(Layer("top_dropout", DROPOUT, widths[-1], widths[-1], rate=spec.dropout))
    out.append(Layer(HEAD_MODULE, DENSE, widths[-1], spec.num_classes, bias=True))
    return tuple(out)


def network(spec: NetworkSpec) -> tuple[tuple[str, tuple[Layer, ...]], ...]:
    """(scope, layers) in forward order: ('', stem), (block name, its layers) for each block, ('', head)."""
    return (("", stem(spec)), *((b.name, block(b)) for b in spec.blocks), ("", head(spec)))


def _leaves(scope: str, layers: Sequence[Layer]) -> Iterator[tuple[str, Layer]]:
    for layer in layers:
        path = f"{scope}/{layer.name}" if scope else layer.name
        if layer.parts:
            yield from _leaves(path, layer.parts)
        else:
            yield path, layer


def weighted(spec: NetworkSpec) -> tuple[tuple[str, Layer], ...]:
    """Every layer holding variables, as ('/'-joined module path, layer) in forward order ('block2a/se/se_reduce')."""
    return tuple(
        (path, layer) for scope, layers in network(spec) for path, layer in _leaves(scope, layers) if layer.weighted
    )


def is_batchnorm(module: str | Sequence[str]) -> bool:
    """Whether a module (a '/'-joined path or its names) is a BatchNorm: named 'bn' or '*_bn', as `block` names them."""
    last = module.rsplit("/", 1)[-1] if isinstance(module, str) else str(module[-1])
    return last == "bn" or last.endswith("_bn")


BASE_TOP_LEVEL = ("stem_conv", "stem_bn", "top_conv", "top_bn")  # with the blocks: what include_top=False keeps


def is_base_module(name: str) -> bool:
    """Whether a top-level module belongs to the base (stem, blocks, head convolution), not to the head."""
    return name in BASE_TOP_LEVEL or bool(_BLOCK_NAME.match(name))
