"""Figure 4: width scaling repeated at four (depth, resolution) settings of EfficientNet-B0.

    python launch.py --config configs/sweeps/width_at_depth_resolution.py --workdir sweeps/fig4
    python launch.py --config configs/sweeps/width_at_depth_resolution.py --workdir sweeps/fig4 --mode=plot

(d, r) = (1, 1), (2, 1), (1, 1.3), (2, 1.3), r relative to the base resolution. Expected: at
equal multiply-adds the line with deeper AND higher-resolution networks is highest (paper:
d=2, r=1.3 reaches higher accuracy than width alone at the same FLOPs). Each (d, r) is one
series in the table and one line in the figure. Small default (Fashion-MNIST, 32 px, 2 epochs):
w 0.5 / 1 / 1.5 at each setting, 12 points, ~39x B0-at-32px multiply-adds in all (r=1.3 -> 42 px).
Argument: dataset=NAME, scale=auto|paper|small, widths=W1/W2/..., seeds=N|S1/S2/...,
epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base
from effscale import sweep

SETTINGS = ((1.0, 1.0), (2.0, 1.0), (1.0, 1.3), (2.0, 1.3))  # (depth, resolution multiplier)
PAPER = (1.0, 1.4, 1.8, 2.2, 2.6)
SMALL = (0.5, 1.0, 1.5)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,widths=W1/W2/...,seeds=N|S1/S2/..."""
    a = base.parse(arg, widths=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    points = []
    for d, r in SETTINGS:
        px = int(round(base.base_resolution(c) * r))
        series = f"d={base.fmt(d)}, r={base.fmt(r)}"
        for w in base.values(a["widths"], PAPER if paper else SMALL):
            points.append(
                sweep.point(
                    f"d{base.fmt(d)}-r{base.fmt(r)}-w{base.fmt(w)}",
                    "width",
                    {"model.width": float(w), "model.depth": float(d), "model.resolution": px},
                    series=series,
                )
            )
    return base.finish(c, "width_at_depth_resolution", points, a)
