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

from collections.abc import Mapping, Sequence
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
    """Parses a sweep argument: dataset=, scale=auto|paper|small, seeds=N|S1/S2/..., epochs=E, and the sweep's own keys.

    The seeds and epochs are checked here, so a bad value fails before any point is built.
    `epochs` (default: the base recipe's) sets every point's training length; a sweep at other
    epochs belongs in its own workdir, since its points keep their names. `only=GLOB1/GLOB2`
    keeps the points whose name matches one of the patterns (``only=abg-a1.2*/abg-a2*``), for
    rerunning a few points of a sweep, e.g. at more epochs.
    """
    extra.setdefault("epochs", None)
    a = common.parse_arg(arg, dataset=SMALL_DATASET, scale="auto", seeds=None, only=None, **extra)
    a["seeds"] = seeds(a["seeds"])
    a["epochs"] = epochs(a["epochs"])
    return a


def epochs(value: Any) -> float | None:
    """The epochs= argument: None (the recipe's own) or a positive number of epochs."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"epochs={value}: allowed: a number of epochs > 0 such as epochs=1 or epochs=0.5.")
    return float(value)


def seeds(value: Any) -> tuple[int, ...] | None:
    """The seeds= argument: None (the config's own train.seed); N -> seeds 0..N-1; '0/3/7' -> (0, 3, 7).

    A bare number is a count; a single seed k is written 'k/' (a list of one).
    """
    if value is None:
        return None
    allowed = "allowed: a count N >= 1 (seeds 0..N-1) or a list of distinct integers >= 0 such as seeds=0/3/7"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"seeds={value}: not a count or a list of seeds; {allowed}.")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"seeds={value}: a count of seeds must be >= 1; {allowed}.")
        return tuple(range(value))
    items = [v.strip() for v in value.split("/") if v.strip()]
    try:
        out = tuple(int(v) for v in items)
    except ValueError:
        raise ValueError(f"seeds={value}: {allowed}.") from None
    if not out:
        raise ValueError(f"seeds={value}: the list is empty; {allowed}.")
    if min(out) < 0:
        raise ValueError(f"seeds={value}: seed {min(out)} is negative; {allowed}.")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds={value}: seed {repeated[0]} appears more than once; {allowed}.")
    return out


def selected(points: Sequence[Mapping[str, Any]], only: str) -> list[Mapping[str, Any]]:
    """The points whose name matches one of the '/'-separated glob patterns of `only`, in their order.

    A pattern that matches no point is an error naming the points there are (a typo would
    otherwise run nothing, or less than meant).
    """
    import fnmatch

    patterns = [g.strip() for g in only.split("/") if g.strip()]
    names = [str(p["name"]) for p in points]
    missing = [g for g in patterns if not fnmatch.filter(names, g)]
    if not patterns or missing:
        raise ValueError(
            f"only={only}: {'no pattern' if not patterns else f'{missing[0]!r} matches no point'}; "
            f"the points are {', '.join(names)}."
        )
    return [p for p, n in zip(points, names, strict=True) if any(fnmatch.fnmatchcase(n, g) for g in patterns)]


def seeded_name(name: str, seed: int) -> str:
    """The name of a point's run with `seed`: seed 0 keeps the point's name, so one-seed sweeps keep theirs."""
    return name if seed == 0 else f"{name}_s{seed}"


def with_seeds(points: Sequence[Mapping[str, Any]], seed_list: tuple[int, ...] | None) -> list[dict[str, Any]]:
    """Every point once per seed, all points of the first seed first (a finished first pass is a whole sweep).

    Each copy sets train.seed and records `seed` and `network` (the point's name without the seed)
    as table columns; the results group a network's runs by `network`. None leaves the points as they are.
    """
    if seed_list is None:
        return [dict(p) for p in points]
    out = []
    for seed in seed_list:
        for p in points:
            meta = dict(p.get("meta") or {})
            network = str(meta.get("network") or p["name"])
            out.append(
                {
                    **p,
                    "name": seeded_name(str(p["name"]), seed),
                    "overrides": {**dict(p.get("overrides") or {}), "train.seed": seed},
                    "meta": {**meta, "seed": seed, "network": network},
                }
            )
    return out


def finish(c: ml_collections.ConfigDict, name: str, points: Sequence[Mapping[str, Any]], args: Mapping[str, Any]):
    """Sets ``c.sweep`` to the points, once per seed of the parsed `args`, at its epochs; returns `c`."""
    from effscale import sweep

    if args.get("epochs") is not None:
        c.train.num_epochs = args["epochs"]
    if args.get("only") is not None:
        points = selected(points, str(args["only"]))
    c.sweep = sweep.block(name, with_seeds(points, args.get("seeds")))
    return c


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


def doubling_points(base: ml_collections.ConfigDict, dimension: str, doublings: Any) -> list[dict[str, Any]]:
    """Points scaling one dimension of `base` to 1, 2, 4, ..., 2^doublings times its multiply-adds.

    Each multiplier is solved on the analytic count (configs/sweeps/equal_flops.py's `solve`), so a
    line spaced evenly in log MACs reaches 2^doublings x the base (doublings=4: 16x). Names match
    `single_dimension`'s, so a point both lists hold is trained once. Where rounding makes a budget
    unreachable (at 32 px no resolution costs 2x: 33 px is already 2.4x) the closer side is kept,
    except at the line's end, which takes the step above if need be, so that the line does reach
    2^doublings x; `solved_macs` shows what each point costs.
    """
    from configs.sweeps import equal_flops
    from effscale import sweep

    if isinstance(doublings, bool) or not isinstance(doublings, int) or not 1 <= doublings <= 8:
        raise ValueError(
            f"doublings={doublings}: allowed: an integer from 1 to 8 (the line reaches 2^doublings x MACs)."
        )
    base_macs = sweep.macs_of(base.model, {})
    points = []
    for k in range(doublings + 1):
        # The line's end reaches 2^doublings x, the others are the closest to their budget.
        found, macs = equal_flops.solve(base.model, dimension, base_macs * 2**k, at_least=k == doublings)
        value = found[dimension]
        if dimension == "resolution":
            name, overrides = f"resolution-{int(value)}", {"model.resolution": int(value)}
        else:
            name, overrides = f"{dimension}-{fmt(value)}", {f"model.{dimension}": value}
        if points and points[-1]["name"] == name:
            continue  # two budgets on one rounding step: one point
        points.append(sweep.point(name, dimension, overrides, doubling=k, solved_macs=macs))
    return points


def line(
    base: ml_collections.ConfigDict, dimension: str, args: Mapping[str, Any], key: str, default: tuple[float, ...]
):
    """A single-dimension line from the argument: `key`=V1/V2/... or doublings=N (not both)."""
    if args.get("doublings") is not None:
        if args.get(key) is not None:
            raise ValueError(f"{key}={args[key]} and doublings={args['doublings']}: allowed: one of them, not both.")
        return doubling_points(base, dimension, args["doublings"])
    return single_dimension(base, dimension, values(args.get(key), default))


def coefficients(value: Any) -> tuple[float, float, float]:
    """The coefficients=A/B/G argument (alpha, beta, gamma of compound scaling), each >= 1."""
    allowed = "allowed: three numbers >= 1 separated by '/', alpha/beta/gamma, e.g. coefficients=1.2/1.1/1.15"
    try:
        out = tuple(float(v) for v in str(value).split("/"))
    except ValueError:
        raise ValueError(f"coefficients={value}: {allowed}.") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"coefficients={value}: {allowed}.")
    return out  # type: ignore[return-value]


def coefficients_label(alpha: float, beta: float, gamma: float) -> str:
    """alpha/beta/gamma as the `coefficients` column writes them: '1.2/1.1/1.15'."""
    return "/".join(fmt(v) for v in (alpha, beta, gamma))
