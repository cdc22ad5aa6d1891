"""Analytic complexity against Keras' parameter counts, the paper's Table 2 and XLA."""

import math

import pytest

from configs import compound, efficientnet
from effscale import complexity, scaling, spec

# Keras applications' EfficientNetB0..B7 (weights=None, 1000 classes): trainable
# parameters and model.count_params() (which adds BN statistics and the 7 numbers of
# its Normalization layer), as keras.applications reports them.
KERAS = {
    "b0": (5_288_548, 5_330_571),
    "b1": (7_794_184, 7_856_239),
    "b2": (9_109_994, 9_177_569),
    "b3": (12_233_232, 12_320_535),
    "b4": (19_341_616, 19_466_823),
    "b5": (30_389_784, 30_562_527),
    "b6": (43_040_704, 43_265_143),
    "b7": (66_347_960, 66_658_687),
}
# Tan & Le 2019, Table 2 ("FLOPs" = multiply-adds), billions.
PAPER_MACS = {"b0": 0.39, "b1": 0.70, "b2": 1.0, "b3": 1.8, "b4": 4.2, "b5": 9.9, "b6": 19, "b7": 37}
# Output channels of the stem, the seven stages and the head, as keras.applications builds them.
KERAS_CHANNELS = {
    "b1": (32, 16, 24, 40, 80, 112, 192, 320, 1280),
    "b2": (32, 16, 24, 48, 88, 120, 208, 352, 1408),
    "b3": (40, 24, 32, 48, 96, 136, 232, 384, 1536),
    "b4": (48, 24, 32, 56, 112, 160, 272, 448, 1792),
    "b5": (48, 24, 40, 64, 128, 176, 304, 512, 2048),
    "b6": (56, 32, 40, 72, 144, 200, 344, 576, 2304),
    "b7": (64, 32, 48, 80, 160, 224, 384, 640, 2560),
}


@pytest.mark.parametrize("name", sorted(KERAS))
def test_params_equal_keras(name):
    report = complexity.analyse(spec.build(efficientnet.get_config(name).model))
    trainable, keras_total = KERAS[name]
    assert report.params == trainable
    assert report.params + report.total.bn_stats + 7 == keras_total


@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_macs_within_5_percent_of_table_2(name):
    macs = complexity.analyse(spec.build(efficientnet.get_config(name).model)).macs
    assert macs / (PAPER_MACS[name] * 1e9) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", sorted(KERAS_CHANNELS))
def test_stage_channels_equal_keras(name):
    s = spec.build(efficientnet.get_config(name).model)
    got = (s.stem_channels, *(st.out_channels for st in s.stages), s.head_channels)
    assert got == KERAS_CHANNELS[name]


def test_activations_as_documented():
    # Conv, dense and pooling outputs per image (pycls' convention): B0 ~6.7M, B7 ~290M.
    b0 = complexity.analyse(spec.build({"preset": "b0"})).activations
    b7 = complexity.analyse(spec.build({"preset": "b7"})).activations
    assert b0 == pytest.approx(6.7e6, rel=0.02)
    assert b7 == pytest.approx(290e6, rel=0.02)


def test_b0_stem_by_hand():
    s = spec.build({"preset": "b0"})
    stem = complexity.stem(s)
    assert stem.macs == 112 * 112 * 3 * 3 * 3 * 32
    assert stem.params == 3 * 3 * 3 * 32 + 2 * 32
    assert stem.activations == 112 * 112 * 32


def test_block2a_by_hand():
    b = spec.build({"preset": "b0"}).blocks[1]  # 16 -> 24, expand 6, k3, stride 2, 112 -> 56
    assert (b.name, b.in_channels, b.expanded_channels, b.out_channels, b.se_channels) == ("block2a", 16, 96, 24, 4)
    expected = (
        112 * 112 * 16 * 96  # expand 1x1 at the input size
        + 56 * 56 * 9 * 96  # depthwise 3x3, stride 2
        + 96 * 4
        + 4 * 96  # squeeze-excite
        + 56 * 56 * 96 * 24  # project
    )
    assert complexity.block(b).macs == expected


def test_compound_macs_track_two_to_the_phi():
    # Per step of phi, FLOPs should grow by alpha * beta^2 * gamma^2 = 1.92. Single points deviate
    # upward by up to ~30%: ceil() turns B0's one-block stages (1 and 7) into two blocks as soon as
    # depth exceeds 1, and channels round to multiples of 8 and resolution to multiples of 4. Over
    # phi = 0..6 those rounding steps average out: the geometric growth rate is within 2% of 1.92.
    factor = scaling.flops_factor(scaling.ALPHA, scaling.BETA, scaling.GAMMA)
    macs = [complexity.analyse(spec.build(compound.get_config(f"phi={p}").model)).macs for p in range(7)]
    for phi in range(1, 7):
        assert 1.0 <= macs[phi] / (macs[0] * factor**phi) <= 1.3
    growth = (macs[6] / macs[0]) ** (1 / 6)
    assert growth == pytest.approx(factor, rel=0.02)


def test_xla_count_agrees_with_analytic():
    # XLA counts 2 FLOPs per multiply-add and adds elementwise work that the paper's
    # convention leaves out: BatchNorm (~4 ops/element), swish (~4), the SE gate and the
    # residual adds, about 25 ops per activation. With ~17 MACs per activation for B0 that
    # is ~5% on top of 2 x MACs; allow 0-10%.
    s = spec.build({"preset": "b0", "resolution": 96})
    ratio = complexity.xla_flops(s) / (2 * complexity.analyse(s).macs)
    assert 1.0 <= ratio <= 1.10
    assert not math.isnan(ratio)
