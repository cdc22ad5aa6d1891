"""The base training config every sweep scales, and the argument handling the sweeps share.

Not a sweep itself. Two scales:

- paper (``dataset=imagenet2012``): EfficientNet-B0 at 224 px with the official recipe
  (configs/default.py), and the paper's grid of scaled values;
- small (any other dataset; default ``fashion_mnist``): B0 at 32 px for 28-px images with the
  offline 2-epoch recipe of configs/compound_phi2.py (meant for a 2-core CPU), shared by every
  sweep so that points differ only in their scale.

    python launch.py --config configs/sweeps/width.py --mode=status --workdir sweeps/width
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import common, compound_phi2, default

PAPER_DATASET = "imagenet2012"
SMALL_DATASET = "fashion_mnist"

# Classes of common datasets: set explicitly so that the analytic MACs of status and point.json
# match the trained network before any run (the trainer would otherwise read them from TFDS).
NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet2012": 1000}


def is_paper(args: dict[str, Any]) -> bool:
    """Whether the parsed sweep argument asks for the paper's scale (scale=paper, or ImageNet)."""
    scale = str(args.get("scale") or "auto").lower()
    if scale not in ("auto", "paper", "small"):
        raise ValueError(f"scale must be auto, paper or small, got {scale!r}.")
    return scale == "paper" or (scale == "auto" and args["dataset"] == PAPER_DATASET)


def parse(arg: str | None, **extra: Any) -> dict[str, Any]:
    """Parses a sweep argument: dataset=NAME, scale=auto|paper|small, plus the sweep's own keys."""
    return common.parse_arg(arg, dataset=SMALL_DATASET, scale="auto", **extra)


def values(value: Any, default: tuple[float, ...]) -> tuple[float, ...]:
    """A list argument: None -> `default`; 2 -> (2,); '1/1.5/2' -> (1.0, 1.5, 2.0) ('/' separates)."""
    if value is None:
        return tuple(default)
    if isinstance(value, (int, float)):
        return (float(value),)
    return tuple(float(v) for v in str(value).split("/") if v.strip())


def get_config(dataset: str = SMALL_DATASET, paper: bool | None = None) -> ml_collections.ConfigDict:
    """The base training config of a sweep on `dataset` (the paper's recipe when `paper`).

    Small scale: configs/compound_phi2.py's offline recipe (2 epochs of AdamW, batch 64, EMA
    0.998, no random crop; its docstring says why) with its compound scaling removed, so that
    every point differs from the others only in what the sweep scales.
    """
    paper = dataset == PAPER_DATASET if paper is None else paper
    if paper:
        c = default.get_config()
    else:
        c = compound_phi2.get_config()
        c.model.phi = None  # the sweep's points choose the scale
        c.model.resolution = 32  # 28-px images, resized: the smallest multiple of 32 above them
        c.model.resolution_multiple = 2  # compound rounding: 4 px is too coarse a step at 32 px
        if dataset != SMALL_DATASET:  # the recipe's pixel statistics are Fashion-MNIST's
            imagenet = default.get_config().data
            c.data.mean, c.data.std = imagenet.mean, imagenet.std
    c.data.name = dataset
    c.model.num_classes = NUM_CLASSES.get(dataset)
    return c


def fmt(value: float) -> str:
    """A multiplier as it appears in point names: 1.5 -> '1.5', 2.0 -> '2', 1.15 -> '1.15'."""
    return f"{value:g}"


def base_resolution(config: ml_collections.ConfigDict) -> int:
    """The input resolution of the config's model (its preset's when not set explicitly)."""
    from effscale import spec

    return spec.resolve_scale(config.model)[2]


def single_dimension(
    base: ml_collections.ConfigDict, dimension: str, multipliers: tuple[float, ...]
) -> list[dict[str, Any]]:
    """Points scaling one of width / depth / resolution of `base` by each multiplier (Figure 3).

    Resolution multipliers below 8 are taken relative to the base resolution; larger values
    are pixels (so ``resolutions=224/300/380`` and ``resolutions=1/1.5/2`` both work).
    """
    from effscale import sweep

    points = []
    for v in multipliers:
        if dimension == "resolution":
            px = int(round(v if v >= 8 else base_resolution(base) * v))
            points.append(sweep.point(f"resolution-{px}", "resolution", {"model.resolution": px}))
        else:
            points.append(sweep.point(f"{dimension}-{fmt(v)}", dimension, {f"model.{dimension}": float(v)}))
    return points
