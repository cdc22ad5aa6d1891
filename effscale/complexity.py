"""Analytic complexity of a `NetworkSpec`: parameters, multiply-adds, activations.

Counted from the description itself (never from a hand-kept mirror of the model),
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


def dense(c_in: int, c_out: int) -> Cost:
    return Cost(params=c_in * c_out + c_out, macs=c_in * c_out, activations=c_out)


def global_pool(channels: int) -> Cost:
    return Cost(activations=channels)


def stem(spec: NetworkSpec) -> Cost:
    return conv2d(spec.stem_resolution, spec.in_channels, spec.stem_channels, 3) + batchnorm(spec.stem_channels)


def block(b: BlockSpec) -> Cost:
    """One MBConv block: expand, depthwise, squeeze-excite, project."""
    parts = []
    if b.expand != 1:
        parts += [conv2d(b.in_resolution, b.in_channels, b.expanded_channels, 1), batchnorm(b.expanded_channels)]
    parts += [
        conv2d(b.out_resolution, b.expanded_channels, b.expanded_channels, b.kernel, groups=b.expanded_channels),
        batchnorm(b.expanded_channels),
    ]
    if b.se_channels:
        parts += [
            global_pool(b.expanded_channels),
            conv2d(1, b.expanded_channels, b.se_channels, 1, bias=True),
            conv2d(1, b.se_channels, b.expanded_channels, 1, bias=True),
        ]
    parts += [conv2d(b.out_resolution, b.expanded_channels, b.out_channels, 1), batchnorm(b.out_channels)]
    return total(parts)


def head(spec: NetworkSpec) -> Cost:
    """Head conv, pooling and (with the top) the classifier."""
    in_ch = spec.blocks[-1].out_channels if spec.blocks else spec.stem_channels
    c = conv2d(spec.feature_resolution, in_ch, spec.head_channels, 1) + batchnorm(spec.head_channels)
    if spec.pooling is not None:
        c = c + global_pool(spec.head_channels)
    if spec.include_top:
        widths = (spec.head_channels, *spec.head_hidden, spec.num_classes)
        c = total([c, *(dense(a, b) for a, b in zip(widths, widths[1:], strict=False))])
    return c


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

    from effscale.model import EfficientNet

    net = EfficientNet(spec, depthwise=depthwise)
    x = jax.ShapeDtypeStruct((batch, spec.resolution, spec.resolution, spec.in_channels), jnp.float32)
    variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))
    compiled = jax.jit(lambda v, im: net.apply(v, im, train=False)).lower(variables, x).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax returned one dict per device
        analysis = analysis[0]
    return float(analysis["flops"]) / batch
