"""Pure-functional flax.linen modules: squeeze-excite, MBConv and EfficientNet.

The modules build the layers that `effscale.layers` describes for a `NetworkSpec` (names,
kinds, channels, kernels, strides) and add only runtime choices: compute dtype, the depthwise,
pointwise and BatchNorm implementations, and rematerialisation. Parameter and module names
follow Keras applications (stem_conv, block2a_expand_conv, ..., top_conv, predictions) so that
imported weights map by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effscale import layers, native
from effscale.layers import Layer
from effscale.norm import NORM_IMPLS, norm_factory
from effscale.spec import DTYPES, BlockSpec, NetworkSpec

DEPTHWISE_IMPLS = ("xla", "shift", "shift_vjp", "native")
POINTWISE_IMPLS = ("conv", "dot")
REMAT_POLICIES = ("none", "block", "dots_saveable", "nothing_saveable")
HEAD_INITS = ("uniform", "zeros")
RESIDUAL_BN_INITS = ("ones", "zeros")

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


def _head_init(kind: str) -> Callable[..., jax.Array]:
    if kind not in HEAD_INITS:
        raise ValueError(f"model.head_init must be one of {HEAD_INITS}, got {kind!r}.")
    return dense_kernel_init if kind == "uniform" else nn.initializers.zeros


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (the extra pixel goes bottom / right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


Rows = range | set[int]  # indices of a padded axis that hold data


def _live_taps(kernel: int, stride: int, out: int, data_rows: Rows) -> list[int]:
    """Taps i whose rows i, i + stride, ..., i + (out - 1) * stride meet a row that holds data (not padding).

    On small feature maps most taps of a 5x5 kernel read only padding (on a 2x2 map, 16 of 25;
    on 1x1, all but the centre): their products are zeros and are not computed.
    """
    return [i for i in range(kernel) if any(i + t * stride in data_rows for t in range(out))]


def _tap(xp: jax.Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> jax.Array:
    """xp[:, i::stride, j::stride] cut to out_h x out_w: the input window that kernel tap (i, j) multiplies."""
    n, c = xp.shape[0], xp.shape[3]
    end = (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c)
    return lax.slice(xp, (0, i, j, 0), end, (1, stride, stride, 1))


def _shifted_sum(xp: jax.Array, kernel: jax.Array, stride: int, out_h: int, out_w: int, rows: Rows, cols: Rows):
    """Sum over live taps (i, j) of _tap(xp, i, j) * kernel[i, j, 0]: the depthwise core.

    rows / cols: the indices of xp's rows / columns that hold data (the rest is padding).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    out = None
    for i in _live_taps(kh, stride, out_h, rows):
        for j in _live_taps(kw, stride, out_w, cols):
            term = _tap(xp, i, j, stride, out_h, out_w) * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def _pad_same(x: jax.Array, kh: int, kw: int, stride: int) -> tuple[jax.Array, range, range]:
    """x with TF 'SAME' padding, and the rows / columns of the padded array that hold x."""
    h, w = x.shape[1], x.shape[2]
    pad_h, pad_w = same_padding(h, kh, stride), same_padding(w, kw, stride)
    xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    return xp, range(pad_h[0], pad_h[0] + h), range(pad_w[0], pad_w[0] + w)


def _depthwise_shift(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    xp, rows, cols = _pad_same(x, kernel.shape[0], kernel.shape[1], stride)
    return _shifted_sum(xp, kernel, stride, -(-x.shape[1] // stride), -(-x.shape[2] // stride), rows, cols)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_shift_vjp(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return _depthwise_shift(x, kernel, stride)


def _depthwise_shift_vjp_fwd(x: jax.Array, kernel: jax.Array, stride: int):
    return _depthwise_shift(x, kernel, stride), (x, kernel)


def _depthwise_shift_vjp_bwd(stride: int, res: tuple[jax.Array, jax.Array], g: jax.Array):
    """Both gradients as shifted multiply-adds / reductions, never a (dense) convolution.

    Keeps only x for the backward pass (autodiff of the shifted sum keeps every tap's window,
    k * k activation-sized arrays). dx is the transposed convolution: g dilated by the stride
    (zeros between pixels, done by lax.pad's interior padding), padded so that every output
    pixel sees its kh x kw window, then the same shifted sum with the kernel flipped.
    dkernel[i, j] is the sum over (n, y, x) of g times the input window that tap (i, j) saw in
    the forward pass (zero for taps that saw only padding).
    """
    x, kernel = res
    kh, kw = kernel.shape[0], kernel.shape[1]
    _, h, w, c = x.shape
    oh, ow = g.shape[1], g.shape[2]
    xp, rows, cols = _pad_same(x, kh, kw, stride)
    # P[t] = dilated_g[t + top - (kh - 1)], top = rows.start (the forward pass's top padding);
    # lax.pad accepts the negative edge padding this may need.
    lo_h, lo_w = kh - 1 - rows.start, kw - 1 - cols.start
    hi_h = h + kh - 1 - lo_h - ((oh - 1) * stride + 1)
    hi_w = w + kw - 1 - lo_w - ((ow - 1) * stride + 1)
    zero = jnp.zeros((), g.dtype)
    gp = lax.pad(g, zero, ((0, 0, 0), (lo_h, hi_h, stride - 1), (lo_w, hi_w, stride - 1), (0, 0, 0)))
    g_rows = {lo_h + m * stride for m in range(oh)}
    g_cols = {lo_w + m * stride for m in range(ow)}
    dx = _shifted_sum(gp, kernel[::-1, ::-1], 1, h, w, g_rows, g_cols)
    live_i, live_j = _live_taps(kh, stride, oh, rows), _live_taps(kw, stride, ow, cols)
    taps = [
        jnp.sum(_tap(xp, i, j, stride, oh, ow) * g, axis=(0, 1, 2))
        if i in live_i and j in live_j
        else jnp.zeros((c,), g.dtype)
        for i in range(kh)
        for j in range(kw)
    ]
    dk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


_depthwise_shift_vjp.defvjp(_depthwise_shift_vjp_fwd, _depthwise_shift_vjp_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
    """Depthwise convolution of NHWC `x` with a (kh, kw, 1, C) kernel, TF 'SAME' padding.

    impl='xla' lowers to one grouped convolution. impl='shift' writes the same sum
    as kh * kw shifted, broadcast multiply-adds: XLA:CPU lowers the backward pass of
    a grouped convolution as a dense one (jax #13800), while elementwise fusions it
    handles well in both directions. impl='shift_vjp' is the same forward pass with a
    hand-written backward pass (also shifted multiply-adds and reductions). impl='native' runs
    effscale's own CPU kernels (effscale.native) in float32; other dtypes take 'shift_vjp'.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    padding = (same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride))
    if impl == "native":
        if x.dtype == jnp.float32 and kernel.dtype == jnp.float32:
            return native.depthwise(x, kernel, stride, padding)
        impl = "shift_vjp"
    if impl == "xla":
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(stride, stride),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    if impl == "shift":
        return _depthwise_shift(x, kernel, stride)
    if impl == "shift_vjp":
        return _depthwise_shift_vjp(x, kernel, stride)
    raise ValueError(f"Unknown depthwise implementation {impl!r}: choose one of {DEPTHWISE_IMPLS}.")


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


class PointwiseDot(nn.Module):
    """A 1x1, stride-1 convolution without bias written as one matmul over the channel axis of NHWC.

    Same parameter ('kernel', shape (1, 1, in, out)) and mathematics as nn.Conv with a 1x1 kernel;
    XLA:CPU runs the dot_general (forward and both gradients) faster than the convolution it
    lowers nn.Conv to (benchmarks/train_step.py measures it).
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", conv_kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        # As a 2-D matmul over flattened pixels: the kernel gradient then contracts one axis of two 2-D
        # arrays, which XLA:CPU runs in place; contracting (N, H, W) of 4-D arrays, its dot canonicalisation
        # made a transposed copy of the output gradient first.
        y = lax.dot_general(x.reshape(-1, x.shape[-1]), kernel[0, 0], (((1,), (0,)), ((), ())))
        return y.reshape(*x.shape[:-1], self.features)


def _activate(x: jax.Array, act: str) -> jax.Array:
    if act == "swish":
        return nn.swish(x)
    if act == "sigmoid":
        return nn.sigmoid(x)
    return x


def _layer_runner(
    dtype: Any,
    pointwise: str = "conv",
    depthwise: str = "shift",
    norm: Callable[..., Callable[[jax.Array], jax.Array]] | None = None,
    train: bool = False,
    *,
    zero_bn: str | None = None,
    still: bool = False,
    head_init: str = "uniform",
) -> Callable[[Layer, jax.Array], jax.Array]:
    """`run(layer, x)`: creates the described layer in the calling module's scope and applies it, activation included.

    zero_bn: the BatchNorm whose scale starts at 0 (a residual block that starts as the identity);
    still: stochastic depth off (the block's output BatchNorm is frozen).
    """
    conv = _conv_factory(dtype, pointwise)

    def run(layer: Layer, x: jax.Array) -> jax.Array:
        kind = layer.kind
        if kind == layers.BN:
            scale_init = nn.initializers.zeros if layer.name == zero_bn else nn.initializers.ones
            return norm(layer.name, layer.act, scale_init)(x)  # the activation is part of the (fused) BatchNorm
        if kind == layers.CONV:
            x = conv(layer.c_out, layer.name, layer.kernel, layer.stride, layer.bias)(x)
        elif kind == layers.DEPTHWISE:
            x = DepthwiseConv(layer.kernel, layer.stride, depthwise, dtype, name=layer.name)(x)
        elif kind == layers.SE:
            x = SqueezeExcite(layer, dtype, name=layer.name)(x)
        elif kind == layers.AVG_POOL:
            x = jnp.mean(x, axis=(1, 2))
        elif kind == layers.MAX_POOL:
            x = jnp.max(x, axis=(1, 2))
        elif kind == layers.DENSE:
            init = {"kernel_init": _head_init(head_init)} if layer.name == layers.HEAD_MODULE else {}
            x = nn.Dense(layer.c_out, dtype=dtype, name=layer.name, **init)(x)
        elif kind == layers.DROPOUT:
            x = nn.Dropout(layer.rate, deterministic=not train, name=layer.name)(x)
        elif kind == layers.DROP_PATH:
            # Per-sample stochastic depth: drop the whole residual branch, rescale the kept ones.
            x = nn.Dropout(layer.rate, broadcast_dims=(1, 2, 3), deterministic=not train or still, name=layer.name)(x)
        else:
            raise ValueError(f"Unknown layer kind {kind!r}: choose one of {layers.KINDS}.")
        return _activate(x, layer.act)

    return run


class SqueezeExcite(nn.Module):
    """Squeeze-excite as `layer` (kind 'se') describes it: the input times the output of its parts."""

    layer: Layer
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        run = _layer_runner(self.dtype)
        s = x
        for part in self.layer.parts:
            # The squeeze keeps 1x1 spatial dims: the gate comes from convolutions and broadcasts back over x.
            s = jnp.mean(s, axis=(1, 2), keepdims=True) if part.kind == layers.AVG_POOL else run(part, s)
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite and stochastic depth: the layers `layers.block` describes."""

    block: BlockSpec
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32
    depthwise: str = "shift"
    frozen_bn: frozenset[str] = frozenset()  # local names: 'expand_bn', 'bn', 'project_bn'
    pointwise: str = "conv"
    residual_bn_init: str = "ones"  # 'zeros': a residual block starts as the identity
    norm: str = "flax"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.block
        described = layers.block(b)
        last_bn = [layer.name for layer in described if layer.kind == layers.BN][-1]  # ends the residual branch
        norm = norm_factory(self.norm, train, self.bn_momentum, self.bn_epsilon, self.dtype, self.frozen_bn)
        run = _layer_runner(
            self.dtype,
            self.pointwise,
            self.depthwise,
            norm,
            train,
            zero_bn=last_bn if b.residual and self.residual_bn_init == "zeros" else None,
            # Like Keras' base(training=False), a block whose output BatchNorm is frozen (transfer learning)
            # gives the same features in training as in evaluation: no stochastic depth.
            still=last_bn in self.frozen_bn,
        )
        inputs = x
        for layer in described:
            x = run(layer, x)
        return x + inputs if b.residual else x


def _conv_factory(dtype: Any, pointwise: str = "conv") -> Callable[..., nn.Module]:
    if pointwise not in POINTWISE_IMPLS:
        raise ValueError(f"Unknown pointwise implementation {pointwise!r}: choose one of {POINTWISE_IMPLS}.")

    def conv(features: int, name: str, kernel: int = 1, stride: int = 1, bias: bool = False) -> nn.Module:
        if kernel == 1 and stride == 1 and not bias and pointwise == "dot":
            return PointwiseDot(features, dtype, name=name)
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=stride,
            padding="SAME",
            use_bias=bias,
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
    """EfficientNet described by `spec`: the layers of `layers.network(spec)`.

    Returns float32 logits when `spec.include_top`; otherwise pooled features
    (pooling 'avg' / 'max') or the unpooled head feature map (pooling None).
    Call with `train=True` and `mutable=['batch_stats']` and a 'dropout' rng to train.
    """

    spec: NetworkSpec
    dtype: Any = jnp.float32
    depthwise: str = "shift"
    remat: str = "none"
    frozen_bn: frozenset[str] = frozenset()  # '/'-joined paths, from effscale.transfer.frozen_batchnorm
    pointwise: str = "conv"
    # Initialisation (the same network; only the starting point differs). The official one is the default.
    head_init: str = "uniform"  # 'uniform' (official +-1/sqrt(classes)) | 'zeros' (the loss starts at log(classes))
    residual_bn_init: str = "ones"  # 'zeros': each residual block's last BN gamma starts at 0 (block = identity)
    norm: str = "flax"  # 'fused': BatchNorm + activation with effscale.norm's backward pass (same mathematics)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = self.spec
        norm = norm_factory(self.norm, train, s.bn_momentum, s.bn_epsilon, self.dtype, self.frozen_bn)
        run = _layer_runner(self.dtype, self.pointwise, self.depthwise, norm, train, head_init=self.head_init)
        x = x.astype(self.dtype)
        for layer in layers.stem(s):
            x = run(layer, x)
        block_cls = _remat_block(self.remat)
        for b in s.blocks:
            local = frozenset(p.split("/", 1)[1] for p in self.frozen_bn if p.startswith(b.name + "/"))
            x = block_cls(
                b,
                s.bn_momentum,
                s.bn_epsilon,
                self.dtype,
                self.depthwise,
                local,
                self.pointwise,
                self.residual_bn_init,
                self.norm,
                name=b.name,
            )(x, train)
        for layer in layers.head(s):
            x = run(layer, x)
        return x.astype(jnp.float32)


def check_runtime(model_config: Any) -> None:
    """Validates a model config's runtime and initialisation fields before anything compiles."""
    dtype = model_config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {DTYPES}, got {dtype!r}.")
    impl = model_config.get("depthwise", "auto")
    if impl not in ("auto", *DEPTHWISE_IMPLS):
        raise ValueError(f"model.depthwise must be 'auto' or one of {DEPTHWISE_IMPLS}, got {impl!r}.")
    if impl == "native":
        if jax.default_backend() != "cpu":
            raise ValueError(
                f"model.depthwise='native' is a CPU kernel, but jax runs on {jax.default_backend()}: "
                "use 'auto' (XLA's grouped convolution there)."
            )
        if not native.available():
            raise ValueError(f"model.depthwise='native' is not available: {native.unavailable_reason()}")
    pointwise = model_config.get("pointwise", "auto")
    if pointwise not in ("auto", *POINTWISE_IMPLS):
        raise ValueError(f"model.pointwise must be 'auto' or one of {POINTWISE_IMPLS}, got {pointwise!r}.")
    norm = model_config.get("norm", "auto")
    if norm != "auto" and norm not in NORM_IMPLS:
        raise ValueError(f"model.norm must be 'auto' or one of {NORM_IMPLS}, got {norm!r}.")
    remat = model_config.get("remat", "none")
    if remat not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {REMAT_POLICIES}, got {remat!r}.")
    head_init = model_config.get("head_init", "uniform")
    if head_init not in HEAD_INITS:
        raise ValueError(f"model.head_init must be one of {HEAD_INITS}, got {head_init!r}.")
    residual_bn_init = model_config.get("residual_bn_init", "ones")
    if residual_bn_init not in RESIDUAL_BN_INITS:
        raise ValueError(f"model.residual_bn_init must be one of {RESIDUAL_BN_INITS}, got {residual_bn_init!r}.")


def default_depthwise(platform: str | None = None) -> str:
    """On CPU effscale's own kernels ('native') where they build, else 'shift_vjp'; XLA's grouped convolution elsewhere.

    XLA:CPU lowers the grouped convolution's backward pass as a dense one (jax #13800). On B0
    train steps 'native' is the fastest and 'shift_vjp' the fastest pure-JAX form (its hand-written
    backward keeps one activation per layer instead of k * k tap windows); benchmarks/train_step.py
    compares them. With several local devices 'native' is not chosen: XLA cannot split its custom
    calls over a batch-sharded mesh and would gather every activation to each device.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return "xla"
    return "native" if jax.local_device_count() == 1 and native.available() else "shift_vjp"


def default_pointwise(platform: str | None = None) -> str:
    """'dot' on CPU (XLA:CPU's matmul beats its 1x1 convolution, forward and backward), 'conv' elsewhere."""
    platform = platform or jax.default_backend()
    return "dot" if platform == "cpu" else "conv"


def default_norm(platform: str | None = None) -> str:
    """'fused' on CPU (faster and smaller there, see effscale.norm); flax's BatchNorm elsewhere (not measured)."""
    platform = platform or jax.default_backend()
    return "fused" if platform == "cpu" else "flax"


def create(spec: NetworkSpec, model_config: Any, frozen_bn: frozenset[str] = frozenset()) -> EfficientNet:
    """The EfficientNet module for `spec` with the config's runtime choices, validated.

    `frozen_bn` names BatchNorm layers ('block6a/bn', 'top_bn', ...) that keep and use their
    running statistics in training (transfer learning; see effscale.transfer.frozen_batchnorm).
    """
    check_runtime(model_config)
    impl = model_config.get("depthwise", "auto")
    pointwise = model_config.get("pointwise", "auto")
    norm = model_config.get("norm", "auto")
    return EfficientNet(
        spec,
        dtype=jnp.bfloat16 if model_config.get("dtype", "float32") == "bfloat16" else jnp.float32,
        depthwise=default_depthwise() if impl == "auto" else impl,
        pointwise=default_pointwise() if pointwise == "auto" else pointwise,
        remat=model_config.get("remat", "none"),
        frozen_bn=frozenset(frozen_bn),
        head_init=model_config.get("head_init", "uniform"),
        residual_bn_init=model_config.get("residual_bn_init", "ones"),
        norm=default_norm() if norm == "auto" else norm,
    )


def abstract_variables(module: EfficientNet) -> Any:
    """The module's variables (params, batch_stats) as shapes and dtypes: `jax.eval_shape`, nothing computed."""
    n = module.spec
    x = jax.ShapeDtypeStruct((1, n.resolution, n.resolution, n.in_channels), jnp.float32)
    return jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x, train=False), x)
