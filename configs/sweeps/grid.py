"""A user-defined grid: every combination of the widths, depths and resolutions given.

    python launch.py --config configs/sweeps/grid.py:widths=1/1.5,resolutions=32/48 --workdir sweeps/grid
    python launch.py --config configs/sweeps/grid.py:widths=1/2,depths=1/2 --workdir sweeps/grid --mode=status

Each point is named w<W>-d<D>-r<R>; its strategy says which dimensions vary and its series (a
line in the figures) is the setting of the others, so `--mode=plot` draws one width curve per
(depth, resolution) when both vary. Defaults: width, depth 1 and the base resolution.

Any other grid is a few lines in a file like this one: build the base config, list
`sweep.point(name, strategy, {dotted.config.path: value, ...}, series=..., **extra_columns)`
and set `c.sweep = sweep.block(name, points)`; any config field can be an override (for
example 'train.learning_rate' or 'model.drop_path').
Argument: dataset=NAME, scale=auto|paper|small, widths=, depths=, resolutions= ('/' separates),
seeds=N|S1/S2/... (every point once per seed), epochs=E, only=GLOB/... (configs/sweeps/base.py).
"""

from __future__ import annotations

import itertools

import ml_collections

from configs.sweeps import base
from effscale import sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: dataset=NAME,scale=auto|paper|small,widths=W1/W2,depths=D1/D2,resolutions=R1/R2 (pixels),seeds=."""
    a = base.parse(arg, widths=None, depths=None, resolutions=None)
    c = base.get_config(a["dataset"], base.is_paper(a))
    widths = base.values(a["widths"], (1.0,))
    depths = base.values(a["depths"], (1.0,))
    resolutions = tuple(int(r) for r in base.values(a["resolutions"], (base.base_resolution(c),)))
    varying = [n for n, v in (("width", widths), ("depth", depths), ("resolution", resolutions)) if len(v) > 1]
    strategy = "+".join(varying) or "width"
    points = []
    for w, d, r in itertools.product(widths, depths, resolutions):
        fixed = {"width": f"w={base.fmt(w)}", "depth": f"d={base.fmt(d)}", "resolution": f"r={r}"}
        series = ", ".join(v for k, v in fixed.items() if k not in varying[:1]) if len(varying) > 1 else strategy
        points.append(
            sweep.point(
                f"w{base.fmt(w)}-d{base.fmt(d)}-r{r}",
                strategy,
                {"model.width": w, "model.depth": d, "model.resolution": r},
                series=series,
            )
        )
    return base.finish(c, "grid", points, a)
