"""One framework's measurement, run in a process of its own by benchmarks/train_step.py.

    python benchmarks/workers.py '<json job>'

The job names the framework, the workload (resolution, batch, classes, steps) and, for
effscale, the resolved model / train config. The worker prints one JSON line prefixed
with RESULT: train and inference step times, compile (first-step) time, XLA's memory
figures where there are any, and the process's peak RSS after the train phase and at
the end. A process of its own per framework keeps peak RSS honest (nothing else lives
in it) and lets the parent alternate frameworks round-robin. Process settings (XLA flags,
huge pages) arrive in the environment the parent starts it with.

Each worker times the step a user of that framework would write for the official
recipe: RMSProp with momentum, L2 weight decay, label-smoothed cross-entropy, an
exponential moving average of the weights and BatchNorm in training mode, with the
same timing loop (`measure`) for every framework.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Frameworks are imported inside their runner, so a worker's peak RSS holds only its own framework.


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_steps(step: Callable[[], Any], warmup: int, steps: int, max_seconds: float) -> tuple[list[float], float]:
    """Runs `step` (which must block until its result is ready) and returns per-step seconds after warm-up.

    The first call's time is returned separately: it holds compilation / tracing for the
    frameworks that compile lazily. At least two steps are timed even past `max_seconds`,
    so a slow framework still gets a median, just over fewer steps.
    """
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    times: list[float] = []
    budget_start = time.perf_counter()
    while len(times) < steps:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if len(times) >= 2 and time.perf_counter() - budget_start > max_seconds:
            break
    return times, first


def _summary(times: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {"step_s": med, "images_per_s": batch / med, "steps_timed": len(times), "step_times_s": times}


def measure(
    out: dict[str, Any],
    job: dict[str, Any],
    train_once: Callable[[], Any],
    make_infer: Callable[[], Callable[[], Any]],
) -> dict[str, Any]:
    """Times the train phase, then (unless train-only) the inference phase, into `out`; the same for every framework.

    `make_infer` is called between the phases: it may hand the train state over to inference
    and compile, outside the timed steps.
    """
    batch = job["batch"]
    times, first = time_steps(train_once, job["warmup"], job["steps"], job["max_seconds"])
    out["train"] = _summary(times, batch)
    out["train_first_step_s"] = first
    out["peak_rss_after_train_bytes"] = peak_rss_bytes()
    if not job.get("train_only"):
        times, _ = time_steps(make_infer(), 2, job["steps"], job["max_seconds"])
        out["infer"] = _summary(times, batch)
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


# ---------------------------------------------------------------------------
# effscale


def _effscale_step(job: dict[str, Any]) -> tuple[Any, Any, Any, Callable]:
    """(network spec, module, optimizer, the trainer's train step) for `job`'s model and train configs."""
    import functools

    import ml_collections

    from effscale import model, optim, spec, train

    model_cfg = ml_collections.ConfigDict(job["model"])
    train_cfg = ml_collections.ConfigDict(job["train"])
    net = spec.build(model_cfg)
    module = model.create(net, model_cfg)
    # A schedule over a nominal epoch length: only its value at the step matters for speed.
    lr = optim.schedule(train_cfg, 1000, 100_000)
    tx = optim.create(train_cfg, lr)
    step = functools.partial(
        train.train_step,
        module=module,
        tx=tx,
        lr=lr,
        num_classes=net.num_classes,
        label_smoothing=float(train_cfg.label_smoothing),
        ema=float(train_cfg.ema_decay),
        seed=0,
    )
    return net, module, tx, step


def _effscale_info(module: Any) -> dict[str, Any]:
    """The platform and the module's runtime choices, for the result row."""
    import jax
    import jax.numpy as jnp

    return {
        "platform": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "depthwise": module.depthwise,
        "pointwise": getattr(module, "pointwise", None),
        "norm": module.norm,
        "dtype": str(jnp.dtype(module.dtype)),
        "remat": module.remat,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _effscale_batch(net: Any, size: int) -> dict[str, Any]:
    """A fixed random batch of `size` images and labels shaped for `net`."""
    import jax.numpy as jnp
    import numpy as np

    r = net.resolution
    rng = np.random.default_rng(0)
    return {
        "image": jnp.asarray(rng.standard_normal((size, r, r, net.in_channels), np.float32)),
        "label": jnp.asarray(rng.integers(0, net.num_classes, (size,), np.int32)),
    }


def _compile_train(step: Callable, state: Any, batch: dict[str, Any], out: dict[str, Any], malloc_trim: bool) -> Any:
    """Compiles the train step, recording its compile time, memory and the RSS after it into `out`."""
    import jax

    from effscale import host

    # Donating the state as the trainer does: XLA updates it in place (less memory, fewer copies).
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    out["train_compile_s"] = time.perf_counter() - t0
    out["train_memory"] = _memory_analysis(compiled)
    out["rss_after_compile_bytes"] = peak_rss_bytes()
    if malloc_trim:
        host.return_freed_memory()  # as the trainer does after compiling
    return compiled


def _inference_compiler(
    module: Any, holder: dict[str, Any], image: Any, out: dict[str, Any]
) -> Callable[[], Callable[[], Any]]:
    """A function that takes the train state from `holder`, compiles inference on it and returns one inference step."""
    import jax

    def compile_infer() -> Callable[[], Any]:
        s = holder.pop("state")
        variables = {"params": s.params, "batch_stats": s.batch_stats}
        t0 = time.perf_counter()
        infer = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(variables, image).compile()
        out["infer_compile_s"] = time.perf_counter() - t0
        out["infer_memory"] = _memory_analysis(infer)
        return lambda: infer(variables, image).block_until_ready()

    return compile_infer


def run_effscale(job: dict[str, Any]) -> dict[str, Any]:
    """The trainer's own train step (effscale.train.train_step) and a jitted inference forward."""
    import jax

    from effscale import train

    net, module, tx, step = _effscale_step(job)
    out = _effscale_info(module)
    state = jax.jit(lambda: train.init_state(module, tx, 0, net))()
    batch = _effscale_batch(net, job["batch"])
    compiled = _compile_train(step, state, batch, out, bool(job.get("malloc_trim")))
    holder = {"state": state}
    compile_infer = _inference_compiler(module, holder, batch["image"], out)
    if job.get("compile_only"):
        compile_infer()
        out["peak_rss_bytes"] = peak_rss_bytes()
        return out

    def train_once() -> None:
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready((holder["state"], metrics))

    return measure(out, job, train_once, compile_infer)


def _memory_analysis(compiled: Any) -> dict[str, int] | None:
    """XLA's static memory figures of a compiled executable (bytes), where the backend reports them."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (some backends do not implement it)
        return None
    if m is None:
        return None
    fields = ("argument", "output", "alias", "temp", "generated_code")
    return {f: int(getattr(m, f"{f}_size_in_bytes", 0)) for f in fields}


# ---------------------------------------------------------------------------
# PyTorch + timm


def _torchvision_without_ops() -> None:
    """Lets `import timm` work with a torchvision whose C++ ops cannot load (a CUDA wheel beside CPU torch).

    Unavoidable with PyPI alone: its Linux torchvision wheels are CUDA builds (the CPU builds are
    on PyTorch's own package index), and next to a CPU-only torch their ops library fails to load.
    timm imports torchvision (for FrozenBatchNorm2d and data transforms) but EfficientNet needs
    none of its C++ ops; torchvision's import stops at registering fake kernels for two ops it
    never defined. Declaring those two schemas first (no kernels) lets it import; nothing here
    calls them. With a torchvision whose ops load, this only loads them.
    """
    import importlib.util
    import pathlib

    import torch

    found = importlib.util.find_spec("torchvision")
    if found is None or found.origin is None:
        return
    libs = sorted(pathlib.Path(found.origin).parent.glob("_C*.so"))
    try:
        if libs:
            torch.ops.load_library(str(libs[0]))
            return
    except OSError:
        pass
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _timm_model(job: dict[str, Any], device: Any, fmt: Any) -> Any:
    """timm's EfficientNet for `job`, on `device` in memory format `fmt` (call after _torchvision_without_ops)."""
    import timm

    net = timm.create_model(
        job["timm_model"], num_classes=job["num_classes"], drop_rate=job["dropout"], drop_path_rate=job["drop_path"]
    )
    return net.to(device=device, memory_format=fmt)


def _torch_batch(job: dict[str, Any], device: Any, fmt: Any) -> tuple[Any, Any]:
    """A fixed random batch (images, labels) of `job`'s size on `device`."""
    import torch

    b, r = job["batch"], job["resolution"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, r, r, generator=gen).to(device=device, memory_format=fmt)
    y = torch.randint(0, job["num_classes"], (b,), generator=gen).to(device)
    return x, y


def _torch_steps(
    net: Any, t: dict[str, Any], x: Any, y: Any, cuda: bool
) -> tuple[Callable[[], None], Callable[[], Callable[[], None]]]:
    """(one train step, a function that switches to inference and returns one inference step) for the recipe `t`."""
    import torch

    opt = torch.optim.RMSprop(
        net.parameters(),
        lr=t["learning_rate"],
        alpha=t["rmsprop_decay"],
        eps=t["epsilon"],
        momentum=t["momentum"],
        weight_decay=t["weight_decay"],
    )
    ema = [p.detach().clone() for p in net.parameters()]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=t["label_smoothing"])
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def amp() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def train_once() -> None:
        net.train()
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1.0 - t["ema_decay"])
        sync()

    def make_infer() -> Callable[[], None]:
        opt.zero_grad(set_to_none=True)
        net.eval()

        def infer_once() -> None:
            with torch.inference_mode(), amp():
                net(x)
            sync()

        return infer_once

    return train_once, make_infer


def run_torch(job: dict[str, Any], channels_last: bool) -> dict[str, Any]:
    """timm's efficientnet_b<N> with torch.optim.RMSprop, label smoothing and a weight EMA.

    On a GPU the step uses automatic mixed precision (bfloat16 autocast) and channels_last,
    as a user after speed would.
    """
    import torch

    _torchvision_without_ops()
    import timm

    if job.get("torch_threads"):
        # torch's OpenMP threads spin at barriers: with another busy process on a small machine,
        # 2 threads can run many times slower than 1, so the benchmark can pin the count.
        torch.set_num_threads(job["torch_threads"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    channels_last = channels_last or cuda
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = _timm_model(job, device, fmt)
    x, y = _torch_batch(job, device, fmt)
    train_once, make_infer = _torch_steps(net, job["train_cfg"], x, y, cuda)
    out: dict[str, Any] = {
        "platform": "gpu" if cuda else "cpu",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
    }
    return measure(out, job, train_once, make_infer)


# ---------------------------------------------------------------------------
# Keras 3


def run_keras(job: dict[str, Any], backend: str) -> dict[str, Any]:
    """keras.applications.EfficientNetB<N> trained with train_on_batch (RMSprop with EMA, label smoothing)."""
    os.environ["KERAS_BACKEND"] = backend  # Keras reads it once, on import: this process is the worker's own
    import keras
    import numpy as np

    t = job["train_cfg"]
    b, r, n = job["batch"], job["resolution"], job["num_classes"]
    app = getattr(keras.applications, f"EfficientNet{job['preset'].upper()}")
    net = app(weights=None, input_shape=(r, r, 3), classes=n)
    net.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=t["learning_rate"],
            rho=t["rmsprop_decay"],
            momentum=t["momentum"],
            epsilon=t["epsilon"],
            weight_decay=t["weight_decay"],
            use_ema=t["ema_decay"] > 0,
            ema_momentum=t["ema_decay"],
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t["label_smoothing"]),
        jit_compile=job.get("keras_jit", "auto"),
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, r, r, 3), np.float32)
    y = np.eye(n, dtype=np.float32)[rng.integers(0, n, b)]
    # Keras returns host scalars from train_on_batch / numpy from predict_on_batch: each call blocks.
    out: dict[str, Any] = {"platform": keras.backend.backend(), "keras": keras.__version__}
    return measure(out, job, lambda: net.train_on_batch(x, y), lambda: lambda: net.predict_on_batch(x))


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "effscale": run_effscale,
    "torch_cl": lambda job: run_torch(job, channels_last=True),
    "torch": lambda job: run_torch(job, channels_last=False),
    "keras_tf": lambda job: run_keras(job, "tensorflow"),
    "keras_jax": lambda job: run_keras(job, "jax"),
}


def main(argv: list[str]) -> None:
    """Entry point of a worker process: one JSON job in, one RESULT: JSON line out."""
    job = json.loads(argv[1])
    runner = RUNNERS.get(job["framework"])
    if runner is None:
        raise ValueError(f"Unknown framework {job['framework']!r}: choose from {', '.join(RUNNERS)}.")
    # GLIBC_TUNABLES as this process started (effscale.host's huge pages, or not).
    result = {"framework": job["framework"], "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), **runner(job)}
    print("RESULT:" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
