"""`--mode=info`: the network a config trains, as a JSON-ready dict and as a table, with where each value came from.

The caller resolves the config as the trainer does (`effscale.train.resolve`: the class count from
the dataset's TFDS metadata), so params, MACs and activations here are those of the run's result.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effscale import complexity, scaling
from effscale.spec import NetworkSpec
from effscale.units import si

# The compound coefficient of each scaled dimension (depth alpha^phi, width beta^phi, resolution gamma^phi).
_COEFFICIENTS = {
    "depth": ("alpha", scaling.ALPHA),
    "width": ("beta", scaling.BETA),
    "resolution": ("gamma", scaling.GAMMA),
}


def sources(model: Mapping[str, Any], data: Mapping[str, Any] | None) -> dict[str, str]:
    """Where width, depth, resolution, dropout, phi and num_classes come from, for the config as written.

    `model` and `data` are the config's sections before resolving (`model.num_classes` still None
    when the dataset decides it).
    """
    preset = model.get("preset")
    phi = model.get("phi")
    out = {}
    for key in ("width", "depth", "resolution", "dropout"):
        value = model.get(key)
        text = f"model.{key} ({value:g})" if value is not None else f"preset {preset}" if preset else "B0 (no preset)"
        if phi is not None and key in _COEFFICIENTS:
            name, default = _COEFFICIENTS[key]
            text += f", scaled by {name}^phi ({name} {model.get(name, default):g}, phi {phi:g})"
            if key == "resolution":
                multiple = model.get("resolution_multiple", scaling.RESOLUTION_MULTIPLE)
                text += f", rounded to a multiple of {multiple}"
        out[key] = text
    out["phi"] = "model.phi" if phi is not None else "not set (no compound scaling)"
    if model.get("num_classes") is not None:
        out["num_classes"] = "model.num_classes"
    elif data is not None and data.get("classes"):
        out["num_classes"] = f"config.data.classes (a subset of {data.get('name')})"
    else:
        out["num_classes"] = f"the TFDS metadata of {data.get('name') if data else 'the dataset'}"
    return out


def describe(spec: NetworkSpec, xla: bool = True, origin: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Structure and complexity of `spec`; with `xla`, XLA's FLOP count of the forward pass too.

    `origin` (from `sources`) is included as "sources" when given.
    """
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
    if origin is not None:
        out["sources"] = dict(origin)
    if xla:
        flops = complexity.xla_flops(spec)
        out["xla_flops"] = flops
        out["xla_flops_convention"] = (
            "XLA cost analysis of the jitted float32 inference forward pass, batch 1, depthwise as one grouped "
            "convolution: 2 FLOPs per multiply-add plus elementwise work (BatchNorm, swish, SE gate)"
        )
        out["xla_flops_over_2macs"] = flops / (2 * report.macs)
    return out


def _source_lines(d: Mapping[str, Any]) -> list[str]:
    if "sources" not in d:
        return []
    lines = ["", "where the values come from:"]
    for key, text in d["sources"].items():
        value = d[key]
        shown = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<12} {shown:>6}  {text}")
    return lines


def format_table(d: Mapping[str, Any]) -> str:
    """A human-readable table of `describe`'s output."""
    phi = "" if d["phi"] is None else f"  phi {d['phi']:g}"
    lines = [
        f"EfficientNet  width {d['width']:.4g}  depth {d['depth']:.4g}  resolution {d['resolution']}{phi}  "
        f"dropout {d['dropout']:g}  classes {d['num_classes']}",
        *_source_lines(d),
        "",
        f"stem: conv3x3/2 3 -> {d['stem_channels']}",
        "",
        f"{'stage':>5} {'kernel':>6} {'stride':>6} {'repeats':>7} {'in':>5} {'out':>5} {'expand':>6} "
        f"{'se':>4} {'out res':>7} {'params':>10} {'MACs':>10}",
    ]
    for st in d["stages"]:
        lines.append(
            f"{st['stage']:>5} {st['kernel']:>6} {st['stride']:>6} {st['repeats']:>7} {st['in_channels']:>5} "
            f"{st['out_channels']:>5} {st['expand']:>6g} {st['se_channels']:>4} {st['out_resolution']:>7} "
            f"{si(st['params'], digits=4):>10} {si(st['macs'], digits=4):>10}"
        )
    top = f"global {d['pooling']} pool" if d["pooling"] else "no pooling"
    if d["include_top"]:
        top += "".join(f", dense -> {h} + swish" for h in d["head_hidden"])
        top += f", dropout {d['dropout']:g}, dense -> {d['num_classes']}"
    lines += [
        f"head: conv1x1 -> {d['head_channels']}, {top}",
        "",
        f"parameters (trainable): {d['params']:,}   BatchNorm statistics: {d['bn_stats']:,}",
        f"multiply-adds per image: {d['macs']:,} ({si(d['macs'], digits=4)})",
        f"activations per image:   {d['activations']:,} ({si(d['activations'], digits=4)})",
    ]
    if "xla_flops" in d:
        lines.append(
            f"XLA cost analysis: {si(d['xla_flops'], digits=4)} FLOPs per image = "
            f"{d['xla_flops_over_2macs']:.3f} x 2 x MACs (XLA counts a multiply-add as 2 FLOPs, plus elementwise work)"
        )
    return "\n".join(lines)
