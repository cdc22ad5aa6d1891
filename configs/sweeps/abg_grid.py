"""The alpha / beta / gamma search at phi = 1 under alpha * beta^2 * gamma^2 ~= 2 (paper section 3.3).

    python launch.py --config configs/sweeps/abg_grid.py --workdir sweeps/abg
    python launch.py --config configs/sweeps/abg_grid.py --workdir sweeps/abg --sweep_shard=1/4
    python launch.py --config configs/sweeps/abg_grid.py:dataset=imagenet2012 --workdir sweeps/abg_in1k
    python launch.py --config configs/sweeps/abg_grid.py:target=auto,seeds=3 --workdir sweeps/abg_equal

One point per candidate of effscale.scaling.abg_grid (step, target 2, tolerance), each B0
compound-scaled with phi = 1, plus the paper's (1.2, 1.1, 1.15) when the grid misses it.
Expected: the best top-1 near the paper's alpha = 1.2, beta = 1.1, gamma = 1.15 (on ImageNet);
the results table's macs column shows what each candidate really costs. Paper default: step
0.05, tolerance 0.05 (54 points). Small default (Fashion-MNIST, 32 px, 2 epochs): step 0.1,
tolerance 0.05, 11 points, ~35x B0-at-32px multiply-adds in all; at 32 px any gamma > 1 crosses
the 32-px step (2.4x, see configs/sweeps/resolution.py), so candidates cost 1.9-5x (16.4M to 42M),
not 2x: a ranking at phi = 1 there compares budgets as much as directions.

Equal multiply-adds (`target=auto`, or `target=T`: T x B0's MACs below 1000, else MACs): every
candidate is scaled along its own direction to the same cost instead of taking phi = 1, so the
ranking compares directions, not budgets. Per candidate (`solve`): phi is bisected to the largest
value whose rounded network stays at or below the target, then width alone is bisected to close the
rest (its rounding steps are the finest). The table shows `solved_macs`, `phi_solved` and
`width_trim` (width over beta^phi: how far the last step moved off the direction). Defaults: 4x B0
at 32 px (every direction gets within 6% of it on phi alone; with the trim, 1.00-1.04, all 11
candidates land within -0.2% to +0.9%), 2x B0 at the paper's scale (54 candidates, -1.7% to +1.4%,
trims up to 1.05). Other targets may need larger trims (at 32 px, 2x: up to 1.45, misses up to
2.2%). Points are named abg-aA-bB-gG-at<MACs>, so both modes can share a workdir.

Argument: dataset=NAME, scale=auto|paper|small, step=, tolerance=, max_value=, target=auto|T,
seeds=N|S1/S2/..., epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs.sweeps import base
from effscale import scaling, sweep
from effscale.units import si

SMALL_TARGET = 4.0  # x B0's MACs: every small-scale direction gets there within 6% before the width trim
PAPER_TARGET = 2.0  # x B0's MACs: what alpha * beta^2 * gamma^2 = 2 asks of phi = 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,step=S,tolerance=T,max_value=M,target=auto|T,seeds=."""
    a = base.parse(arg, step=None, tolerance=0.05, max_value=2.0, target=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    step = float(a["step"] or (0.05 if paper else 0.1))
    grid = scaling.abg_grid(step=step, target=2.0, tolerance=float(a["tolerance"]), max_value=float(a["max_value"]))
    paper_abg = (scaling.ALPHA, scaling.BETA, scaling.GAMMA)
    if paper_abg not in grid:
        grid.append(paper_abg)
    if a["target"] is None:
        points = [_at_phi1(abg) for abg in grid]
    else:
        target = _target(a["target"], PAPER_TARGET if paper else SMALL_TARGET, sweep.macs_of(c.model, {}))
        points = [_at_target(c.model, abg, target) for abg in grid]
    return base.finish(c, "abg_grid", points, a)


def _name(abg: tuple[float, float, float]) -> str:
    al, be, ga = abg
    return f"abg-a{base.fmt(al)}-b{base.fmt(be)}-g{base.fmt(ga)}"


def _at_phi1(abg: tuple[float, float, float]) -> dict[str, Any]:
    al, be, ga = abg
    overrides = {"model.phi": 1.0, "model.alpha": al, "model.beta": be, "model.gamma": ga}
    factor = round(scaling.flops_factor(al, be, ga), 4)
    return sweep.point(_name(abg), "abg", overrides, flops_factor=factor, coefficients=base.coefficients_label(*abg))


def _target(value: Any, default: float, base_macs: int) -> float:
    """target=auto -> `default` x the base MACs; T < 1000 -> T x the base MACs; larger T -> T MACs."""
    if value == "auto":
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 1:
        raise ValueError(f"target={value}: allowed: auto, a multiple > 1 of the base MACs, or MACs (>= 1000).")
    return float(value) * base_macs if value < 1000 else float(value)


def _at_target(model: ml_collections.ConfigDict, abg: tuple[float, float, float], target: float) -> dict[str, Any]:
    """The candidate direction scaled to `target` MACs: explicit width, depth and resolution (phi unset)."""
    found, macs, phi, trim = solve(model, abg, target)
    overrides = {f"model.{k}": v for k, v in found.items()}
    return sweep.point(
        f"{_name(abg)}-at{si(target)}",
        "abg",
        overrides,
        coefficients=base.coefficients_label(*abg),
        target_macs=int(round(target)),
        solved_macs=macs,
        phi_solved=round(phi, 4),
        width_trim=round(trim, 4),
    )


def solve(
    model: ml_collections.ConfigDict, abg: tuple[float, float, float], target: float, iters: int = 24
) -> tuple[dict[str, Any], int, float, float]:
    """Scales `model` along (alpha, beta, gamma) to `target` MACs; returns (width/depth/resolution, MACs, phi, trim).

    Rounding (repeats up, pixels to the resolution multiple, channels to 8) makes MACs a step function
    of phi, with steps of up to 40% at 32 px, so phi alone misses most targets. First phi: the largest
    whose rounded network stays at or below the target (bisection; MACs never fall as phi grows).
    Then width alone closes the gap (bisection on width with depth and resolution fixed), as width has
    the finest steps. `trim` = width / (w0 * beta^phi) says how far that moved off the direction.
    """
    al, be, ga = abg
    w0, d0 = float(model.width or 1.0), float(model.depth or 1.0)
    r0 = int(model.resolution or scaling.preset(model.preset or "b0").resolution)

    def scaled(phi: float) -> dict[str, Any]:
        r = scaling.round_resolution(r0 * ga**phi, int(model.resolution_multiple))
        return {"width": w0 * be**phi, "depth": d0 * al**phi, "resolution": r, "phi": None}

    lo, hi = 0.0, 1.0
    while sweep.macs_of(model, scaled(hi)) <= target:
        lo, hi = hi, hi * 2
        if hi > 64:
            raise ValueError(
                f"coefficients {base.coefficients_label(*abg)}: no phi up to 64 reaches {si(target)} MACs."
            )
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sweep.macs_of(model, scaled(mid)) <= target else (lo, mid)
    fixed = scaled(lo)
    w_dir = fixed["width"]
    w, macs = sweep.bisect_multiplier(
        lambda v: sweep.macs_of(model, {**fixed, "width": v}), target, w_dir, 2 * w_dir, iters=iters
    )
    found = {k: v for k, v in {**fixed, "width": w}.items() if v is not None}
    return found, macs, lo, w / w_dir
