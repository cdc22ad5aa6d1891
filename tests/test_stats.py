"""Means with t intervals, paired differences, bootstrap intervals of the saturating fit, curvature."""

import math
import statistics

import numpy as np
import pytest

from effscale import stats


def test_t_quantiles_match_tables_and_closed_forms():
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert stats.t_quantile(0.995, 4) == pytest.approx(4.604095, abs=1e-6)
    for p in (0.6, 0.9, 0.975, 0.999):
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
        assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
        assert stats.t_quantile(1 - p, 7) == pytest.approx(-stats.t_quantile(p, 7), rel=1e-12)
    assert stats.t_quantile(0.975, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), abs=1e-5)
    with pytest.raises(ValueError, match="p must be in"):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be > 0"):
        stats.t_quantile(0.9, 0)


def test_summary_of_a_known_sample():
    s = stats.summarize([1, 2, 3, 4, 5])
    # By hand: mean 3, std sqrt(2.5), half-width t(0.975, 4) * sqrt(2.5) / sqrt(5) = 2.776445 * 0.7071068.
    assert (s.mean, s.n) == (3.0, 5) and s.std == pytest.approx(math.sqrt(2.5))
    assert s.half_width == pytest.approx(1.963243, abs=1e-6)
    assert (s.lo, s.hi) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    assert s.excludes_zero() == 1 and stats.summarize([-3, -2, -4]).excludes_zero() == -1
    assert stats.summarize([-1, 1]).excludes_zero() == 0


def test_summaries_skip_missing_values_and_need_two_for_an_interval():
    assert stats.summarize([None, float("nan"), "x", True, 0.5, 1.5]) == stats.summarize([0.5, 1.5])
    one = stats.summarize([0.7, None])
    assert (one.mean, one.std, one.n, one.lo, one.hi, one.half_width) == (0.7, None, 1, None, None, None)
    assert one.excludes_zero() == 0  # a single run decides nothing
    assert stats.summarize([]).mean is None and stats.summarize([]).n == 0


def test_t_intervals_cover_the_mean_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = sum(
        (lambda s: s.lo <= 10.0 <= s.hi)(stats.summarize(rng.normal(10.0, 2.0, size=3).tolist())) for _ in range(4000)
    )
    assert 0.94 < hits / 4000 < 0.96  # with n = 3 a normal quantile (1.96) would cover only ~83%


def test_paired_difference_uses_the_seeds_both_sides_have():
    a = {0: 80.0, 1: 82.0, 2: 81.0, 3: 90.0}
    b = {0: 79.0, 1: 80.0, 2: 80.5, 5: 70.0, 1.5: None}
    d = stats.paired_difference(a, b)
    assert d.seeds == (0, 1, 2) and d.differences == (1.0, 2.0, 0.5)
    mean, sd = statistics.mean([1.0, 2.0, 0.5]), statistics.stdev([1.0, 2.0, 0.5])
    half = 4.302653 * sd / math.sqrt(3)
    assert d.summary.mean == pytest.approx(mean) and (d.summary.lo, d.summary.hi) == pytest.approx(
        (mean - half, mean + half), abs=1e-5
    )
    assert stats.paired_difference({0: 1.0}, {1: 1.0}).summary.n == 0


def test_curvature_per_doubling_is_the_change_of_the_gain_per_doubling():
    macs = [1e6, 2e6, 4e6, 8e6]
    # y = 1 + 2 L - 0.5 L^2 at L = 0..3: 1, 2.5, 3, 2.5; gains per doubling 1.5, 0.5, -0.5: each 1 less.
    assert stats.curvature_per_doubling(macs, [1.0, 2.5, 3.0, 2.5]) == pytest.approx(-1.0)
    assert stats.curvature_per_doubling(macs, [5.0, 6.0, 7.0, 8.0]) == pytest.approx(0.0, abs=1e-12)
    assert stats.curvature_per_doubling([1e6, 2e6, 2e6], [1.0, 2.0, 3.0]) is None


def _curve(m):
    return 90.0 - 6.0 * (np.asarray(m) / 1e6) ** -0.5


def test_bootstrap_of_exact_runs_collapses_on_the_curve():
    macs = [1e6, 2e6, 4e6, 8e6, 16e6]
    boot = stats.bootstrap_saturating({m: [float(_curve(m))] * 3 for m in macs}, at=(64e6,), reps=50)
    assert boot.min_runs == 3 and boot.reps == 50
    assert boot.intervals["a"] == pytest.approx((90.0, 90.0), abs=0.05)
    assert boot.intervals[64e6] == pytest.approx((float(_curve(64e6)),) * 2, abs=0.05)


def test_bootstrap_intervals_are_reproducible_and_hold_the_truth():
    rng = np.random.default_rng(3)
    macs = [1e6, 2e6, 4e6, 8e6, 16e6]
    samples = {m: (float(_curve(m)) + rng.normal(0, 0.3, size=4)).tolist() for m in macs}
    one, two = (stats.bootstrap_saturating(samples, at=(32e6,), reps=300) for _ in range(2))
    assert one.intervals == two.intervals  # a fixed numpy seed
    lo, hi = one.intervals[32e6]
    assert lo < float(_curve(32e6)) < hi and lo < one.curve(32e6) < hi
    assert one.intervals["c"][0] < 0.5 < one.intervals["c"][1]
    other = stats.bootstrap_saturating(samples, at=(32e6,), reps=300, seed=1)
    assert other.intervals != one.intervals


def test_bootstrap_needs_two_runs_per_point_for_intervals_and_three_points_for_a_fit():
    single = stats.bootstrap_saturating({1e6: [80.0], 2e6: [82.0, 82.4], 4e6: [83.0, 83.2]}, reps=20)
    assert single.min_runs == 1 and single.intervals == {} and single.curve.n == 3
    assert stats.bootstrap_saturating({1e6: [80.0, 81.0], 2e6: [82.0]}) is None
    assert stats.percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
