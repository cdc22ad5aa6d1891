"""The network description: decoding, scaling, config errors."""

import pytest

from configs import common, compound, default, efficientnet
from effscale import spec


def test_decode_block():
    a = spec.decode_block("r2_k5_s2_e6_c40_se0.25")
    assert (a.repeats, a.kernel, a.stride, a.expand, a.out_channels, a.se_ratio) == (2, 5, 2, 6.0, 40, 0.25)
    assert spec.decode_block("r1_k3_s1_e1_c16").se_ratio == 0.0
    with pytest.raises(ValueError, match="r<repeats>"):
        spec.decode_block("k3_s1")


def test_b0_structure():
    s = spec.build(default.get_config().model)
    assert [st.repeats for st in s.stages] == [1, 2, 2, 3, 3, 4, 1]
    assert [st.kernel for st in s.stages] == [3, 3, 5, 3, 5, 5, 3]
    assert [st.stride for st in s.stages] == [1, 2, 2, 2, 1, 2, 1]
    assert [st.out_resolution for st in s.stages] == [112, 56, 28, 14, 14, 7, 7]
    assert len(s.blocks) == 16 and s.block_names()[:4] == ("block1a", "block2a", "block2b", "block3a")
    # Only the first block of a stage strides or changes width; residual only when both stay.
    for b in s.blocks:
        first = b.name.endswith("a")
        assert b.residual == (not first or (b.stride == 1 and b.in_channels == b.out_channels))
    assert s.blocks[0].expanded_channels == 32  # expand 1: no expansion conv


def test_block_names_past_z():
    assert spec.block_name(3, 0) == "block3a"
    assert spec.block_name(6, 25) == "block6z"
    assert spec.block_name(6, 26) == "block6aa"
    s = spec.build({"depth": 8.0, "resolution": 32})
    assert len(set(s.block_names())) == len(s.blocks) == sum(8 * r for r in (1, 2, 2, 3, 3, 4, 1))


def test_compound_config_derives_scale_once():
    s = spec.build(compound.get_config("phi=2").model)
    assert (round(s.width, 4), round(s.depth, 4), s.resolution, s.phi) == (1.21, 1.44, 296, 2.0)
    c = compound.get_config("phi=2")
    c.model.resolution = 32  # a small-image base: 32 * 1.3225 -> 44
    assert spec.build(c.model).resolution == 44


def test_explicit_fields_override_the_preset():
    c = efficientnet.get_config("b3")
    c.model.width = 1.0
    s = spec.build(c.model)
    assert (s.width, s.depth, s.resolution, s.dropout) == (1.0, 1.4, 300, 0.3)


@pytest.mark.parametrize(
    "override,field",
    [
        ({"width": 0.0}, "model.width"),
        ({"depth": -1.0}, "model.depth"),
        ({"resolution": 0}, "model.resolution"),
        ({"phi": 1.0, "alpha": 0.8}, "alpha"),
        ({"phi": 1.0, "beta": 0.99}, "beta"),
        ({"pooling": "median"}, "model.pooling"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"preset": "b12"}, "b12"),
        ({"include_top": True, "pooling": None}, "include_top"),
    ],
)
def test_impossible_configs_are_refused_with_the_field_named(override, field):
    with pytest.raises(ValueError, match=field):
        spec.build(override)


def test_config_arguments():
    assert efficientnet.get_config("b5").model.preset == "b5"
    assert efficientnet.get_config(None).model.preset == "b0"
    with pytest.raises(ValueError, match="b9"):
        efficientnet.get_config("b9")
    c = compound.get_config("phi=3,alpha=1.3,base=b1")
    assert (c.model.phi, c.model.alpha, c.model.preset) == (3.0, 1.3, "b1")
    with pytest.raises(ValueError, match="allowed keys"):
        compound.get_config("phii=3")
    assert common.parse_arg("x=1,y=none,z=true", x=0, y=1, z=False) == {"x": 1, "y": None, "z": True}
