"""Pure compound scaling: depth alpha^phi, width beta^phi, resolution gamma^phi around a base.

    python launch.py --config configs/compound.py:phi=4 --mode=info
    python launch.py --config configs/compound.py:phi=1,alpha=1.4,beta=1.1,gamma=1.1 --mode=info

The paper's coefficients (alpha 1.2, beta 1.1, gamma 1.15) give about 2^phi times B0's
multiply-adds (phi=4: d=2.07, w=1.46, 392 px, ~6.0B multiply-adds). Distinct from the
hand-tuned B1-B7. `base` names the preset scaled from (default b0).
"""

from __future__ import annotations

import ml_collections

from configs import common, default
from effscale import scaling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: phi=N[,alpha=A,beta=B,gamma=G,base=b0,dataset=NAME]."""
    a = common.parse_arg(
        arg,
        lone_key="phi",
        phi=1.0,
        alpha=scaling.ALPHA,
        beta=scaling.BETA,
        gamma=scaling.GAMMA,
        base="b0",
        dataset="imagenet2012",
    )
    scaling.preset(a["base"])
    c = default.get_config()
    c.model.preset = a["base"].lower()
    c.model.phi = float(a["phi"])
    c.model.alpha, c.model.beta, c.model.gamma = float(a["alpha"]), float(a["beta"]), float(a["gamma"])
    c.data.name = a["dataset"]
    return c
