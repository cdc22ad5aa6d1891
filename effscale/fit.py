"""The saturating accuracy curve of a scaling strategy: top1 = a - b * (macs / m0) ** -c.

`a` is the accuracy the strategy approaches as compute grows (the paper's "saturates near
80%"), `c` how fast it gets there. For a fixed `c` the model is linear in (a, b), so the fit
scans `c` on a log grid, solves (a, b) by least squares for each and keeps the best, then
repeats with a robust (Huber) reweighting: no scipy, no starting guess, deterministic.
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


def _solve_ab(u: np.ndarray, y: np.ndarray, w: np.ndarray, a_max: float | None) -> tuple[float, float, float]:
    """Weighted least squares of y = a - b * u (b >= 0, a <= a_max); returns (a, b, weighted squared error)."""
    design = np.stack([np.ones_like(u), -u], axis=1) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a_max is not None and a > a_max:  # no accuracy above 100%: pin the ceiling, refit b alone
        a = a_max
        b = float(np.sum(w * u * (a - y)) / max(float(np.sum(w * u * u)), 1e-300))
    if b < 0:  # accuracy must not fall with compute: the best monotone fit is then flat
        a, b = float(np.average(y, weights=w)), 0.0
    resid = y - (a - b * u)
    return a, b, float(np.sum(w * resid**2))


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
    best: tuple[float, float, float, float] | None = None
    for _ in range(robust_iters + 1):
        best = None
        for c in grid:
            a, b, err = _solve_ab(ratio**-c, y, w, a_max)
            if best is None or err < best[3]:
                best = (a, b, float(c), err)
        a, b, c, _ = best
        resid = y - (a - b * ratio**-c)
        # Huber weights: points far off the curve (a diverged run) count less.
        scale = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        if scale <= 1e-9 * (1.0 + float(np.abs(y).max())):
            break  # (near) exact fit: nothing to down-weight
        r = np.abs(resid) / (1.345 * scale)
        w = np.where(r <= 1, 1.0, 1.0 / np.maximum(r, 1e-12))
    assert best is not None
    a, b, c, _ = best
    rmse = float(np.sqrt(np.mean((y - (a - b * ratio**-c)) ** 2)))
    return Saturating(a=a, b=b, c=c, m0=m0, rmse=rmse, n=int(len(x)))
