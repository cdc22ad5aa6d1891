"""The alpha / beta / gamma search at phi = 1 under alpha * beta^2 * gamma^2 ~= 2 (paper section 3.3).

    python launch.py --config configs/sweeps/abg_grid.py --workdir sweeps/abg
    python launch.py --config configs/sweeps/abg_grid.py --workdir sweeps/abg --sweep_shard=1/4
    python launch.py --config configs/sweeps/abg_grid.py:dataset=imagenet2012 --workdir sweeps/abg_in1k

One point per candidate of effscale.scaling.abg_grid (step, target 2, tolerance), each B0
compound-scaled with phi = 1, plus the paper's (1.2, 1.1, 1.15) when the grid misses it.
Expected: the best top-1 near the paper's alpha = 1.2, beta = 1.1, gamma = 1.15 (on ImageNet);
the results table's macs column shows what each candidate really costs. Paper default: step
0.05, tolerance 0.05 (54 points). Small default (Fashion-MNIST, 32 px, 2 epochs): step 0.1,
tolerance 0.05, 11 points, ~35x B0-at-32px multiply-adds in all; at 32 px any gamma > 1 crosses
the 32-px step (2.4x, see configs/sweeps/resolution.py), so candidates cost 2-4.5x, not 2x.
Argument: dataset=NAME, scale=auto|paper|small, step=, tolerance=, max_value=.
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base
from effscale import scaling, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,step=S,tolerance=T,max_value=M."""
    a = base.parse(arg, step=None, tolerance=0.05, max_value=2.0)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    step = float(a["step"] or (0.05 if paper else 0.1))
    grid = scaling.abg_grid(step=step, target=2.0, tolerance=float(a["tolerance"]), max_value=float(a["max_value"]))
    paper_abg = (scaling.ALPHA, scaling.BETA, scaling.GAMMA)
    if paper_abg not in grid:
        grid.append(paper_abg)
    points = [
        sweep.point(
            f"abg-a{base.fmt(al)}-b{base.fmt(be)}-g{base.fmt(ga)}",
            "abg",
            {"model.phi": 1.0, "model.alpha": al, "model.beta": be, "model.gamma": ga},
            flops_factor=round(scaling.flops_factor(al, be, ga), 4),
        )
        for al, be, ga in grid
    ]
    c.sweep = sweep.block("abg_grid", points)
    return c
