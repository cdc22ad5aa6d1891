"""Compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi for phi = 0, 1, 2, ...

    python launch.py --config configs/sweeps/compound.py --workdir sweeps/compound
    python launch.py --config configs/sweeps/compound.py:alpha=1.4,beta=1.1,gamma=1.1 --workdir sweeps/compound_a14
    python launch.py --config configs/sweeps/compound.py:dataset=imagenet2012 --workdir sweeps/compound_in1k

Expected: the compound line lies above every single-dimension line at equal multiply-adds
(paper Figure 5 / Table 3), each step of phi costing about alpha*beta^2*gamma^2 ~= 2x. Small
default (Fashion-MNIST, 32 px, 2 epochs): phi 0 .. 3, 4 points, ~21x B0-at-32px multiply-adds
in all; resolution rounds to 2 px here, and at 32 px the first resolution step (32 -> 36 px)
alone costs 2.4x (see configs/sweeps/resolution.py), so phi = 1 is ~4.4x B0, not 2x.
The alpha / beta / gamma search's winner (configs/sweeps/abg_grid.py; `--mode=report` names it) is
run with `coefficients=A/B/G` into a workdir of its own; its points keep the names compound-phiN, and
`network` (compound-aA-bB-gG-phiN) and `series` tell the lines apart when one folder holds both:

    python launch.py --config configs/sweeps/compound.py:coefficients=1.4/1.1/1.1,seeds=3 --workdir sweeps/cmp/grid
    python launch.py --config configs/sweeps/compound.py:seeds=3 --workdir sweeps/cmp/paper
    python launch.py --config configs/sweeps/compound.py --workdir sweeps/cmp --mode=report

Argument: dataset=NAME, scale=auto|paper|small, phis=P1/P2/..., coefficients=A/B/G or alpha=, beta=,
gamma= (default the paper's 1.2/1.1/1.15), seeds=N|S1/S2/..., epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base
from effscale import scaling, sweep

PAPER = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
SMALL = (0.0, 1.0, 2.0, 3.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,phis=P1/P2/...,coefficients=A/B/G or alpha=A,beta=B,gamma=G,seeds=."""
    a = base.parse(arg, phis=None, coefficients=None, alpha=None, beta=None, gamma=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    abg = resolve_coefficients(a)
    scaling.compound(0.0, *abg)  # rejects coefficients below 1 now, not at run time
    label = base.coefficients_label(*abg)
    own = abg != (scaling.ALPHA, scaling.BETA, scaling.GAMMA)
    points = []
    for phi in base.values(a["phis"], PAPER if paper else SMALL):
        name = f"compound-phi{base.fmt(phi)}"
        # Other coefficients: their own line, and a network name of their own (a workdir per line keeps the names).
        meta = {"network": f"compound-a{base.fmt(abg[0])}-b{base.fmt(abg[1])}-g{base.fmt(abg[2])}-phi{base.fmt(phi)}"}
        overrides = {"model.phi": float(phi), "model.alpha": abg[0], "model.beta": abg[1], "model.gamma": abg[2]}
        series = f"compound {label}" if own else "compound"
        points.append(sweep.point(name, "compound", overrides, series, coefficients=label, **(meta if own else {})))
    return base.finish(c, "compound", points, a)


def resolve_coefficients(a: dict) -> tuple[float, float, float]:
    """(alpha, beta, gamma) from coefficients=A/B/G or alpha=, beta=, gamma= (the paper's where not given)."""
    single = {k: a[k] for k in ("alpha", "beta", "gamma") if a[k] is not None}
    if a["coefficients"] is not None:
        if single:
            given = ", ".join(f"{k}={v}" for k, v in single.items())
            raise ValueError(f"coefficients={a['coefficients']} and {given}: allowed: one of the two forms, not both.")
        return base.coefficients(a["coefficients"])
    paper = {"alpha": scaling.ALPHA, "beta": scaling.BETA, "gamma": scaling.GAMMA}
    return tuple(float(single.get(k, v)) for k, v in paper.items())  # type: ignore[return-value]
