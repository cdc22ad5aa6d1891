"""Pure-functional flax.linen modules: squeeze-excite, MBConv and EfficientNet.

The modules read a `NetworkSpec` (effscale.spec) and add only runtime choices:
compute dtype, the depthwise-convolution implementation and rematerialisation.
Parameter and module names follow Keras applications (stem_conv, block2a_expand_conv,
..., top_conv, predictions) so that imported weights map by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effscale.spec import DTYPES, BlockSpec, NetworkSpec

DEPTHWISE_IMPLS = ("xla", "shift")
REMAT_POLICIES = ("none", "block", "dots_saveable", "nothing_saveable")

# Official initialisers: normal(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def depthwise_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """normal(0, sqrt(2 / (kh * kw))): TF's depthwise kernel has one output per input channel."""
    kh, kw = shape[0], shape[1]
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (kh * kw))


def dense_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """uniform(+-1 / sqrt(num_outputs)), the official classifier initialiser."""
    limit = 1.0 / math.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (the extra pixel goes bottom / right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
    """Depthwise convolution of NHWC `x` with a (kh, kw, 1, C) kernel, TF 'SAME' padding.

    impl='xla' lowers to one grouped convolution. impl='shift' writes the same sum
    as kh * kw shifted, broadcast multiply-adds: XLA:CPU lowers the backward pass of
    a grouped convolution as a dense one (jax #13800), while elementwise fusions it
    handles well in both directions.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    if impl == "xla":
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(stride, stride),
            padding=(same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    if impl != "shift":
        raise ValueError(f"Unknown depthwise implementation {impl!r}: choose one of {DEPTHWISE_IMPLS}.")
    n, h, w, c = x.shape
    pad_h, pad_w = same_padding(h, kh, stride), same_padding(w, kw, stride)
    oh, ow = -(-h // stride), -(-w // stride)
    xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                (1, stride, stride, 1),
            )
            term = patch * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Module):
    """Depthwise kxk convolution without bias; kernel stored as (kh, kw, 1, C) like Flax's grouped Conv."""

    kernel_size: int
    stride: int = 1
    impl: str = "shift"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", depthwise_kernel_init, (k, k, 1, x.shape[-1]), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return depthwise_conv(x, kernel, self.stride, self.impl)


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 conv (bias) -> swish -> 1x1 conv (bias) -> sigmoid gate."""

    reduced: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda features, name: nn.Conv(  # noqa: E731
            features, (1, 1), use_bias=True, kernel_init=conv_kernel_init, dtype=self.dtype, name=name
        )
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.swish(conv(self.reduced, "se_reduce")(s))
        s = nn.sigmoid(conv(x.shape[-1], "se_expand")(s))
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite and stochastic depth."""

    block: BlockSpec
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32
    depthwise: str = "shift"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.block
        norm = _norm_factory(train, self.bn_momentum, self.bn_epsilon, self.dtype)
        conv1x1 = _conv_factory(self.dtype)
        inputs = x
        if b.expand != 1:
            x = nn.swish(norm("expand_bn")(conv1x1(b.expanded_channels, "expand_conv")(x)))
        x = DepthwiseConv(b.kernel, b.stride, self.depthwise, self.dtype, name="dwconv")(x)
        x = nn.swish(norm("bn")(x))
        if b.se_channels:
            x = SqueezeExcite(b.se_channels, self.dtype, name="se")(x)
        x = norm("project_bn")(conv1x1(b.out_channels, "project_conv")(x))
        if b.residual:
            if b.drop_path > 0:
                # Per-sample stochastic depth: drop the whole residual branch, rescale the kept ones.
                x = nn.Dropout(b.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train, name="drop")(x)
            x = x + inputs
        return x


def _norm_factory(train: bool, momentum: float, epsilon: float, dtype: Any) -> Callable[[str], nn.Module]:
    return lambda name: nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _conv_factory(dtype: Any) -> Callable[..., nn.Module]:
    def conv(features: int, name: str, kernel: int = 1, stride: int = 1) -> nn.Module:
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=stride,
            padding="SAME",
            use_bias=False,
            kernel_init=conv_kernel_init,
            dtype=dtype,
            name=name,
        )

    return conv


def _remat_block(policy: str) -> type[MBConv]:
    if policy == "none":
        return MBConv
    if policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat policy {policy!r}: choose one of {REMAT_POLICIES}.")
    jax_policy = None if policy == "block" else getattr(jax.checkpoint_policies, policy)
    return nn.remat(MBConv, static_argnums=(2,), policy=jax_policy)


class EfficientNet(nn.Module):
    """EfficientNet described by `spec`.

    Returns float32 logits when `spec.include_top`; otherwise pooled features
    (pooling 'avg' / 'max') or the unpooled head feature map (pooling None).
    Call with `train=True` and `mutable=['batch_stats']` and a 'dropout' rng to train.
    """

    spec: NetworkSpec
    dtype: Any = jnp.float32
    depthwise: str = "shift"
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = self.spec
        norm = _norm_factory(train, s.bn_momentum, s.bn_epsilon, self.dtype)
        conv = _conv_factory(self.dtype)
        x = x.astype(self.dtype)
        x = nn.swish(norm("stem_bn")(conv(s.stem_channels, "stem_conv", kernel=3, stride=2)(x)))
        block_cls = _remat_block(self.remat)
        for b in s.blocks:
            x = block_cls(b, s.bn_momentum, s.bn_epsilon, self.dtype, self.depthwise, name=b.name)(x, train)
        x = nn.swish(norm("top_bn")(conv(s.head_channels, "top_conv")(x)))
        if s.pooling is None:
            return x.astype(jnp.float32)
        x = jnp.mean(x, axis=(1, 2)) if s.pooling == "avg" else jnp.max(x, axis=(1, 2))
        if not s.include_top:
            return x.astype(jnp.float32)
        if s.dropout > 0:
            x = nn.Dropout(s.dropout, deterministic=not train, name="top_dropout")(x)
        x = nn.Dense(s.num_classes, kernel_init=dense_kernel_init, dtype=self.dtype, name="predictions")(x)
        return x.astype(jnp.float32)


def check_runtime(model_config: Any) -> None:
    """Validates the runtime fields of a model config (dtype, depthwise, remat) before anything compiles."""
    dtype = model_config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {DTYPES}, got {dtype!r}.")
    impl = model_config.get("depthwise", "auto")
    if impl not in ("auto", *DEPTHWISE_IMPLS):
        raise ValueError(f"model.depthwise must be 'auto' or one of {DEPTHWISE_IMPLS}, got {impl!r}.")
    remat = model_config.get("remat", "none")
    if remat not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {REMAT_POLICIES}, got {remat!r}.")


def default_depthwise(platform: str | None = None) -> str:
    """'shift' on CPU (XLA:CPU's grouped-conv backward is dense), XLA's grouped convolution elsewhere."""
    platform = platform or jax.default_backend()
    return "shift" if platform == "cpu" else "xla"


def create(spec: NetworkSpec, model_config: Any) -> EfficientNet:
    """The EfficientNet module for `spec` with the config's runtime choices, validated."""
    check_runtime(model_config)
    impl = model_config.get("depthwise", "auto")
    return EfficientNet(
        spec,
        dtype=jnp.bfloat16 if model_config.get("dtype", "float32") == "bfloat16" else jnp.float32,
        depthwise=default_depthwise() if impl == "auto" else impl,
        remat=model_config.get("remat", "none"),
    )
