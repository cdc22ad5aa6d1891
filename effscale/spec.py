"""The network description: a config turned once into plain, immutable data.

`build(model_config)` resolves presets and compound scaling, applies the rounding
rules to a base architecture given as short block strings, and returns a
`NetworkSpec`. The Flax modules, the complexity counter, the input pipeline and
the run record all read this one object, so they cannot disagree on structure.

Block strings (decoded only here): ``r<repeats>_k<kernel>_s<stride>_e<expand>_c<out>[_se<ratio>]``,
for example ``r2_k3_s2_e6_c24_se0.25``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from effscale import scaling

# EfficientNet-B0 (Tan & Le 2019, Table 1).
B0_BLOCKS = (
    "r1_k3_s1_e1_c16_se0.25",
    "r2_k3_s2_e6_c24_se0.25",
    "r2_k5_s2_e6_c40_se0.25",
    "r3_k3_s2_e6_c80_se0.25",
    "r3_k5_s1_e6_c112_se0.25",
    "r4_k5_s2_e6_c192_se0.25",
    "r1_k3_s1_e6_c320_se0.25",
)
B0_STEM = 32
B0_HEAD = 1280

POOLINGS = ("avg", "max")
DTYPES = ("float32", "bfloat16")

_BLOCK_RE = re.compile(r"^r(\d+)_k(\d+)_s(\d+)_e(\d+(?:\.\d+)?)_c(\d+)(?:_se(\d+(?:\.\d+)?))?$")


@dataclasses.dataclass(frozen=True)
class StageArgs:
    """One decoded block string, before scaling."""

    repeats: int
    kernel: int
    stride: int
    expand: float
    out_channels: int
    se_ratio: float


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block after scaling: everything the module and the counter need."""

    name: str  # Keras-style: block{stage}{letter}, e.g. block2a
    stage: int  # 1-based
    index: int  # 0-based flat index over all blocks
    kernel: int
    stride: int
    expand: float
    in_channels: int
    out_channels: int
    expanded_channels: int
    se_channels: int  # 0 when the block has no squeeze-excite
    drop_path: float
    in_resolution: int
    out_resolution: int

    @property
    def residual(self) -> bool:
        """Identity shortcut: only when the block keeps stride 1 and its width."""
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """Summary of a stage (its first block takes the stride and channel change)."""

    stage: int
    kernel: int
    stride: int
    repeats: int
    in_channels: int
    out_channels: int
    expand: float
    se_channels: int
    out_resolution: int


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """A fully scaled EfficientNet: structure only, no runtime choices."""

    resolution: int
    in_channels: int
    stem_channels: int
    stem_resolution: int
    head_channels: int
    blocks: tuple[BlockSpec, ...]
    num_classes: int
    include_top: bool
    pooling: str | None
    dropout: float
    width: float
    depth: float
    phi: float | None
    bn_momentum: float
    bn_epsilon: float
    head_hidden: tuple[int, ...] = ()  # widths of dense + swish layers between pooling and the classifier

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """Per-stage view of `blocks`."""
        out = []
        for stage in sorted({b.stage for b in self.blocks}):
            blocks = [b for b in self.blocks if b.stage == stage]
            first, last = blocks[0], blocks[-1]
            out.append(
                StageSpec(
                    stage=stage,
                    kernel=first.kernel,
                    stride=first.stride,
                    repeats=len(blocks),
                    in_channels=first.in_channels,
                    out_channels=last.out_channels,
                    expand=first.expand,
                    se_channels=first.se_channels,
                    out_resolution=last.out_resolution,
                )
            )
        return tuple(out)

    @property
    def feature_resolution(self) -> int:
        """Spatial size of the head's feature map."""
        return self.blocks[-1].out_resolution if self.blocks else self.stem_resolution

    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)


def decode_block(text: str) -> StageArgs:
    """Decodes one block string such as ``r2_k3_s2_e6_c24_se0.25``."""
    m = _BLOCK_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"Cannot decode block string {text!r}: expected r<repeats>_k<kernel>_s<stride>_e<expand>_c<channels>"
            "[_se<ratio>], e.g. 'r2_k3_s2_e6_c24_se0.25'."
        )
    r, k, s, e, c, se = m.groups()
    args = StageArgs(int(r), int(k), int(s), float(e), int(c), float(se) if se else 0.0)
    if args.repeats < 1 or args.kernel < 1 or args.stride < 1 or args.expand < 1 or args.out_channels < 1:
        raise ValueError(f"Block string {text!r} has a repeat, kernel, stride, expand or channel count below 1.")
    if not 0 <= args.se_ratio <= 1:
        raise ValueError(f"Block string {text!r}: the squeeze-excite ratio must be in [0, 1].")
    return args


def same_output_size(size: int, stride: int) -> int:
    """Output size of a TF 'SAME' convolution: ceil(size / stride)."""
    return -(-size // stride)


def block_name(stage: int, j: int) -> str:
    """Keras' block names: block1a, block2a, block2b, ...; past 'z': aa, ab, ..."""
    letters = ""
    j += 1
    while j:
        j, rem = divmod(j - 1, 26)
        letters = chr(97 + rem) + letters
    return f"block{stage}{letters}"


def resolve_scale(model: Mapping[str, Any]) -> tuple[float, float, int, float, float | None]:
    """Resolves (width, depth, resolution, dropout, phi) from a model config.

    `preset` (if set) supplies width, depth, resolution and dropout; explicit
    `width` / `depth` / `resolution` / `dropout` override it; `phi` (if set)
    then applies pure compound scaling on top.
    """
    preset_name = model.get("preset")
    base = scaling.preset(preset_name) if preset_name else scaling.PRESETS["b0"]
    width = model.get("width")
    depth = model.get("depth")
    resolution = model.get("resolution")
    dropout = model.get("dropout")
    width = base.width if width is None else float(width)
    depth = base.depth if depth is None else float(depth)
    resolution = base.resolution if resolution is None else resolution
    dropout = base.dropout if dropout is None else float(dropout)
    _check_positive("model.width", width)
    _check_positive("model.depth", depth)
    _check_positive("model.resolution", resolution)
    if isinstance(resolution, float) and not float(resolution).is_integer():
        raise ValueError(f"model.resolution must be a whole number of pixels, got {resolution}.")
    resolution = int(resolution)
    if not 0 <= dropout < 1:
        raise ValueError(f"model.dropout must be in [0, 1), got {dropout}.")
    phi = model.get("phi")
    if phi is not None:
        scale = scaling.compound(
            float(phi),
            alpha=float(model.get("alpha", scaling.ALPHA)),
            beta=float(model.get("beta", scaling.BETA)),
            gamma=float(model.get("gamma", scaling.GAMMA)),
            base=scaling.Scale(width, depth, resolution, dropout),
            resolution_multiple=int(model.get("resolution_multiple", scaling.RESOLUTION_MULTIPLE)),
        )
        width, depth, resolution = scale.width, scale.depth, scale.resolution
        phi = float(phi)
    return width, depth, resolution, dropout, phi


def _check_positive(field: str, value: float) -> None:
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field} must be a positive number, got {value!r}.")


def _head_fields(model: Mapping[str, Any]) -> tuple[str | None, bool, int, tuple[int, ...]]:
    """(pooling, include_top, num_classes, head_hidden) from a model config, checked against each other."""
    pooling = model.get("pooling", "avg")
    if pooling not in (*POOLINGS, None):
        raise ValueError(f"model.pooling must be one of {POOLINGS} or None, got {pooling!r}.")
    include_top = bool(model.get("include_top", True))
    if include_top and pooling is None:
        raise ValueError("model.pooling=None (unpooled features) needs model.include_top=False.")
    # None means "not decided here": the trainer fills it from the dataset; alone, ImageNet's 1000.
    num_classes = int(model.get("num_classes") or 1000)
    if include_top and num_classes < 1:
        raise ValueError(f"model.num_classes must be >= 1, got {num_classes}.")
    head_hidden = model.get("head_hidden") or ()
    head_hidden = (head_hidden,) if isinstance(head_hidden, int) else tuple(head_hidden)
    if any(not isinstance(h, int) or h < 1 for h in head_hidden):
        raise ValueError(f"model.head_hidden must be a tuple of positive layer widths, got {head_hidden!r}.")
    if head_hidden and not include_top:
        raise ValueError("model.head_hidden needs model.include_top=True (the hidden layers feed the classifier).")
    return pooling, include_top, num_classes, head_hidden


def _scaled_blocks(
    stages: Sequence[StageArgs],
    width: float,
    depth: float,
    divisor: int,
    drop_path: float,
    in_channels: int,
    in_resolution: int,
) -> tuple[BlockSpec, ...]:
    """Every block of the scaled stages, fed by `in_channels` at `in_resolution` (the stem's output)."""
    repeats = [scaling.round_repeats(s.repeats, depth) for s in stages]
    total = sum(repeats)
    blocks: list[BlockSpec] = []
    in_ch, size = in_channels, in_resolution
    for stage_idx, (args, n) in enumerate(zip(stages, repeats, strict=True), start=1):
        out_ch = scaling.round_filters(args.out_channels, width, divisor)
        for j in range(n):
            stride = args.stride if j == 0 else 1
            out_size = same_output_size(size, stride)
            expanded = int(in_ch * args.expand) if args.expand != 1 else in_ch
            # SE width comes from the block's input filters (official rule).
            se = max(1, int(in_ch * args.se_ratio)) if args.se_ratio > 0 else 0
            blocks.append(
                BlockSpec(
                    name=block_name(stage_idx, j),
                    stage=stage_idx,
                    index=len(blocks),
                    kernel=args.kernel,
                    stride=stride,
                    expand=args.expand,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    expanded_channels=expanded,
                    se_channels=se,
                    drop_path=drop_path * len(blocks) / total,
                    in_resolution=size,
                    out_resolution=out_size,
                )
            )
            in_ch, size = out_ch, out_size
    return tuple(blocks)


def build(model: Mapping[str, Any]) -> NetworkSpec:
    """Builds the network description from a model config (a ConfigDict or mapping).

    Recognised fields (all optional): preset, width, depth, resolution, dropout,
    phi, alpha, beta, gamma, resolution_multiple, blocks, stem_channels,
    head_channels, drop_path, num_classes, include_top, pooling, head_hidden,
    in_channels, bn_momentum, bn_epsilon, divisor.
    """
    width, depth, resolution, dropout, phi = resolve_scale(model)
    divisor = int(model.get("divisor", 8))
    block_strings: Sequence[str] = tuple(model.get("blocks") or B0_BLOCKS)
    stages = [decode_block(s) for s in block_strings]
    stem_base = int(model.get("stem_channels") or B0_STEM)
    head_base = int(model.get("head_channels") or B0_HEAD)
    drop_path = float(model.get("drop_path", 0.2))
    if not 0 <= drop_path < 1:
        raise ValueError(f"model.drop_path must be in [0, 1), got {drop_path}.")
    pooling, include_top, num_classes, head_hidden = _head_fields(model)
    stem_channels = scaling.round_filters(stem_base, width, divisor)
    stem_resolution = same_output_size(resolution, 2)
    return NetworkSpec(
        resolution=resolution,
        in_channels=int(model.get("in_channels", 3)),
        stem_channels=stem_channels,
        stem_resolution=stem_resolution,
        head_channels=scaling.round_filters(head_base, width, divisor),
        blocks=_scaled_blocks(stages, width, depth, divisor, drop_path, stem_channels, stem_resolution),
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        dropout=dropout,
        width=width,
        depth=depth,
        phi=phi,
        bn_momentum=float(model.get("bn_momentum", 0.99)),
        bn_epsilon=float(model.get("bn_epsilon", 1e-3)),
        head_hidden=head_hidden,
    )
