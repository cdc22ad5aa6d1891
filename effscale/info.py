"""`--mode=info`: what a config describes, as a JSON-ready dict and as a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effscale import complexity
from effscale.spec import NetworkSpec


def describe(spec: NetworkSpec, xla: bool = True) -> dict[str, Any]:
    """Structure and complexity of `spec`; with `xla`, XLA's FLOP count of the forward pass too."""
    report = complexity.analyse(spec)
    out: dict[str, Any] = {
        "resolution": spec.resolution,
        "width": spec.width,
        "depth": spec.depth,
        "phi": spec.phi,
        "dropout": spec.dropout,
        "num_classes": spec.num_classes,
        "include_top": spec.include_top,
        "pooling": spec.pooling,
        "stem_channels": spec.stem_channels,
        "head_channels": spec.head_channels,
        "head_hidden": list(spec.head_hidden),
        "num_blocks": len(spec.blocks),
        "params": report.params,
        "bn_stats": report.total.bn_stats,
        "macs": report.macs,
        "activations": report.activations,
        "stages": [
            {
                "stage": st.stage,
                "kernel": st.kernel,
                "stride": st.stride,
                "repeats": st.repeats,
                "in_channels": st.in_channels,
                "out_channels": st.out_channels,
                "expand": st.expand,
                "se_channels": st.se_channels,
                "out_resolution": st.out_resolution,
                "params": cost.params,
                "macs": cost.macs,
                "activations": cost.activations,
            }
            for st, (_, cost) in zip(spec.stages, report.parts[1:-1], strict=True)
        ],
    }
    if xla:
        flops = complexity.xla_flops(spec)
        out["xla_flops"] = flops
        out["xla_flops_convention"] = (
            "XLA cost analysis of the jitted float32 inference forward pass, batch 1, depthwise as one grouped "
            "convolution: 2 FLOPs per multiply-add plus elementwise work (BatchNorm, swish, SE gate)"
        )
        out["xla_flops_over_2macs"] = flops / (2 * report.macs)
    return out


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return f"{n:.0f}"


def format_table(d: Mapping[str, Any]) -> str:
    """A human-readable table of `describe`'s output."""
    phi = "" if d["phi"] is None else f"  phi {d['phi']:g}"
    lines = [
        f"EfficientNet  width {d['width']:.4g}  depth {d['depth']:.4g}  resolution {d['resolution']}{phi}  "
        f"dropout {d['dropout']:g}  classes {d['num_classes']}",
        f"stem: conv3x3/2 3 -> {d['stem_channels']}",
        "",
        f"{'stage':>5} {'kernel':>6} {'stride':>6} {'repeats':>7} {'in':>5} {'out':>5} {'expand':>6} "
        f"{'se':>4} {'out res':>7} {'params':>10} {'MACs':>10}",
    ]
    for st in d["stages"]:
        lines.append(
            f"{st['stage']:>5} {st['kernel']:>6} {st['stride']:>6} {st['repeats']:>7} {st['in_channels']:>5} "
            f"{st['out_channels']:>5} {st['expand']:>6g} {st['se_channels']:>4} {st['out_resolution']:>7} "
            f"{_si(st['params']):>10} {_si(st['macs']):>10}"
        )
    top = f"global {d['pooling']} pool" if d["pooling"] else "no pooling"
    if d["include_top"]:
        top += "".join(f", dense -> {h} + swish" for h in d["head_hidden"])
        top += f", dropout {d['dropout']:g}, dense -> {d['num_classes']}"
    lines += [
        f"head: conv1x1 -> {d['head_channels']}, {top}",
        "",
        f"parameters (trainable): {d['params']:,}   BatchNorm statistics: {d['bn_stats']:,}",
        f"multiply-adds per image: {d['macs']:,} ({_si(d['macs'])})",
        f"activations per image:   {d['activations']:,} ({_si(d['activations'])})",
    ]
    if "xla_flops" in d:
        lines.append(
            f"XLA cost analysis: {_si(d['xla_flops'])} FLOPs per image = {d['xla_flops_over_2macs']:.3f} x 2 x MACs "
            "(XLA counts a multiply-add as 2 FLOPs, plus elementwise work)"
        )
    return "\n".join(lines)
