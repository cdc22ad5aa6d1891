"""Figure 3 (right): scale EfficientNet-B0 in input resolution only.

    python launch.py --config configs/sweeps/resolution.py --workdir sweeps/resolution
    python launch.py --config configs/sweeps/resolution.py --workdir sweeps/resolution --mode=status
    python launch.py --config configs/sweeps/resolution.py:dataset=imagenet2012 --workdir sweeps/res_in1k

Expected: top-1 rises with resolution and saturates (paper: r 224 -> 560 on ImageNet).
Small default (Fashion-MNIST, base 32 px for 28-px images, 2 epochs): r 24 .. 64 px (5 points,
~11x B0-at-32px multiply-adds in all). At these sizes multiply-adds move in steps: with five
stride-2 stages the last feature map is ceil(r / 32) pixels wide, so 32 -> 34 px costs 2.4x
(1x1 -> 2x2) while 34 -> 64 px adds only ~1.6x more; the figures plot the true MACs.
`doublings=4` instead: resolutions solved to 1, 2, 4, 8 and 16x B0's multiply-adds (32 px: 32,
33, 64, 88, 129 px: 2x is out of reach, 33 px already costs 2.4x, and the last step is 19x).
Argument: dataset=NAME, scale=auto|paper|small, resolutions=R1/R2/... (pixels, or multipliers of
the base resolution when below 8; '/' separates) or doublings=N, seeds=N|S1/S2/..., epochs=E,
only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base

PAPER = (224, 256, 300, 336, 380, 456, 528, 560)
SMALL = (24, 32, 40, 48, 64)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,resolutions=R1/R2/... or doublings=N,seeds=N|S1/S2/..."""
    a = base.parse(arg, resolutions=None, doublings=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    points = base.line(c, "resolution", a, "resolutions", PAPER if paper else SMALL)
    return base.finish(c, "resolution", points, a)
