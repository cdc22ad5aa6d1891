"""effscale.norm: the fused BatchNorm + activation against flax's nn.BatchNorm + nn.swish (autodiff)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effscale import norm


def _reference(x, scale, bias, act):
    """flax's BatchNorm (training mode) then the activation; returns (y, mean, var) like batch_norm_act."""
    layer = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3)
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": {"mean": 0 * bias, "var": 0 * bias + 1}}
    y, upd = layer.apply(variables, x, mutable=["batch_stats"])
    # Undo the running average (momentum 0.9, from mean 0 / var 1) to recover the batch statistics.
    mean = upd["batch_stats"]["mean"] / 0.1
    var = (upd["batch_stats"]["var"] - 0.9) / 0.1
    return (nn.swish(y) if act == "swish" else y), mean, var


@pytest.mark.parametrize("act", norm.ACTIVATIONS)
@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (7, 2)])
def test_batch_norm_act_matches_flax(act, shape):
    """Outputs, statistics and the gradients of x, scale and bias, through y and through the statistics."""
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), shape)
    scale = jax.random.normal(jax.random.key(1), shape[-1:])
    bias = jax.random.normal(jax.random.key(2), shape[-1:])
    w = [jax.random.normal(jax.random.key(3 + i), s) for i, s in enumerate([shape, shape[-1:], shape[-1:]])]

    def loss(f):
        def value(x, scale, bias):
            y, mean, var = f(x, scale, bias)
            return jnp.sum(y * w[0]) + jnp.sum(mean * w[1]) + jnp.sum(var * w[2]), (y, mean, var)

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True))(x, scale, bias)

    (_, got), got_grads = loss(lambda *a: norm.batch_norm_act(*a, 1e-3, act))
    (_, want), want_grads = loss(lambda *a: _reference(*a, act))
    for a, b in zip((*got, *got_grads), (*want, *want_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.abs(b).max()))


def test_hand_computed_forward():
    """Two pixels 0 and 2 in one channel: mean 1, var 1; y = (x - 1) / sqrt(1 + eps) * 2 + 0.5."""
    x = jnp.array([[0.0], [2.0]])
    y, mean, var = norm.batch_norm_act(x, jnp.array([2.0]), jnp.array([0.5]), 0.0, "none")
    np.testing.assert_allclose(y[:, 0], [-1.5, 2.5])
    assert float(mean[0]) == 1.0 and float(var[0]) == 1.0


def _layer_pair(train, dtype=jnp.float32):
    fused = norm.norm_factory("fused", train, 0.9, 1e-3, dtype)
    ref = norm.norm_factory("flax", train, 0.9, 1e-3, dtype)

    class Wrap(nn.Module):
        impl: str

        @nn.compact
        def __call__(self, x):
            return (fused if self.impl == "fused" else ref)("bn")(x)

    return Wrap("fused"), Wrap("flax")


@pytest.mark.parametrize("train", [True, False])
def test_module_same_variables_and_update(train):
    """BatchNormAct has nn.BatchNorm's variable tree and running-average update, in train and eval mode."""
    fused, ref = _layer_pair(train)
    x = 1.0 + jax.random.normal(jax.random.key(0), (3, 4, 4, 5))
    v_ref = ref.init(jax.random.key(1), x)
    v_fused = fused.init(jax.random.key(1), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), v_fused) == jax.tree.map(lambda a: (a.shape, a.dtype), v_ref)
    v = jax.tree.map(lambda a: a + 0.3, v_ref)  # non-trivial statistics for eval mode
    y_f, u_f = fused.apply(v, x, mutable=["batch_stats"])
    y_r, u_r = ref.apply(v, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y_f, y_r, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), u_f, u_r)


def test_bfloat16_compute_keeps_float32_statistics():
    fused, ref = _layer_pair(True, jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    v = ref.init(jax.random.key(1), x)
    (y_f, u_f), (y_r, u_r) = fused.apply(v, x, mutable=["batch_stats"]), ref.apply(v, x, mutable=["batch_stats"])
    assert y_f.dtype == jnp.bfloat16 and u_f["batch_stats"]["bn"]["mean"].dtype == jnp.float32
    np.testing.assert_allclose(y_f.astype(jnp.float32), y_r.astype(jnp.float32), atol=0.02)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), u_f, u_r)


def test_unknown_choices():
    with pytest.raises(ValueError, match="norm implementation"):
        norm.norm_factory("fast", True, 0.9, 1e-3, jnp.float32)
    with pytest.raises(ValueError, match="activation"):
        norm.norm_factory("fused", True, 0.9, 1e-3, jnp.float32)("bn", act="relu")
