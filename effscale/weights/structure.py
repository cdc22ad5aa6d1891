"""A source's coarse structure against the model's, so that a file of another preset gets one clear sentence."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from effscale import scaling
from effscale import spec as spec_lib
from effscale.spec import NetworkSpec
from effscale.weights.imported import WeightImportError
from effscale.weights.names import Format, first


@dataclasses.dataclass(frozen=True)
class Shape:
    """The few numbers that tell EfficientNet variants apart."""

    stem: int | None
    head: int | None
    blocks: int
    classes: int | None = None

    def describe(self) -> str:
        text = f"stem {self.stem} channels, head {self.head} channels, {self.blocks} blocks"
        return text + (f", {self.classes} classes" if self.classes else "")

    @classmethod
    def of(cls, spec: NetworkSpec, with_classes: bool = False) -> Shape:
        classes = spec.num_classes if with_classes and spec.include_top else None
        return cls(spec.stem_channels, spec.head_channels, len(spec.blocks), classes)


def _preset_shapes() -> dict[str, Shape]:
    return {name: Shape.of(spec_lib.build({"preset": name})) for name in scaling.PRESETS}


def guess_preset(shape: Shape) -> str:
    """' (that is EfficientNet-Bn)' when the numbers are a preset's, else ''."""
    key = (shape.stem, shape.head, shape.blocks)
    matches = [n for n, s in _preset_shapes().items() if (s.stem, s.head, s.blocks) == key]
    return f" (that is EfficientNet-{matches[0].upper()})" if matches else ""


def check(spec: NetworkSpec, source: Mapping[str, np.ndarray], fmt: Format, origin: str, classes: int | None) -> None:
    """Stem and head widths, block count and input channels of `source` equal the model's, else one sentence."""
    stem_path, head_path = ("params", "stem_conv", "kernel"), ("params", "top_conv", "kernel")
    stem_key, head_key = fmt.key(stem_path), fmt.key(head_path)
    if stem_key not in source or head_key not in source:
        raise WeightImportError(
            f"{origin} has no {stem_key!r} / {head_key!r}: not an EfficientNet in the {fmt.name} layout "
            f"(first keys: {first(sorted(source)[:6])})."
        )
    stem = fmt.to_ours(stem_path, np.asarray(source[stem_key])).shape
    head = fmt.to_ours(head_path, np.asarray(source[head_key])).shape
    file_blocks = len({m.group(1) for k in source if (m := re.match(fmt.block_pattern, k))})
    theirs, ours = Shape(stem[-1], head[-1], file_blocks, classes), Shape.of(spec, with_classes=True)
    if (theirs.stem, theirs.head, theirs.blocks) != (ours.stem, ours.head, ours.blocks) or stem[2] != spec.in_channels:
        raise WeightImportError(
            f"{origin} holds a different network: {theirs.describe()}{guess_preset(theirs)}, {stem[2]} input "
            f"channels; the model expects {ours.describe()}{guess_preset(ours)}, {spec.in_channels} input channels. "
            "Choose the matching model.preset (or width/depth)."
        )
