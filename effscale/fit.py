"""The saturating accuracy curve of a scaling strategy: top1 = a - b * (macs / m0) ** -c.

`a` is the accuracy the strategy approaches as compute grows (the paper's "saturates near
80%"), `c` how fast it gets there. For a fixed `c` the model is linear in (a, b), so the fit
scans `c` on a log grid, solves (a, b) by least squares for each and keeps the best, then
repeats with a robust (Huber) reweighting: no starting guess, deterministic, and fast enough to
refit a thousand times for bootstrap intervals (effscale.stats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

MIN_POINTS = 3  # three parameters: fewer points fit any curve exactly, so none is drawn


@dataclasses.dataclass(frozen=True)
class Saturating:
    """A fitted curve top1 = a - b * (macs / m0) ** -c."""

    a: float
    b: float
    c: float
    m0: float
    rmse: float
    n: int

    def __call__(self, macs: np.ndarray | float) -> np.ndarray:
        """The curve at `macs`."""
        return self.a - self.b * (np.asarray(macs, dtype=float) / self.m0) ** -self.c

    def macs_for(self, top1: float) -> float:
        """The multiply-adds at which the curve reaches `top1` (inf at or above the asymptote)."""
        if top1 >= self.a:
            return float("inf")
        return float(self.m0 * ((self.a - top1) / self.b) ** (-1.0 / self.c))


def _solve_ab(u: np.ndarray, y: np.ndarray, w: np.ndarray, a_max: float | None) -> tuple[np.ndarray, ...]:
    """Weighted least squares of y = a - b * u (b >= 0, a <= a_max) for each row of `u` (one per c).

    Returns (a, b, weighted squared error), one value per row: the closed-form two-parameter
    solution, vectorised over the c grid (a few hundred fits per call, many calls per bootstrap).
    """
    sw, sy = w.sum(), (w * y).sum()
    su, suu, suy = (u * w).sum(axis=1), (u * u * w).sum(axis=1), (u * w * y).sum(axis=1)
    det = sw * suu - su * su
    slope = np.divide(sw * suy - su * sy, det, out=np.zeros_like(det), where=det > 0)  # y = a + slope * u
    a, b = (sy - slope * su) / sw, -slope
    if a_max is not None:  # no accuracy above 100%: pin the ceiling, refit b alone
        over = a > a_max
        b_pinned = (u * w * (a_max - y)).sum(axis=1) / np.maximum(suu, 1e-300)
        a, b = np.where(over, a_max, a), np.where(over, b_pinned, b)
    falling = b < 0  # accuracy must not fall with compute: the best monotone fit is then flat
    a, b = np.where(falling, sy / sw, a), np.where(falling, 0.0, b)
    resid = y - (a[:, None] - b[:, None] * u)
    return a, b, (w * resid**2).sum(axis=1)


def fit_saturating(
    macs: Sequence[float],
    top1: Sequence[float],
    a_max: float | None = None,
    c_grid: np.ndarray | None = None,
    robust_iters: int = 3,
) -> Saturating | None:
    """Fits top1 = a - b * (macs / m0) ** -c (b >= 0, c > 0, a <= a_max); None with fewer than 3 distinct points.

    m0 is the smallest MACs value, which keeps the numbers well scaled. Points with a missing
    or non-finite value are ignored. With exactly 3 points the curve passes through them and
    its ceiling `a` is poorly determined: read it with care.
    """
    x = np.asarray(macs, dtype=float)
    y = np.asarray(top1, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < MIN_POINTS:
        return None
    m0 = float(x.min())
    ratio = x / m0
    grid = np.geomspace(0.02, 4.0, 240) if c_grid is None else np.asarray(c_grid, dtype=float)
    w = np.ones_like(y)
    u = ratio[None, :] ** -grid[:, None]
    best: tuple[float, float, float] | None = None
    for _ in range(robust_iters + 1):
        a_all, b_all, err = _solve_ab(u, y, w, a_max)
        k = int(np.argmin(err))  # the first of equal errors, as a scan in grid order keeps
        best = (float(a_all[k]), float(b_all[k]), float(grid[k]))
        a, b, c = best
        resid = y - (a - b * ratio**-c)
        # Huber weights: points far off the curve (a diverged run) count less.
        scale = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        if scale <= 1e-9 * (1.0 + float(np.abs(y).max())):
            break  # (near) exact fit: nothing to down-weight
        r = np.abs(resid) / (1.345 * scale)
        w = np.where(r <= 1, 1.0, 1.0 / np.maximum(r, 1e-12))
    assert best is not None
    a, b, c = best
    rmse = float(np.sqrt(np.mean((y - (a - b * ratio**-c)) ** 2)))
    return Saturating(a=a, b=b, c=c, m0=m0, rmse=rmse, n=int(len(x)))
