"""Scaling rules of the EfficientNet family, as small pure functions.

Everything here maps numbers to numbers: how a base network's filters, repeats
and input resolution grow under a width / depth / resolution multiplier, the
official B0-B7 presets, pure compound scaling (phi, alpha, beta, gamma), and the
candidate grid of the paper's alpha/beta/gamma search.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

# The paper's grid-search result at phi = 1 (Tan & Le 2019, section 3.3):
# depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi.
ALPHA = 1.2
BETA = 1.1
GAMMA = 1.15

# Every official preset resolution (224, 240, ..., 600) is a multiple of 4, so
# compound-scaled resolutions are rounded to the nearest multiple of 4 too.
RESOLUTION_MULTIPLE = 4


@dataclasses.dataclass(frozen=True)
class Scale:
    """A point in scaling space: multipliers of a base network plus its resolution."""

    width: float
    depth: float
    resolution: int
    dropout: float = 0.2


# Official presets (width, depth, resolution, dropout). B1-B7 were hand-adjusted
# by the authors; they are not exactly alpha^phi, beta^phi, gamma^phi.
PRESETS: dict[str, Scale] = {
    "b0": Scale(1.0, 1.0, 224, 0.2),
    "b1": Scale(1.0, 1.1, 240, 0.2),
    "b2": Scale(1.1, 1.2, 260, 0.3),
    "b3": Scale(1.2, 1.4, 300, 0.3),
    "b4": Scale(1.4, 1.8, 380, 0.4),
    "b5": Scale(1.6, 2.2, 456, 0.4),
    "b6": Scale(1.8, 2.6, 528, 0.5),
    "b7": Scale(2.0, 3.1, 600, 0.5),
}


def preset(name: str) -> Scale:
    """Returns the official scale of preset `name` ('b0' ... 'b7', any case)."""
    key = name.strip().lower()
    if key.startswith("efficientnet-"):
        key = key[len("efficientnet-") :]
    if key not in PRESETS:
        raise ValueError(f"Unknown EfficientNet preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[key]


def round_filters(filters: int, width: float, divisor: int = 8, min_depth: int | None = None) -> int:
    """Scales a channel count by `width` and rounds it to a multiple of `divisor`.

    The official rule: never below `min_depth` (default `divisor`) and never more
    than 10% below the exact product.
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    min_depth = min_depth or divisor
    scaled = filters * width
    new = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales a stage's block count by `depth`, rounding up (official rule)."""
    if depth <= 0:
        raise ValueError(f"depth must be > 0, got {depth}.")
    return int(math.ceil(depth * repeats))


def round_resolution(resolution: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Rounds a scaled input resolution to the nearest multiple of `multiple` (at least one multiple)."""
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0, got {resolution}.")
    return max(multiple, int(round(resolution / multiple)) * multiple)


def compound(
    phi: float,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    base: Scale = PRESETS["b0"],
    resolution_multiple: int = RESOLUTION_MULTIPLE,
) -> Scale:
    """Pure compound scaling of `base` by coefficient `phi`.

    depth *= alpha^phi, width *= beta^phi, resolution *= gamma^phi (rounded by
    `round_resolution`). FLOPs grow by about (alpha * beta^2 * gamma^2)^phi.
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (the paper's constraint), got {value}.")
    if phi < 0:
        raise ValueError(f"phi must be >= 0, got {phi}.")
    return dataclasses.replace(
        base,
        width=base.width * beta**phi,
        depth=base.depth * alpha**phi,
        resolution=round_resolution(base.resolution * gamma**phi, resolution_multiple),
    )


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """The FLOPs multiplier of one compound step: alpha * beta^2 * gamma^2."""
    return alpha * beta**2 * gamma**2


def abg_grid(
    step: float = 0.05,
    target: float = 2.0,
    tolerance: float = 0.1,
    max_value: float = 2.0,
) -> list[tuple[float, float, float]]:
    """Candidate (alpha, beta, gamma) for the paper's search at phi = 1.

    Every triple on a grid of `step` from 1.0 to `max_value` with
    |alpha * beta^2 * gamma^2 - target| <= tolerance, sorted by alpha, beta, gamma.
    """
    if step <= 0 or tolerance < 0 or max_value < 1:
        raise ValueError("abg_grid needs step > 0, tolerance >= 0 and max_value >= 1.")
    n = int(round((max_value - 1.0) / step))
    values = [round(1.0 + i * step, 6) for i in range(n + 1)]
    return [
        (a, b, g)
        for a, b, g in itertools.product(values, values, values)
        if abs(flops_factor(a, b, g) - target) <= tolerance
    ]
