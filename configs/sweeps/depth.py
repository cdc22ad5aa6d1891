"""Figure 3 (middle): scale EfficientNet-B0 in depth only (every stage's repeats x d, rounded up).

    python launch.py --config configs/sweeps/depth.py --workdir sweeps/depth
    python launch.py --config configs/sweeps/depth.py --workdir sweeps/depth --mode=status
    python launch.py --config configs/sweeps/depth.py:dataset=imagenet2012 --workdir sweeps/depth_in1k

Expected: top-1 rises with depth and saturates early (paper: d 1 -> 8 on ImageNet, gains
vanish past d ~4). Small default (Fashion-MNIST, 32 px, 2 epochs): d 0.5 .. 3 (5 points, ~8.5x
B0-at-32px multiply-adds in all). `doublings=4` instead: depths solved to 1, 2, 4, 8 and 16x
B0's multiply-adds (d 1 .. 15.1 at 32 px). Argument: dataset=NAME, scale=auto|paper|small,
depths=D1/D2/... (multipliers separated by '/') or doublings=N, seeds=N|S1/S2/..., epochs=E,
only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base

PAPER = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
SMALL = (0.5, 1.0, 1.5, 2.0, 3.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,depths=D1/D2/... or doublings=N,seeds=N|S1/S2/..."""
    a = base.parse(arg, depths=None, doublings=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    points = base.line(c, "depth", a, "depths", PAPER if paper else SMALL)
    return base.finish(c, "depth", points, a)
