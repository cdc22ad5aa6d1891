"""Statistics over repeated runs: means with t intervals, paired differences, bootstrap intervals of a fit.

Every interval is two-sided at `level` (default 95%). A summary of one run has no interval (lo and hi are None):
an interval needs n >= 2. Runs are paired by seed: two networks trained with the same seed share their
initialisation and data order, so the difference of their accuracies varies less than either accuracy alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from effscale import fit as fitting

LEVEL = 0.95
BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 0  # fixed: the same table gives the same intervals


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom (df > 0)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p!r}.")
    if not df > 0:
        raise ValueError(f"t_quantile: df must be > 0, got {df!r}.")
    from scipy import special  # installed with jax; imported here so that importing this module stays cheap

    return float(special.stdtrit(df, p))


def finite(values: Sequence[Any]) -> list[float]:
    """The values that are finite numbers, as floats (None, NaN, text and booleans left out)."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            continue
        if math.isfinite(float(v)):
            out.append(float(v))
    return out


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, count and t interval of the mean (lo, hi None when n < 2)."""

    mean: float | None
    std: float | None
    n: int
    lo: float | None
    hi: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the +- of `mean`); None without an interval."""
        return None if self.lo is None or self.hi is None else 0.5 * (self.hi - self.lo)

    def excludes_zero(self) -> int:
        """+1 when the whole interval lies above 0, -1 when below, 0 when it holds 0 or does not exist."""
        if self.lo is not None and self.lo > 0:
            return 1
        if self.hi is not None and self.hi < 0:
            return -1
        return 0


def summarize(values: Sequence[Any], level: float = LEVEL) -> Summary:
    """The Summary of the finite values among `values` (t interval: mean +- t(df=n-1) * std / sqrt(n))."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return Summary(None, None, 0, None, None)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(mean, None, 1, None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Paired:
    """The differences a - b over the seeds both have, and their Summary."""

    seeds: tuple[Any, ...]
    differences: tuple[float, ...]
    summary: Summary


def paired_difference(a: Mapping[Any, Any], b: Mapping[Any, Any], level: float = LEVEL) -> Paired:
    """Per seed a[seed] - b[seed] over the seeds with a finite value in both; their mean and t interval."""
    seeds = tuple(s for s in a if s in b and len(finite([a[s], b[s]])) == 2)
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    return Paired(seeds, diffs, summarize(diffs, level))


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap draws (percentile method)."""
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclasses.dataclass(frozen=True)
class BootstrapFit:
    """The saturating fit of the per-point means, with bootstrap draws of its parameters and values.

    `draws` maps 'a', 'b', 'c' and each requested MACs value (a float key) to the draws of that
    quantity; `intervals` maps the same keys to their percentile intervals. `intervals` is empty
    when some point has a single run: resampling one value gives no spread, so no interval.
    """

    curve: fitting.Saturating
    reps: int
    min_runs: int
    draws: Mapping[Any, np.ndarray]
    intervals: Mapping[Any, tuple[float, float]]


def bootstrap_saturating(
    samples: Mapping[float, Sequence[float]],
    at: Sequence[float] = (),
    reps: int = BOOTSTRAP_REPS,
    level: float = LEVEL,
    seed: int = BOOTSTRAP_SEED,
    a_max: float | None = None,
) -> BootstrapFit | None:
    """Bootstrap intervals of the saturating fit (effscale.fit) and of its value at each MACs in `at`.

    `samples` maps each point's MACs to its runs' accuracies (one per seed). Each draw resamples
    every point's runs with replacement, independently per point, and refits the curve to the
    resampled means. None when the means do not support a fit (fewer than 3 distinct MACs).
    """
    points = {float(x): finite(v) for x, v in samples.items()}
    points = {x: v for x, v in points.items() if v and math.isfinite(x) and x > 0}
    xs = np.array(sorted(points))
    curve = fitting.fit_saturating(xs, [np.mean(points[x]) for x in xs], a_max=a_max)
    if curve is None:
        return None
    min_runs = min(len(v) for v in points.values())
    rng = np.random.default_rng(seed)
    keys: list[Any] = ["a", "b", "c", *(float(m) for m in at)]
    out = np.empty((reps, len(keys)))
    for k in range(reps):
        means = [np.mean(rng.choice(points[x], size=len(points[x]))) for x in xs]
        f = fitting.fit_saturating(xs, means, a_max=a_max)
        out[k] = [f.a, f.b, f.c, *(float(f(m)) for m in at)]
    draws = {key: out[:, j] for j, key in enumerate(keys)}
    intervals = {key: percentile_interval(d, level) for key, d in draws.items()} if min_runs >= 2 else {}
    return BootstrapFit(curve, reps, min_runs, draws, intervals)


def curvature_per_doubling(macs: Sequence[float], values: Sequence[float]) -> float | None:
    """How much the gain per doubling of MACs changes per doubling: 2 * p2 of a quadratic in log2(MACs).

    Negative: each doubling gains less than the one before (diminishing returns). None with fewer
    than 3 distinct MACs.
    """
    x = np.log2(np.asarray(macs, dtype=float))
    y = np.asarray(values, dtype=float)
    if len(np.unique(x)) < 3:
        return None
    p2 = np.polyfit(x - x.mean(), y, 2)[0]
    return float(2.0 * p2)
