"""Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi for phi = 0, 1, 2, ...

    python launch.py --config configs/sweeps/compound.py --workdir sweeps/compound
    python launch.py --config configs/sweeps/compound.py:alpha=1.4,beta=1.1,gamma=1.1 --workdir sweeps/compound_a14
    python launch.py --config configs/sweeps/compound.py:dataset=imagenet2012 --workdir sweeps/compound_in1k

Expected: the compound line lies above every single-dimension line at equal multiply-adds
(paper Figure 5 / Table 3), each step of phi costing about alpha*beta^2*gamma^2 ~= 2x. Small
default (Fashion-MNIST, 32 px, 2 epochs): phi 0 .. 3, 4 points, ~21x B0-at-32px multiply-adds
in all; resolution rounds to 2 px here, and at 32 px the first resolution step (32 -> 36 px)
alone costs 2.4x (see configs/sweeps/resolution.py), so phi = 1 is ~4.4x B0, not 2x.
Argument: dataset=NAME, scale=auto|paper|small, phis=P1/P2/..., alpha=, beta=, gamma=.
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base
from effscale import scaling, sweep

PAPER = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
SMALL = (0.0, 1.0, 2.0, 3.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,phis=P1/P2/...,alpha=A,beta=B,gamma=G."""
    a = base.parse(arg, phis=None, alpha=scaling.ALPHA, beta=scaling.BETA, gamma=scaling.GAMMA)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    abg = {"model.alpha": float(a["alpha"]), "model.beta": float(a["beta"]), "model.gamma": float(a["gamma"])}
    scaling.compound(0.0, *abg.values())  # rejects coefficients below 1 now, not at run time
    points = [
        sweep.point(f"compound-phi{base.fmt(phi)}", "compound", {"model.phi": float(phi), **abg})
        for phi in base.values(a["phis"], PAPER if paper else SMALL)
    ]
    c.sweep = sweep.block("compound", points)
    return c
