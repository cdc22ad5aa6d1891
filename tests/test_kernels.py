"""Every depthwise / pointwise / norm implementation computes the reference's outputs and gradients (tiny shapes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effscale import model, spec


@pytest.mark.parametrize(
    "shape,kernel,stride",
    [
        ((2, 9, 10, 4), 3, 1),
        ((2, 8, 8, 4), 3, 2),
        ((2, 9, 9, 3), 5, 2),
        ((1, 7, 6, 3), 5, 1),
        ((2, 6, 7, 2), 3, 2),
        # Small maps, where taps that read only padding are skipped.
        ((2, 2, 2, 3), 5, 1),
        ((2, 1, 1, 3), 5, 1),
        ((2, 2, 3, 3), 5, 2),
        ((1, 3, 3, 2), 5, 2),
        ((2, 1, 2, 2), 3, 2),
    ],
)
@pytest.mark.parametrize("impl", [i for i in model.DEPTHWISE_IMPLS if i != "xla"])
def test_depthwise_matches_grouped_convolution(shape, kernel, stride, impl):
    """Forward, d/dx and d/dkernel against XLA's grouped convolution (odd / even sizes, both strides)."""
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, shape[-1]))

    def run(name):
        # jit: eagerly, each of the k*k shifted slices and their transposes dispatches (and compiles) alone.
        @jax.jit
        def forward_and_vjp(a, b):
            y, vjp = jax.vjp(lambda a, b: model.depthwise_conv(a, b, stride, name), a, b)
            return (y, *vjp(jax.random.normal(jax.random.key(2), y.shape)))

        return forward_and_vjp(x, k)

    for got, want in zip(run(impl), run("xla"), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_depthwise_unknown_impl():
    with pytest.raises(ValueError, match="depthwise"):
        model.depthwise_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 2)), 1, "nope")


def _train_outputs(net, variables, x):
    """Logits, new batch statistics and parameter gradients of a training-mode loss."""

    def loss(params):
        out, updates = net.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)}
        )
        return jnp.sum(out * jnp.arange(out.shape[-1])), (out, updates["batch_stats"])

    (_, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return aux, grads


@pytest.mark.parametrize(
    "pointwise,depthwise,norm", [("dot", "shift", "fused"), ("dot", "shift_vjp", "flax"), ("conv", "xla", "fused")]
)
def test_network_variants_match_reference(pointwise, depthwise, norm):
    """Same parameter tree, outputs, batch statistics and gradients as the reference (conv, XLA depthwise, flax BN)."""
    s = spec.build({"width": 0.25, "depth": 0.25, "resolution": 16, "num_classes": 5})
    ref = model.EfficientNet(s, depthwise="xla", pointwise="conv", norm="flax")
    net = model.EfficientNet(s, depthwise=depthwise, pointwise=pointwise, norm=norm)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    mine = jax.jit(net.init)(jax.random.key(1), x)
    assert jax.tree.structure(mine) == jax.tree.structure(variables)
    assert jax.tree.map(jnp.shape, mine) == jax.tree.map(jnp.shape, variables)
    got, want = _train_outputs(net, variables, x), _train_outputs(ref, variables, x)
    # Per leaf, relative to its largest magnitude (floored at 1% of the tree's): training-mode BatchNorm
    # over the few pixels of a tiny network's last stages amplifies float32 summation-order differences.
    floor = 0.01 * max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want))

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-3 * max(float(jnp.abs(b).max()), floor))

    jax.tree.map(close, got, want)


def test_defaults_per_platform_and_config_validation():
    assert model.default_depthwise("cpu") == "shift_vjp" and model.default_depthwise("gpu") == "xla"
    assert model.default_pointwise("cpu") == "dot" and model.default_pointwise("gpu") == "conv"
    assert model.default_norm("cpu") == "fused" and model.default_norm("gpu") == "flax"
    s = spec.build({"width": 0.25, "depth": 0.25, "resolution": 16})
    net = model.create(s, {"depthwise": "shift_vjp", "pointwise": "conv", "norm": "flax"})
    assert (net.depthwise, net.pointwise, net.norm) == ("shift_vjp", "conv", "flax")
    with pytest.raises(ValueError, match="pointwise"):
        model.create(s, {"pointwise": "matmul"})
    with pytest.raises(ValueError, match="model.norm"):
        model.create(s, {"norm": "fast"})
