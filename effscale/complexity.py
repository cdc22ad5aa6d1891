"""Analytic complexity of a `NetworkSpec`: parameters, multiply-adds, activations.

Counted from the layer description (effscale.layers) that the model is built from,
per image at the spec's resolution, in the paper's convention: multiply-adds of
convolution and dense layers at their true output sizes ("FLOPs" in Table 2).
Activations are the output elements of conv, dense and pooling layers (pycls'
convention). BatchNorm scale/offset count as trainable parameters, its running
statistics separately (`bn_stats`). `xla_flops` gives XLA's own count of the
compiled forward pass as a cross-check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from effscale import layers
from effscale.layers import Layer
from effscale.spec import BlockSpec, NetworkSpec


@dataclasses.dataclass(frozen=True)
class Cost:
    """Additive complexity of a part of the network."""

    params: int = 0
    macs: int = 0
    activations: int = 0
    bn_stats: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.params + other.params,
            self.macs + other.macs,
            self.activations + other.activations,
            self.bn_stats + other.bn_stats,
        )


def total(costs: Iterable[Cost]) -> Cost:
    out = Cost()
    for c in costs:
        out = out + c
    return out


def conv2d(size_out: int, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = False) -> Cost:
    """A kxk convolution producing a size_out x size_out x c_out map."""
    weights = kernel * kernel * (c_in // groups) * c_out
    return Cost(
        params=weights + (c_out if bias else 0),
        macs=size_out * size_out * weights,
        activations=size_out * size_out * c_out,
    )


def batchnorm(channels: int) -> Cost:
    return Cost(params=2 * channels, bn_stats=2 * channels)


def dense(c_in: int, c_out: int, bias: bool = True) -> Cost:
    return Cost(params=c_in * c_out + (c_out if bias else 0), macs=c_in * c_out, activations=c_out)


def global_pool(channels: int) -> Cost:
    return Cost(activations=channels)


def layer(lay: Layer) -> Cost:
    """One described layer (an 'se' layer: its parts; the gate's multiply is not counted, as in the paper)."""
    kind = lay.kind
    if kind == layers.CONV:
        return conv2d(lay.size, lay.c_in, lay.c_out, lay.kernel, bias=lay.bias)
    if kind == layers.DEPTHWISE:
        return conv2d(lay.size, lay.c_in, lay.c_out, lay.kernel, groups=lay.c_in, bias=lay.bias)
    if kind == layers.BN:
        return batchnorm(lay.c_out)
    if kind == layers.DENSE:
        return dense(lay.c_in, lay.c_out, lay.bias)
    if kind in (layers.AVG_POOL, layers.MAX_POOL):
        return global_pool(lay.c_out)
    return total(layer(p) for p in lay.parts)  # 'se'; dropout and drop path cost nothing


def stem(spec: NetworkSpec) -> Cost:
    return total(layer(x) for x in layers.stem(spec))


def block(b: BlockSpec) -> Cost:
    """One MBConv block: expand, depthwise, squeeze-excite, project."""
    return total(layer(x) for x in layers.block(b))


def head(spec: NetworkSpec) -> Cost:
    """Head conv, pooling and (with the top) the classifier."""
    return total(layer(x) for x in layers.head(spec))


@dataclasses.dataclass(frozen=True)
class Report:
    """Complexity of a network, in total and by part (stem, stage 1..n, head)."""

    total: Cost
    parts: tuple[tuple[str, Cost], ...]

    @property
    def params(self) -> int:
        return self.total.params

    @property
    def macs(self) -> int:
        return self.total.macs

    @property
    def activations(self) -> int:
        return self.total.activations

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.total.params,
            "bn_stats": self.total.bn_stats,
            "macs": self.total.macs,
            "activations": self.total.activations,
            "parts": {name: dataclasses.asdict(c) for name, c in self.parts},
        }


def analyse(spec: NetworkSpec) -> Report:
    """Per-image complexity of `spec` at its resolution."""
    parts: list[tuple[str, Cost]] = [("stem", stem(spec))]
    for st in spec.stages:
        parts.append((f"stage{st.stage}", total(block(b) for b in spec.blocks if b.stage == st.stage)))
    parts.append(("head", head(spec)))
    return Report(total=total(c for _, c in parts), parts=tuple(parts))


def xla_flops(spec: NetworkSpec, depthwise: str = "xla", batch: int = 1) -> float:
    """XLA's cost-analysis FLOP count of the jitted inference forward pass, per image.

    XLA counts a multiply-add as 2 FLOPs and adds elementwise work (BatchNorm,
    swish, the SE gate, padding), so expect a little over 2 x `macs`. Nothing is
    initialised or run: the pass is lowered from abstract shapes.
    """
    import jax
    import jax.numpy as jnp

    from effscale.model import EfficientNet, abstract_variables

    net = EfficientNet(spec, depthwise=depthwise)
    x = jax.ShapeDtypeStruct((batch, spec.resolution, spec.resolution, spec.in_channels), jnp.float32)
    compiled = jax.jit(lambda v, im: net.apply(v, im, train=False)).lower(abstract_variables(net), x).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax returned one dict per device
        analysis = analysis[0]
    return float(analysis["flops"]) / batch
