"""The paper's findings on this machine: one sweep with width, depth, resolution, compound and equal-FLOPs points.

    python launch.py --config configs/sweeps/reproduce.py --workdir sweeps/reproduce
    python launch.py --config configs/sweeps/reproduce.py --workdir sweeps/reproduce --mode=status
    python experiments/reproduce.py        # the above, then the table and figures in experiments/results/

What it runs (small default, Fashion-MNIST on a small CPU; timings in README): the base network of every
sweep (B0 at 32 px, configs/sweeps/base.py) once, as the shared origin of every line (strategy
'base'), then each dimension scaled alone and all three together, every point trained for the
same `epochs` (default 1: the paper trains every variant with one recipe):

- width 1.5 and the equal-budget width (~2.06), depth 2 and the equal-budget depth (~3.6),
  resolution 48 and 64 px: Figure 3, each line from the base point;
- compound phi = 0.5 (solved for the budget) and phi = 2 (the alpha, beta, gamma of the paper);
- the equal-FLOPs comparison (Table 7): for a budget of `budget` x the base's multiply-adds
  (default 4), the depth-, width-, resolution- and compound-scaled networks solved to meet it
  with the analytic complexity (effscale.complexity), tagged with `target_macs`.

Why this scale: the whole reproduction is meant to run on a small CPU in an afternoon. Resolution
steps are multiples of 16 px because at 32 px the deep stages' maps are ceil(r / 32) pixels wide:
36 px already costs what 48 px does. Compound points below phi = 1 mostly add depth: ceil() turns
each of B0's one-block stages into two at any depth above 1 (see README, "What the sweeps show").

Argument: dataset=NAME, scale=small|paper, epochs=E, budget=B (multiple of the base MACs),
widths=, depths=, resolutions= (pixels), phis= ('/' separates; the equal-budget points are added),
seeds=N|S1/S2/..., only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs.sweeps import base, equal_flops
from effscale import sweep

WIDTHS = (1.5,)
DEPTHS = (2.0,)
RESOLUTIONS = (48,)
PHIS = (2.0,)
BUDGET = 4.0
EPOCHS = 1.0


def _name(strategy: str, found: dict[str, Any]) -> str:
    value = found["phi" if strategy == "compound" else strategy]
    return f"{strategy}-{int(value)}px" if strategy == "resolution" else f"{strategy}-{base.fmt(round(value, 3))}"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=small|paper,epochs=E,budget=B,widths=..,depths=..,resolutions=..,phis=..,seeds=."""
    a = base.parse(arg, epochs=EPOCHS, budget=BUDGET, widths=None, depths=None, resolutions=None, phis=None)
    c = base.get_config(a["dataset"], base.is_paper(a))
    m = c.model
    w0, d0, r0 = 1.0, 1.0, base.base_resolution(c)
    origin = {"width": w0, "depth": d0, "resolution": r0, "phi": None}
    scaled: dict[str, list[dict[str, Any]]] = {
        "width": [{**origin, "width": w0 * w} for w in base.values(a["widths"], WIDTHS)],
        "depth": [{**origin, "depth": d0 * d} for d in base.values(a["depths"], DEPTHS)],
        "resolution": [{**origin, "resolution": int(r)} for r in base.values(a["resolutions"], RESOLUTIONS)],
        "compound": [{**origin, "phi": float(p)} for p in base.values(a["phis"], PHIS)],
    }
    target = float(a["budget"]) * sweep.macs_of(m, {})
    equal = {s: equal_flops.solve(m, s, target)[0] for s in equal_flops.STRATEGIES}

    points = [sweep.point("base", "base", _overrides(origin))]
    for strategy, founds in scaled.items():
        budget_point = equal[strategy]
        founds = [f for f in founds if f != budget_point] + [budget_point]
        for found in sorted(founds, key=lambda f: sweep.macs_of(m, f)):
            meta = {"target_macs": int(round(target)), "budget": f"{a['budget']:g}x"} if found == budget_point else {}
            points.append(sweep.point(_name(strategy, found), strategy, _overrides(found), **meta))
    return base.finish(c, "reproduce", points, a)


def _overrides(found: dict[str, Any]) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in found.items() if v is not None}
