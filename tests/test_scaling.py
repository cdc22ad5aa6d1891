"""Scaling rules against hand computations and the published tables."""

import math

import pytest

from effscale import scaling


@pytest.mark.parametrize(
    "filters,width,expected",
    [
        (32, 1.0, 32),
        (32, 1.1, 32),  # 35.2 -> int(39.2)//8*8 = 32, not < 0.9*35.2
        (1280, 1.1, 1408),
        (40, 1.2, 48),
        (16, 1.4, 24),  # 22.4 -> 24
        (32, 2.0, 64),
        (320, 2.0, 640),
        (8, 0.25, 8),  # never below the divisor
        (112, 0.5, 56),
        (24, 0.35, 8),  # 8.4 -> 8
    ],
)
def test_round_filters_by_hand(filters, width, expected):
    assert scaling.round_filters(filters, width) == expected


def test_round_filters_never_ten_percent_low():
    for f in (16, 24, 40, 80, 112, 192, 320, 1280):
        for w in (0.3, 0.75, 1.1, 1.3, 1.7, 2.3, 3.9):
            out = scaling.round_filters(f, w)
            assert out % 8 == 0 and out >= 0.9 * f * w


def test_round_repeats_is_ceil():
    assert scaling.round_repeats(1, 1.1) == 2
    assert scaling.round_repeats(4, 3.1) == 13
    assert scaling.round_repeats(3, 1.0) == 3
    assert scaling.round_repeats(2, 0.25) == 1


def test_presets_are_the_official_values():
    assert scaling.preset("B0") == scaling.Scale(1.0, 1.0, 224, 0.2)
    assert scaling.preset("efficientnet-b7") == scaling.Scale(2.0, 3.1, 600, 0.5)
    assert [scaling.PRESETS[f"b{i}"].resolution for i in range(8)] == [224, 240, 260, 300, 380, 456, 528, 600]


def test_pure_compound_phi2_is_not_b2():
    s = scaling.compound(2)
    assert s.depth == pytest.approx(1.44)
    assert s.width == pytest.approx(1.21)
    assert s.resolution == 296  # 224 * 1.3225 = 296.24 -> nearest multiple of 4
    assert (s.width, s.depth, s.resolution) != (1.1, 1.2, 260)


def test_round_resolution_multiple_of_four():
    assert scaling.round_resolution(296.24) == 296
    assert scaling.round_resolution(42.32) == 44
    assert scaling.round_resolution(1.0) == 4


def test_abg_grid_respects_the_constraint():
    grid = scaling.abg_grid(step=0.05, tolerance=0.1)
    assert (1.2, 1.1, 1.15) in grid  # the paper's choice: 1.2 * 1.21 * 1.3225 = 1.92
    assert len(grid) == len(set(grid)) > 10
    for a, b, g in grid:
        assert min(a, b, g) >= 1.0
        assert abs(a * b * b * g * g - 2.0) <= 0.1 + 1e-9


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: scaling.compound(1, alpha=0.9), "alpha"),
        (lambda: scaling.compound(1, gamma=0.5), "gamma"),
        (lambda: scaling.compound(-1), "phi"),
        (lambda: scaling.round_filters(32, 0), "width"),
        (lambda: scaling.round_repeats(2, -1), "depth"),
        (lambda: scaling.preset("b8"), "b8"),
    ],
)
def test_bad_values_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_flops_factor():
    assert scaling.flops_factor(1.2, 1.1, 1.15) == pytest.approx(1.2 * 1.21 * 1.3225)
    assert math.isclose(scaling.flops_factor(1, 1, 1), 1.0)
