"""Table 7: EfficientNet-B0 scaled to the same multiply-adds by depth, width, resolution or compound.

    python launch.py --config configs/sweeps/equal_flops.py --workdir sweeps/equal_flops
    python launch.py --config configs/sweeps/equal_flops.py --workdir sweeps/equal_flops --mode=status
    python launch.py --config configs/sweeps/equal_flops.py:dataset=imagenet2012 --workdir sweeps/eq_in1k

For each budget, four points: depth only, width only, resolution only, and compound (phi with
alpha, beta, gamma). Each multiplier is solved by bisection on the analytic multiply-add count
(effscale.complexity) and the closer side of the rounding step is kept; the achieved MACs are
in the results table next to `target_macs`. Expected: compound is best at every budget (paper,
~1.8B: compound 81.1% against ~79% for one dimension).

Budgets: values below 1000 are multiples of the base network's MACs, larger ones absolute
multiply-adds. Paper default: 0.8B, 1.8B (Table 7), 4.0B. Small default (Fashion-MNIST, 32 px,
2 epochs): 3.8x and 8x B0-at-32px (32M and 68M MACs), 8 points, ~47x B0-at-32px in all. At 32 px
multiply-adds move in steps (see configs/sweeps/resolution.py): these two budgets are ones all
four strategies can meet within ~3%; elsewhere resolution or compound may miss by 20-40%.

Every point sets width, depth and resolution explicitly (compound: the base values plus phi), so
it is self-contained; the solution is made for the base model of this file, so change the model
through the argument (dataset, scale), not with --config.model.* on the command line.
Argument: dataset=NAME, scale=auto|paper|small, budgets=B1/B2/..., alpha=, beta=, gamma=,
seeds=N|S1/S2/..., epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections

from configs.sweeps import base
from effscale import scaling, sweep
from effscale.units import si

PAPER = (0.8e9, 1.8e9, 4.0e9)
SMALL = (3.8, 8.0)
STRATEGIES = ("depth", "width", "resolution", "compound")


def solve(
    model: ml_collections.ConfigDict, strategy: str, target: float, at_least: bool = False
) -> tuple[dict[str, Any], int]:
    """The overrides (paths under `model`) scaling `model` by `strategy` closest to `target` MACs
    (`at_least`: the cheapest at or above it)."""
    w0, d0 = float(model.width or 1.0), float(model.depth or 1.0)
    r0 = int(model.resolution or scaling.preset(model.preset or "b0").resolution)
    fixed = {"width": w0, "depth": d0, "resolution": r0, "phi": None}

    def overrides(m: float) -> dict[str, Any]:
        if strategy == "resolution":
            return {**fixed, "resolution": max(8, int(round(r0 * m)))}
        if strategy == "compound":
            return {**fixed, "phi": m}
        return {**fixed, strategy: (w0 if strategy == "width" else d0) * m}

    lo = 0.0 if strategy == "compound" else 1.0
    macs_fn = lambda v: sweep.macs_of(model, overrides(v))  # noqa: E731
    m, macs = sweep.bisect_multiplier(macs_fn, target, lo, 2.0)
    if at_least and macs < target:
        m, macs = step_above(macs_fn, m, target)
    return overrides(m), macs


def step_above(macs_fn: Callable[[float], int], m: float, target: float, iters: int = 40) -> tuple[float, int]:
    """The smallest multiplier above `m` whose MACs reach `target` (MACs never fall as it grows), with
    the fewest decimals on the same rounding step. Returns (multiplier, MACs)."""
    lo, hi = m, 2 * m
    while macs_fn(hi) < target:
        lo, hi = hi, 2 * hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if macs_fn(mid) >= target else (mid, hi)
    macs = macs_fn(hi)
    for digits in range(1, 7):
        nice = math.ceil(hi * 10**digits) / 10**digits
        if macs_fn(nice) == macs:
            return nice, macs
    return hi, macs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,budgets=B1/B2/...,alpha=A,beta=B,gamma=G,seeds=."""
    a = base.parse(arg, budgets=None, alpha=scaling.ALPHA, beta=scaling.BETA, gamma=scaling.GAMMA)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    c.model.alpha, c.model.beta, c.model.gamma = float(a["alpha"]), float(a["beta"]), float(a["gamma"])
    base_macs = sweep.macs_of(c.model, {})
    points = []
    for budget in base.values(a["budgets"], PAPER if paper else SMALL):
        target = budget * base_macs if budget < 1000 else budget
        label = si(target)
        for strategy in STRATEGIES:
            found, macs = solve(c.model, strategy, target)
            overrides = {f"model.{k}": v for k, v in found.items() if v is not None}
            points.append(
                sweep.point(
                    f"eq{label}-{strategy}",
                    strategy,
                    overrides,
                    target_macs=int(round(target)),
                    budget=label,
                    solved_macs=macs,
                )
            )
    return base.finish(c, "equal_flops", points, a)
