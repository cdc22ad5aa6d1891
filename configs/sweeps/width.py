"""Figure 3 (left): scale EfficientNet-B0 in width only.

    python launch.py --config configs/sweeps/width.py --workdir sweeps/width
    python launch.py --config configs/sweeps/width.py --workdir sweeps/width --sweep_shard=0/4
    python launch.py --config configs/sweeps/width.py --workdir sweeps/width --mode=status
    python launch.py --config configs/sweeps/width.py --workdir sweeps/width --mode=collect
    python launch.py --config configs/sweeps/width.py --workdir sweeps/width --mode=plot
    python launch.py --config configs/sweeps/width.py:dataset=imagenet2012 --workdir sweeps/width_in1k

Expected: top-1 rises with width and saturates (paper: w 1.0 -> 5.0 on ImageNet, ~77% to ~80%,
most of the gain by w ~2). Small default (Fashion-MNIST, 32 px, 2 epochs): w 0.5 .. 2 (5 points,
~8x B0-at-32px multiply-adds in all). `doublings=4` instead: widths solved to 1, 2, 4, 8 and 16x
B0's multiply-adds (w 1 .. 4.18 at 32 px), the line the saturation claim needs.
Argument: dataset=NAME, scale=auto|paper|small, widths=W1/W2/... (multipliers separated by '/')
or doublings=N, seeds=N|S1/S2/..., epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import ml_collections

from configs.sweeps import base

PAPER = (1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 3.8, 5.0)
SMALL = (0.5, 0.75, 1.0, 1.5, 2.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,widths=W1/W2/... or doublings=N,seeds=N|S1/S2/..."""
    a = base.parse(arg, widths=None, doublings=None)
    paper = base.is_paper(a)
    c = base.get_config(a["dataset"], paper)
    points = base.line(c, "width", a, "widths", PAPER if paper else SMALL)
    return base.finish(c, "width", points, a)
