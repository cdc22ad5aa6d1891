"""The layer description against the Flax model built from it and Keras applications' parameter counts."""

from __future__ import annotations

import math

import jax
import pytest
from flax import traverse_util

from effscale import complexity, layers, model, spec

# Keras applications' EfficientNetB0 / B3 trainable parameters (weights=None, 1000 classes).
KERAS_TRAINABLE = {"b0": 5_288_548, "b3": 12_233_232}


def _sizes(net: spec.NetworkSpec, collection: str) -> dict[str, int]:
    """Variable count per '/'-joined module path of the Flax model (nothing computed)."""
    shapes = model.abstract_variables(model.EfficientNet(net, depthwise="xla"))[collection]
    out: dict[str, int] = {}
    for path, leaf in traverse_util.flatten_dict(dict(shapes)).items():
        module = "/".join(path[:-1])
        out[module] = out.get(module, 0) + math.prod(leaf.shape)
    return out


@pytest.mark.parametrize("preset", sorted(KERAS_TRAINABLE))
def test_per_layer_params_equal_the_model_and_sum_to_keras(preset):
    net = spec.build({"preset": preset})
    described = layers.weighted(net)
    params = _sizes(net, "params")
    assert sorted(path for path, _ in described) == sorted(params)  # the same layers, each once
    for path, layer in described:
        assert complexity.layer(layer).params == params[path], path
    total = sum(complexity.layer(layer).params for _, layer in described)
    assert total == complexity.analyse(net).params == KERAS_TRAINABLE[preset]


def test_batchnorm_rule_and_statistics():
    net = spec.build({"preset": "b0", "resolution": 32, "head_hidden": (16,), "num_classes": 5})
    stats = _sizes(net, "batch_stats")
    bns = {path: layer for path, layer in layers.weighted(net) if layer.kind == layers.BN}
    assert set(bns) == set(stats)
    assert {path for path, _ in layers.weighted(net) if layers.is_batchnorm(path)} == set(bns)
    assert all(layers.is_batchnorm(tuple(path.split("/"))) for path in bns)
    for path, layer in bns.items():
        assert complexity.layer(layer).bn_stats == stats[path]
    assert sum(stats.values()) == complexity.analyse(net).total.bn_stats


def test_heads_follow_pooling_and_top():
    base = {"preset": "b0", "resolution": 32}
    names = lambda cfg: [x.name for x in layers.head(spec.build({**base, **cfg}))]  # noqa: E731
    assert names({"include_top": False, "pooling": None}) == ["top_conv", "top_bn"]
    assert names({"include_top": False, "pooling": "max"}) == ["top_conv", "top_bn", "max_pool"]
    hidden = names({"head_hidden": (64, 32), "dropout": 0.3})
    assert hidden == ["top_conv", "top_bn", "avg_pool", "head_dense1", "head_dense2", "top_dropout", "predictions"]
    assert names({"dropout": 0.0})[-2:] == ["avg_pool", "predictions"]
    # Without the top the Flax model holds exactly the described layers (no classifier).
    feats = spec.build({**base, "include_top": False, "pooling": "avg"})
    assert sorted(p for p, _ in layers.weighted(feats)) == sorted(_sizes(feats, "params"))


def test_block_layers_by_hand():
    net = spec.build({"preset": "b0"})
    b1a, b2a, b2b = net.blocks[:3]
    assert [x.name for x in layers.block(b1a)] == ["dwconv", "bn", "se", "project_conv", "project_bn"]
    assert [x.name for x in layers.block(b2a)][:2] == ["expand_conv", "expand_bn"]
    assert layers.block(b2b)[-1].kind == layers.DROP_PATH and not b2a.residual
    expand, dw = layers.block(b2a)[0], layers.block(b2a)[2]
    assert (expand.c_in, expand.c_out, expand.size) == (16, 96, 112)  # at the block's input resolution
    assert (dw.kernel, dw.stride, dw.size) == (3, 2, 56)
    se = layers.block(b2a)[4]
    assert [(p.name, p.c_in, p.c_out) for p in se.parts] == [("se_squeeze", 96, 96), ("se_reduce", 96, 4),
                                                              ("se_expand", 4, 96)]  # fmt: skip
    assert [p for p, _ in layers.weighted(net)][4:6] == ["block1a/se/se_reduce", "block1a/se/se_expand"]


def test_bad_layer_kind_is_named():
    odd = layers.Layer("se", layers.SE, 4, 4, parts=(layers.Layer("odd", "odd", 4, 4),))
    with pytest.raises(ValueError, match="Unknown layer kind 'odd'"):
        model.SqueezeExcite(odd).init(jax.random.key(0), jax.numpy.zeros((1, 2, 2, 4)))
