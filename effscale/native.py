"""effscale's own CPU kernels (effscale/kernels/*.cc), built on first use and called through XLA's FFI.

XLA:CPU has no depthwise-convolution kernel of its own: the shifted multiply-add forms in
effscale.model are the best it fuses, and their kernel gradient still writes every tap's input
window to memory before reducing it. `depthwise` runs the forward pass and both gradients as
loops over NHWC rows on XLA's intra-op thread pool, in less than half the time of the shifted
forms (benchmarks/train_step.py measures it). The same mathematics: float32 throughout, each output a
sum over the same taps; tests compare it with XLA's grouped convolution.

The library is compiled with the C++ compiler in $CXX (default g++) against the FFI headers that
jaxlib ships, tuned for this CPU (-march=native), and cached under $EFFSCALE_KERNEL_CACHE
(default ~/.cache/effscale/kernels) keyed by the source, jaxlib's version, the compiler and the
CPU's features; a second process loads it in milliseconds. Without a compiler `available()` says
why, and model.depthwise='auto' uses the pure-JAX 'shift_vjp' form instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = Path(__file__).parent / "kernels" / "depthwise_cpu.cc"
# The two -Wno flags silence warnings from jaxlib's FFI headers, not from effscale's source.
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-Wno-attributes", "-Wno-return-type")
TARGETS = {
    "effscale_depthwise_forward": "EffscaleDepthwiseForward",
    "effscale_depthwise_backward_input": "EffscaleDepthwiseBackwardInput",
    "effscale_depthwise_backward_kernel": "EffscaleDepthwiseBackwardKernel",
}
# The kernel gradient is summed in this many parts at most (one task each, the parts then added in
# a fixed order): enough to keep a 16-core pool busy, and the result does not depend on the thread count.
KERNEL_GRAD_PARTS = 16


class NativeKernelError(RuntimeError):
    """The CPU kernels could not be built or loaded (the message says why and what to do)."""


def cache_dir() -> Path:
    """Where built libraries are kept: $EFFSCALE_KERNEL_CACHE, else $XDG_CACHE_HOME (~/.cache)/effscale/kernels."""
    if os.environ.get("EFFSCALE_KERNEL_CACHE"):
        return Path(os.environ["EFFSCALE_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "effscale" / "kernels"


def _cpu_features() -> str:
    """The CPU's feature flags (-march=native builds for them, so a cache shared between machines must not mix)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise NativeKernelError(
            f"No C++ compiler {cxx!r} on PATH to build effscale's CPU kernels: install one "
            "(Debian: apt-get install g++) or set $CXX, or use model.depthwise='shift_vjp'."
        )
    return cxx


def library_path() -> Path:
    """The built library for this source, jaxlib, compiler and CPU, compiling it first if it is not cached.

    Compiles into a temporary file and renames it into place, so concurrent processes (pytest
    workers, the hosts of a sweep) never load a half-written library.
    """
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jaxlib.__version__, *version, *FLAGS, _cpu_features()):
        key.update(part if isinstance(part, bytes) else part.encode())
    out = cache_dir() / f"{SOURCE.stem}-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise NativeKernelError(
                f"Building effscale's CPU kernels failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}\n"
                "Use model.depthwise='shift_vjp' to run without them."
            )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def _load() -> None:
    """Builds (or finds) the library and registers its FFI targets with XLA, once per process."""
    lib = ctypes.cdll.LoadLibrary(str(library_path()))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")


@functools.cache
def unavailable_reason() -> str | None:
    """None when the CPU kernels are built and registered; otherwise why not (for messages and 'auto' choices)."""
    try:
        _load()
    except (NativeKernelError, OSError) as e:
        return str(e)
    return None


def available() -> bool:
    """Whether the CPU kernels can be used in this process (builds them on first call)."""
    return unavailable_reason() is None


Padding = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)), as lax.conv takes it


def _geometry(x_shape: tuple[int, ...], kh: int, kw: int, stride: int, padding: Padding):
    """The output shape and the kernels' attributes (stride, top and left padding)."""
    (top, bottom), (left, right) = padding
    n, h, w, c = x_shape
    out = (n, (h + top + bottom - kh) // stride + 1, (w + left + right - kw) // stride + 1, c)
    return out, {"stride": np.int64(stride), "pad_top": np.int64(top), "pad_left": np.int64(left)}


def _call(target: str, shape: tuple[int, ...], *args: jax.Array, **attrs: np.int64) -> jax.Array:
    _load()
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """Depthwise convolution of float32 NHWC `x` with a (kh, kw, 1, C) kernel on CPU.

    padding: ((top, bottom), (left, right)) zero rows / columns, as lax.conv_general_dilated takes it.
    """
    return _forward(x, kernel, stride, padding)[0]


def _forward(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding):
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
        raise TypeError(f"native.depthwise takes float32, got {x.dtype} and {kernel.dtype}.")
    kh, kw, c = kernel.shape[0], kernel.shape[1], x.shape[-1]
    out, attrs = _geometry(x.shape, kh, kw, stride, padding)
    y = _call("effscale_depthwise_forward", out, x, kernel.reshape(kh, kw, c), **attrs)
    return y, (x, kernel)


def _backward(stride: int, padding: Padding, residuals: tuple[jax.Array, jax.Array], g: jax.Array):
    """dx from g and the kernel; dk from x and g, in parts summed here (the residuals are x and the kernel only)."""
    x, kernel = residuals
    kh, kw, c = kernel.shape[0], kernel.shape[1], x.shape[-1]
    _, attrs = _geometry(x.shape, kh, kw, stride, padding)
    dx = _call("effscale_depthwise_backward_input", x.shape, g, kernel.reshape(kh, kw, c), **attrs)
    parts = (min(x.shape[0], KERNEL_GRAD_PARTS), kh, kw, c)
    dk = _call("effscale_depthwise_backward_kernel", parts, x, g, **attrs)
    return dx, jnp.sum(dk, axis=0).reshape(kernel.shape)


depthwise.defvjp(_forward, _backward)
