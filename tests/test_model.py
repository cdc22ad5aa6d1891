"""Flax modules: shapes, training vs inference, initialisers and the depthwise implementations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effscale import model, spec

TINY = {"width": 0.25, "depth": 0.25, "resolution": 32, "num_classes": 7}


def init(net, res=32, batch=2, seed=0):
    # jit: eager Flax dispatches (and compiles) every op separately, which is far slower.
    x = jax.random.normal(jax.random.key(seed), (batch, res, res, 3))
    return jax.jit(net.init)(jax.random.key(1), x), x


def apply(net, variables, x, **kwargs):
    if isinstance(kwargs.get("mutable"), list):
        kwargs["mutable"] = tuple(kwargs["mutable"])  # static arguments must be hashable
    return jax.jit(net.apply, static_argnames=("train", "mutable"))(variables, x, **kwargs)


@pytest.fixture(scope="module")
def tiny():
    """One initialised tiny network shared by the tests that only read it (saves compiles)."""
    s = spec.build({**TINY, "dropout": 0.5, "drop_path": 0.5})
    net = model.EfficientNet(s)
    variables, x = init(net, batch=8)
    return s, net, variables, x


def assert_tree_close(a, b, rel=1e-4):
    """Elementwise closeness relative to each leaf's largest magnitude (sums of many float32 terms).

    Some gradients are analytically zero (the BN offset of a non-residual block's projection feeds a
    1x1 conv and then a training-mode BN that subtracts it again) and hold only rounding noise, so a
    leaf's scale is floored at 1% of the largest magnitude in the whole tree.
    """
    floor = 0.01 * max(float(jnp.abs(y).max()) for y in jax.tree.leaves(b))

    def check(x, y):
        scale = max(float(jnp.abs(y).max()), floor)
        np.testing.assert_allclose(x, y, rtol=0, atol=rel * scale)

    jax.tree.map(check, a, b)


def test_shapes_with_and_without_top(tiny):
    s, net, v, x = tiny
    assert apply(net, v, x).shape == (8, 7)
    # The feature extractors have the same parameters minus the classifier.
    for pooling in ("avg", "max"):
        feats = model.EfficientNet(spec.build({**TINY, "include_top": False, "pooling": pooling}))
        assert apply(feats, v, x).shape == (8, s.head_channels)
    fmap_net = model.EfficientNet(spec.build({**TINY, "include_top": False, "pooling": None}))
    fmap = apply(fmap_net, v, x)
    assert fmap.shape == (8, 1, 1, s.head_channels)  # 32 px / stride 32
    pooled = apply(model.EfficientNet(spec.build({**TINY, "include_top": False, "pooling": "max"})), v, x)
    np.testing.assert_allclose(pooled, fmap.max(axis=(1, 2)), rtol=1e-6)
    shapes = jax.eval_shape(fmap_net.init, jax.random.key(0), jnp.zeros((1, 44, 44, 3)))
    assert "predictions" not in shapes["params"]
    out = jax.eval_shape(fmap_net.apply, shapes, jnp.zeros((1, 44, 44, 3)))
    assert out.shape == (1, 2, 2, s.head_channels)  # ceil(44 / 32) with TF 'SAME'


def test_inference_is_deterministic_and_training_is_not(tiny):
    _, net, v, x = tiny
    a, b = apply(net, v, x), apply(net, v, x)
    np.testing.assert_array_equal(a, b)
    t1, _ = apply(net, v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    t2, _ = apply(net, v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(t1, t2)


def test_batchnorm_statistics_update_only_in_training(tiny):
    _, net, v, x = tiny
    _, updated = apply(net, v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    before, after = v["batch_stats"]["stem_bn"], updated["batch_stats"]["stem_bn"]
    assert not np.allclose(before["mean"], after["mean"])
    # momentum 0.99 from a zero mean: the update is 0.01 x the batch mean of the stem's output.
    stem_out = jax.lax.conv_general_dilated(
        x, v["params"]["stem_conv"]["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(after["mean"], 0.01 * stem_out.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6)
    _, same = apply(net, v, x, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, same["batch_stats"], v["batch_stats"])


def test_batchnorm_hyperparameters():
    s = spec.build({"preset": "b0"})
    assert (s.bn_momentum, s.bn_epsilon) == (0.99, 1e-3)


def test_stochastic_depth_drops_whole_samples():
    block = spec.BlockSpec(
        name="block2b",
        stage=2,
        index=3,
        kernel=3,
        stride=1,
        expand=6,
        in_channels=8,
        out_channels=8,
        expanded_channels=48,
        se_channels=2,
        drop_path=0.5,
        in_resolution=8,
        out_resolution=8,
    )
    mb = model.MBConv(block)
    x = jax.random.normal(jax.random.key(0), (64, 8, 8, 8))
    v = jax.jit(mb.init)(jax.random.key(1), x)
    branch = apply(mb, v, x) - x  # inference: the full branch, unscaled
    y, _ = apply(mb, v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    kept = []
    for i in range(x.shape[0]):
        if np.allclose(y[i], x[i]):
            kept.append(False)
        else:
            kept.append(True)
    kept = np.array(kept)
    assert 10 < kept.sum() < 54  # per-sample Bernoulli(0.5) over 64 samples
    # Kept samples carry the (train-mode BN) branch rescaled by 1 / keep_prob, never the unscaled one.
    assert not np.allclose(y[kept] - x[kept], branch[kept], atol=1e-3)
    # A frozen block (transfer learning: its BatchNorms frozen) drops nothing: training = inference.
    frozen = model.MBConv(block, frozen_bn=frozenset({"expand_bn", "bn", "project_bn"}))
    y, _ = apply(frozen, v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    np.testing.assert_allclose(y, apply(frozen, v, x), atol=1e-6)


def test_drop_path_schedule_is_linear_in_block_index():
    s = spec.build({"preset": "b0"})
    rates = [b.drop_path for b in s.blocks]
    assert rates[0] == 0.0
    assert rates == pytest.approx([0.2 * i / 16 for i in range(16)])


def test_initialiser_standard_deviations():
    net = model.EfficientNet(spec.build({"preset": "b0", "resolution": 32}))
    p = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))["params"]
    dw = p["block6a"]["dwconv"]["kernel"]  # 5x5x1x672
    assert dw.shape == (5, 5, 1, 672)
    assert float(jnp.std(dw)) == pytest.approx(math.sqrt(2 / 25), rel=0.05)
    conv = p["top_conv"]["kernel"]  # 1x1x320x1280, fan_out = 1280
    assert float(jnp.std(conv)) == pytest.approx(math.sqrt(2 / 1280), rel=0.05)
    dense = p["predictions"]["kernel"]
    limit = 1 / math.sqrt(1000)
    assert float(jnp.abs(dense).max()) <= limit
    assert float(jnp.std(dense)) == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert not p["stem_conv"].get("bias") and "bias" in p["block1a"]["se"]["se_reduce"]


def test_fast_start_initialisation_zero_head_and_identity_residual_blocks():
    s = spec.build(TINY)
    cfg = {"head_init": "zeros", "residual_bn_init": "zeros"}
    net = model.create(s, cfg)
    v, x = init(net)
    p = v["params"]
    assert float(jnp.abs(p["predictions"]["kernel"]).max()) == 0.0
    np.testing.assert_array_equal(apply(net, v, x), 0.0)  # every class equally likely: loss log(classes)
    residual = [b for b in s.blocks if b.residual]
    assert residual and all(float(jnp.abs(p[b.name]["project_bn"]["scale"]).max()) == 0.0 for b in residual)
    plain = next(b for b in s.blocks if not b.residual)
    assert float(jnp.min(p[plain.name]["project_bn"]["scale"])) == 1.0  # only residual branches start at 0
    # A residual block is then the identity, in training and in inference.
    b = residual[0]
    block = model.MBConv(b, residual_bn_init="zeros")
    h = jax.random.normal(jax.random.key(3), (2, 8, 8, b.in_channels))
    bv = jax.jit(block.init)(jax.random.key(4), h)
    np.testing.assert_array_equal(jax.jit(block.apply)(bv, h), h)
    out, _ = jax.jit(lambda v, h: block.apply(v, h, train=True, mutable=["batch_stats"]))(bv, h)
    np.testing.assert_allclose(out, h, atol=1e-6)
    # The official initialisation stays the default: same parameter tree, other values.
    official = jax.jit(model.create(s, {}).init)(jax.random.key(1), x)["params"]
    assert jax.tree.structure(official) == jax.tree.structure(p)
    assert float(jnp.min(official[b.name]["project_bn"]["scale"])) == 1.0


def test_squeeze_excite_width_comes_from_block_input():
    s = spec.build({"preset": "b0", "resolution": 32})
    v = jax.eval_shape(model.EfficientNet(s).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    b = s.blocks[1]  # block2a: in 16, expanded 96 -> se 4 (not 24)
    assert v["params"]["block2a"]["se"]["se_reduce"]["kernel"].shape == (1, 1, b.expanded_channels, 4)


def test_tf_same_padding_puts_the_extra_pixel_bottom_right():
    assert model.same_padding(8, 3, 2) == (0, 1)
    assert model.same_padding(9, 3, 2) == (1, 1)
    assert model.same_padding(7, 5, 1) == (2, 2)


def test_whole_network_same_outputs_and_gradients_for_every_implementation(tiny):
    s, _, v, x = tiny
    nets = {impl: model.EfficientNet(s, depthwise=impl) for impl in model.DEPTHWISE_IMPLS}
    nets["remat"] = model.EfficientNet(s, depthwise="shift", remat="block")

    def loss(net):
        def f(params):
            out, _ = net.apply(
                {"params": params, "batch_stats": v["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(5)},
            )
            return jnp.mean(out**2)

        return jax.jit(jax.value_and_grad(f))(v["params"])

    ref_loss, ref_grad = loss(nets["xla"])
    for name in ("shift", "remat"):
        val, grad = loss(nets[name])
        assert float(val) == pytest.approx(float(ref_loss), rel=1e-5)
        assert_tree_close(grad, ref_grad)


def test_bfloat16_compute_keeps_float32_parameters(tiny):
    s, ref_net, v, x = tiny
    net = model.create(s, {"dtype": "bfloat16", "depthwise": "shift", "remat": "none"})
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
    out = apply(net, v, x)
    assert out.dtype == jnp.float32
    ref = apply(ref_net, v, x)
    np.testing.assert_allclose(out, ref, atol=0.1 * float(jnp.abs(ref).max()) + 0.05)


@pytest.mark.parametrize(
    "field,value",
    [
        ("dtype", "float16"),
        ("depthwise", "fft"),
        ("remat", "everything"),
        ("head_init", "normal"),
        ("residual_bn_init", "half"),
    ],
)
def test_bad_runtime_choices_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"model.{field}"):
        model.check_runtime({field: value})
