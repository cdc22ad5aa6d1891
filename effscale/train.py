"""Training and evaluation of one network: `train_and_evaluate(config, workdir) -> record`.

The config is turned into a network description (effscale.spec) once; the train
and eval steps are pure functions compiled once each with `jax.jit` over a
data-parallel mesh (state replicated, batches sharded, state buffers donated).
The host loop around them owns every side effect: data, checkpoints, logs,
signals and the final, atomically written result.json.

Resume: the step is the data position, the dropout key is derived from (seed, step),
so a run resumed from a checkpoint continues exactly as an uninterrupted one would.

Transfer learning (configs/transfer/): `config.init` imports weights before step 0
(Keras / timm files via effscale.convert, or another effscale workdir), and
`config.transfer` freezes parts of the network, optionally in phases (e.g. the head
alone, then the top blocks at a lower learning rate). Each phase has its own
optimizer (state only for what trains, fresh at the phase's start), its own
compiled step and, for frozen BatchNorms, its own module. A checkpoint's phase is
the one its step falls in (phase k trains steps start_k+1 .. end_k; the boundaries
are part of the workdir's fingerprint, so they cannot change under a run), which
is all a resume needs: the optimizer state is restored in the shape of that phase.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import functools
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from effscale import checkpoint, complexity, convert, model, optim, parallel, record, spec, transfer

Batch = Mapping[str, jax.Array]
# Progress lines go to their own logger: absl's is flooded by orbax's INFO messages.
log = logging.getLogger("effscale")


class ConfigError(ValueError):
    """The config or the workdir cannot be used; raised before anything is compiled or trained."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class Interrupted(Exception):  # noqa: N818 (a state, not an error)
    """The run was stopped by a signal or preemption after saving a checkpoint; rerun to resume."""

    def __init__(self, step: int, signum: int | None, workdir: str, reason: str = "preemption"):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name if signum else reason
        super().__init__(f"Stopped by {name} at step {step}; checkpoint saved in {workdir}. Rerun to resume.")


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; the unit that is checkpointed."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any


# ---------------------------------------------------------------------------
# Pure parts: config resolution, state, steps.


def resolve(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, Any, spec.NetworkSpec]:
    """Validates `config` and fixes what it leaves to the dataset.

    Returns a copy with `model.num_classes` filled in (when None) from the dataset,
    the dataset's info and the network description. Raises ValueError on a bad field.
    """
    from effscale import data

    config = copy.deepcopy(config)
    info = data.dataset_info(config.data)
    with config.unlocked():
        if config.model.num_classes is None:
            config.model.num_classes = int(info.num_classes)
    optim.check(config.train)
    model.check_runtime(config.model)
    net = spec.build(config.model)
    if net.include_top and net.num_classes != info.num_classes:
        raise ValueError(
            f"model.num_classes={net.num_classes} but {info.name} has {info.num_classes} classes; "
            "leave model.num_classes unset to take it from the dataset."
        )
    return config, info, net


def fingerprint(net: spec.NetworkSpec, dataset: str, config: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
    """What a workdir's checkpoints are of: the full network description and the dataset.

    With `config`, also the data subset, initial weights and freezing / phases, but only when
    they differ from the defaults: workdirs of ordinary runs keep the fingerprint they had.
    """
    out: dict[str, Any] = {"dataset": dataset, "network": dataclasses.asdict(net)}
    if config is None:
        return out
    d = config.data
    if d.get("classes") or d.get("train_examples"):
        out["subset"] = {"classes": d.classes, "train_examples": d.train_examples}
    init = config.get("init")
    if init is not None and init.weights:
        out["init"] = {"weights": os.path.abspath(init.weights), "source": init.source, "top": init.top}
    tr = config.get("transfer")
    if tr is not None and (tr.freeze != "none" or tr.phases or tr.batchnorm != "frozen"):
        out["transfer"] = {"freeze": tr.freeze, "batchnorm": tr.batchnorm, "phases": [_plain(p) for p in tr.phases]}
    return out


def _plain(phase: Any) -> dict[str, Any]:
    return phase.to_dict() if isinstance(phase, ml_collections.ConfigDict) else dict(phase)


# ---------------------------------------------------------------------------
# Transfer learning: phases and initial weights.

# The train.* fields a phase may override: what builds its optimizer and schedule.
PHASE_TRAIN_KEYS = (
    "learning_rate", "lr_schedule", "warmup_epochs", "decay_epochs", "decay_rate",
    "optimizer", "momentum", "rmsprop_decay", "epsilon", "weight_decay",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of training with one freeze and one optimizer: it trains steps start+1 .. end."""

    index: int
    start: int
    end: int
    freeze: str
    train: Any  # config.train with the phase's overrides


def resolve_phases(config: ml_collections.ConfigDict, net: spec.NetworkSpec, steps_per_epoch: int) -> tuple[Phase, ...]:
    """`config.transfer.phases` as `Phase`s (one phase of train.num_epochs / num_steps when empty).

    Raises ValueError for an unknown key, a bad length, or a freeze specification naming
    something the network lacks (the message lists the valid names).
    """
    tr = config.get("transfer")
    freeze = tr.freeze if tr is not None else "none"
    listed = [_plain(p) for p in tr.phases] if tr is not None and tr.phases else []
    if tr is not None and tr.batchnorm not in transfer.BN_MODES:
        raise ValueError(f"transfer.batchnorm must be one of {transfer.BN_MODES}, got {tr.batchnorm!r}.")
    if not listed:
        transfer.frozen_count(net, freeze)  # validates
        return (Phase(0, 0, optim.total_steps(config.train, steps_per_epoch), freeze, config.train),)
    out, start = [], 0
    for k, p in enumerate(listed):
        unknown = sorted(set(p) - {"freeze", "epochs", "steps", *PHASE_TRAIN_KEYS})
        if unknown:
            raise ValueError(
                f"transfer.phases[{k}]: unknown keys {unknown}; expected freeze, epochs or steps, and any of "
                f"{', '.join(PHASE_TRAIN_KEYS)}."
            )
        if ("epochs" in p) == ("steps" in p):
            raise ValueError(f"transfer.phases[{k}] needs exactly one of 'epochs' and 'steps'.")
        steps = int(p["steps"]) if "steps" in p else int(math.ceil(float(p["epochs"]) * steps_per_epoch))
        if steps < 1:
            raise ValueError(f"transfer.phases[{k}] is shorter than one step.")
        t = copy.deepcopy(config.train)
        with t.unlocked():
            t.update({key: p[key] for key in PHASE_TRAIN_KEYS if key in p})
        optim.check(t)
        f = str(p.get("freeze", freeze))
        try:
            transfer.frozen_count(net, f)
        except ValueError as e:
            raise ValueError(f"transfer.phases[{k}]: {e}") from e
        out.append(Phase(k, start, start + steps, f, t))
        start += steps
    return tuple(out)


def init_state(
    module: model.EfficientNet, tx: optax.GradientTransformation, seed: int, net: spec.NetworkSpec
) -> TrainState:
    """A fresh TrainState; the EMA starts equal to the initial weights."""
    x = jnp.zeros((1, net.resolution, net.resolution, net.in_channels), jnp.float32)
    variables = module.init({"params": jax.random.key(seed)}, x, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=params,
        ema_batch_stats=batch_stats,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy against label-smoothed one-hot targets."""
    if not smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing))


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """TF's ExponentialMovingAverage with num_updates: min(decay, (1 + n) / (10 + n))."""
    n = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    module: model.EfficientNet,
    tx: optax.GradientTransformation,
    lr: optax.Schedule,
    num_classes: int,
    label_smoothing: float,
    ema: float,
    seed: int,
    labels: Any = None,
    frozen_bn: frozenset[str] = frozenset(),
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a (global) batch; returns the new state and scalar metrics.

    `labels` (effscale.transfer.param_labels) marks frozen parameters: they, their moving
    averages and the statistics of the `frozen_bn` BatchNorms are carried over bit for bit.
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
        logits, updates = module.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss = cross_entropy(logits, batch["label"], num_classes, label_smoothing).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    d = ema_decay(ema, step)
    average = lambda old, new: jax.tree.map(lambda o, n: d * o + (1.0 - d) * n, old, new)  # noqa: E731
    ema_params = average(state.ema_params, params)
    ema_batch_stats = average(state.ema_batch_stats, batch_stats)
    if labels is not None:
        # p + 0 is not always p bit for bit (-0.0), and the average of a constant drifts by rounding:
        # frozen leaves are taken over as they were, decided per leaf at trace time.
        keep = lambda label, old, new: old if label == transfer.FROZEN else new  # noqa: E731
        params = jax.tree.map(keep, labels, state.params, params)
        ema_params = jax.tree.map(keep, labels, state.ema_params, ema_params)
    if frozen_bn:
        ema_batch_stats = transfer.keep_frozen_batch_stats(ema_batch_stats, state.ema_batch_stats, frozen_bn)
        batch_stats = transfer.keep_frozen_batch_stats(batch_stats, state.batch_stats, frozen_bn)
    new_state = TrainState(
        step=step,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
        ema_batch_stats=ema_batch_stats,
    )
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "lr": lr(state.step),
    }
    return new_state, metrics


def eval_step(variables: Any, batch: Batch, *, module: model.EfficientNet, num_classes: int) -> dict[str, jax.Array]:
    """Sums over the real (mask=True) examples of a padded batch: top-1 / top-5 hits, loss, count."""
    logits = module.apply(variables, batch["image"], train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    k = min(5, num_classes)
    topk = jax.lax.top_k(logits, k)[1]
    hits = topk == labels[:, None]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {
        "top1": jnp.sum(hits[:, 0] * mask),
        "top5": jnp.sum(jnp.any(hits, axis=1) * mask),
        "loss": jnp.sum(loss * mask),
        "count": jnp.sum(mask),
    }


# ---------------------------------------------------------------------------
# The run: everything stateful lives below.


@dataclasses.dataclass(frozen=True)
class _PhaseParts:
    """What a phase compiles its step from."""

    module: model.EfficientNet
    tx: optax.GradientTransformation
    lr: optax.Schedule  # of the phase's own step count (its optimizer starts at 0)
    labels: Any  # param_labels, or None when everything trains
    frozen_bn: frozenset[str]


class _Setup:
    """Resolved config, mesh, module, optimizer and compiled-step factories of one run."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config, self.info, self.net = resolve(config)
        t = self.config.train
        self.mesh = parallel.make_mesh()
        self.devices, self.processes = jax.device_count(), jax.process_count()
        # Both batch sizes are checked before anything is compiled or read.
        self.local_batch = parallel.check_batch_size("train.batch_size", t.batch_size, self.devices, self.processes)
        self.local_eval_batch = parallel.check_batch_size(
            "train.eval_batch_size", t.eval_batch_size, self.devices, self.processes
        )
        self.steps_per_epoch = self.info.train_examples // t.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"train.batch_size={t.batch_size} exceeds the {self.info.train_examples} training examples of "
                f"{self.info.name}."
            )
        self.phases = resolve_phases(self.config, self.net, self.steps_per_epoch)
        self.total_steps = self.phases[-1].end
        self.module = model.create(self.net, self.config.model)  # initialisation and evaluation
        self._parts: dict[int, _PhaseParts] = {}
        first = self.parts(self.phases[0])
        self.lr, self.tx = first.lr, first.tx
        self.imported: convert.ImportedWeights | dict[str, Any] | None = None
        self.replicated = parallel.replicated(self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh)

    def phase_of(self, step: int) -> Phase:
        """The phase whose optimizer a checkpoint at `step` holds: the one that trained that step (0: the first)."""
        return next((p for p in self.phases if step <= p.end), self.phases[-1])

    def parts(self, phase: Phase) -> _PhaseParts:
        if phase.index not in self._parts:
            steps = phase.end - phase.start
            lr = optim.schedule(phase.train, self.steps_per_epoch, steps)
            tx = optim.create(phase.train, lr)
            mode = self.config.transfer.batchnorm if self.config.get("transfer") is not None else "frozen"
            frozen_bn = transfer.frozen_batchnorm(self.net, phase.freeze, mode=mode)
            labels = None
            if phase.freeze != "none":
                labels = transfer.param_labels(self.net, self._abstract_variables()["params"], phase.freeze)
                tx = transfer.freeze_optimizer(tx, labels)
            module = model.create(self.net, self.config.model, frozen_bn) if frozen_bn else self.module
            self._parts[phase.index] = _PhaseParts(module, tx, lr, labels, frozen_bn)
        return self._parts[phase.index]

    def _abstract_variables(self) -> Any:
        return model.abstract_variables(self.module)

    def load_init(self) -> None:
        """Imports config.init.weights (if any) and checks they fit the model: every error before a compile."""
        init = self.config.get("init")
        if init is None or not init.weights:
            return
        try:
            imported = convert.load_initial(init, self.net)
        except OSError as e:  # a missing or unreadable file is a config error like any other
            raise ValueError(f"config.init.weights: {e}") from e
        abstract = self._abstract_variables()
        fresh = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
        transfer.merge_imported(fresh, imported)  # shapes and coverage, nothing kept
        self.imported = imported
        norm = getattr(imported, "normalization", None)
        d = self.config.data
        if norm is not None and not (
            np.allclose(norm.mean, d.mean, atol=1e-3) and np.allclose(norm.std, d.std, atol=1e-3)
        ):
            log.warning(
                "The imported weights expect inputs normalised with mean %s, std %s; config.data has mean %s, "
                "std %s. Set config.data.mean / std to match unless this is deliberate.",
                norm.mean,
                norm.std,
                tuple(d.mean),
                tuple(d.std),
            )
        dropped = getattr(imported, "dropped_top", True)
        log.info("Initial weights from %s (%s).", init.weights, "new head" if dropped else "with its top")

    def abstract_state(self, phase: Phase | None = None) -> TrainState:
        """The state's shapes and shardings in `phase` (default: the last, that of a finished run)."""
        phase = self.phases[-1] if phase is None else phase
        shapes = jax.eval_shape(functools.partial(self._init, phase))
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), shapes)

    def _init(self, phase: Phase | None = None) -> TrainState:
        tx = self.parts(phase or self.phases[0]).tx
        return init_state(self.module, tx, self.config.train.seed, self.net)

    def fresh_state(self) -> TrainState:
        state = jax.jit(self._init, out_shardings=self.replicated)()
        if self.imported is None:
            return state
        merged = transfer.merge_imported({"params": state.params, "batch_stats": state.batch_stats}, self.imported)
        merged = jax.device_put(merged, self.replicated)
        tx = self.parts(self.phases[0]).tx
        start = lambda v: TrainState(  # noqa: E731 (the EMA starts at the imported weights)
            step=jnp.zeros((), jnp.int32),
            params=v["params"],
            batch_stats=v["batch_stats"],
            opt_state=tx.init(v["params"]),
            ema_params=v["params"],
            ema_batch_stats=v["batch_stats"],
        )
        return jax.jit(start, out_shardings=self.replicated)(merged)

    def enter(self, phase: Phase, state: TrainState) -> TrainState:
        """`state` with `phase`'s optimizer, freshly initialised (a new optimizer, as Keras' recompile gives)."""
        tx = self.parts(phase).tx
        return jax.jit(lambda s: s.replace(opt_state=tx.init(s.params)), out_shardings=self.replicated)(state)

    def _abstract_batch(self, batch: int, eval_: bool) -> dict[str, jax.ShapeDtypeStruct]:
        r, c = self.net.resolution, self.net.in_channels
        out = {
            "image": jax.ShapeDtypeStruct((batch, r, r, c), jnp.float32, sharding=self.batch_sharding),
            "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=self.batch_sharding),
        }
        if eval_:
            out["mask"] = jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=self.batch_sharding)
        return out

    def compile_train(
        self, phase: Phase | None = None
    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
        t = self.config.train
        phase = phase or self.phases[0]
        parts = self.parts(phase)
        # The logged learning rate is the phase's schedule at the phase's own step.
        lr = parts.lr if phase.start == 0 else (lambda step: parts.lr(step - phase.start))
        fn = functools.partial(
            train_step,
            module=parts.module,
            tx=parts.tx,
            lr=lr,
            num_classes=self.net.num_classes,
            label_smoothing=float(t.label_smoothing),
            ema=float(t.ema_decay),
            seed=int(t.seed),
            labels=parts.labels,
            frozen_bn=parts.frozen_bn,
        )
        jitted = jax.jit(
            fn,
            in_shardings=(self.replicated, self.batch_sharding),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=0,
        )
        # Compiled ahead of time: a batch of another shape is an error, never a silent recompile.
        return jitted.lower(self.abstract_state(phase), self._abstract_batch(t.batch_size, False)).compile()

    def compile_eval(self) -> Callable[[Any, Batch], dict[str, jax.Array]]:
        fn = functools.partial(eval_step, module=self.module, num_classes=self.net.num_classes)
        jitted = jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding), out_shardings=self.replicated)
        abstract = self.abstract_state(self.phases[0])
        variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
        return jitted.lower(variables, self._abstract_batch(self.config.train.eval_batch_size, True)).compile()

    def record_base(self) -> dict[str, Any]:
        """The run record's description part: what was trained, on what."""
        cost = complexity.analyse(self.net)
        return {
            "config": self.config.to_dict(),
            "dataset": self.info.name,
            "num_classes": self.net.num_classes,
            "width": self.net.width,
            "depth": self.net.depth,
            "resolution": self.net.resolution,
            "phi": self.net.phi,
            "params": cost.params,
            "macs": cost.macs,
            "activations": cost.activations,
            "xla_flops": complexity.xla_flops(self.net) if self.config.train.xla_flops else None,
            "batch_size": self.config.train.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            **parallel.describe(),
            "packages": record.package_versions(),
        }


def _pad(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short eval batch to `size` with masked-out examples (one eval shape, one compile)."""
    n = len(batch["label"])
    if n == size:
        return dict(batch)
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _run_eval(setup: _Setup, eval_fn: Callable, state: TrainState) -> dict[str, float]:
    """Top-1 / top-5 / loss of the raw and the EMA weights over the whole eval split (fractions)."""
    from effscale import data

    raw = {"params": state.params, "batch_stats": state.batch_stats}
    ema = {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    # ema_decay=0 makes the average the weights themselves (decay min(0, ...) = 0): one pass serves both.
    passes = (("", raw),) if setup.config.train.ema_decay == 0 else (("", raw), ("_ema", ema))
    sums: dict[str, list[dict[str, jax.Array]]] = {suffix: [] for suffix, _ in passes}
    start = time.perf_counter()
    batches = data.eval_batches(
        setup.config.data, setup.net.resolution, setup.local_eval_batch, jax.process_index(), setup.processes
    )
    for local in batches:
        batch = parallel.global_batch(_pad(local, setup.local_eval_batch), setup.batch_sharding)
        for suffix, variables in passes:
            sums[suffix].append(eval_fn(variables, batch))
    fetched = jax.device_get(sums)  # one host sync for the whole pass
    seconds = time.perf_counter() - start
    out: dict[str, float] = {}
    for suffix, parts in fetched.items():
        total = {k: float(sum(p[k] for p in parts)) for k in ("top1", "top5", "loss", "count")}
        count = max(total["count"], 1.0)
        out[f"top1{suffix}"] = total["top1"] / count
        out[f"top5{suffix}"] = total["top5"] / count
        out[f"loss{suffix}"] = total["loss"] / count
        out["examples"] = total["count"]
    for key in ("top1", "top5", "loss") if len(passes) == 1 else ():
        out[f"{key}_ema"] = out[key]
    # Every pass (raw and EMA weights) counts: images through the network per second.
    out["images_per_sec"] = len(passes) * out["examples"] / seconds if seconds > 0 else float("nan")
    return out


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag checked between steps (single-process runs).

    Across processes a local flag would be seen at different steps and deadlock the
    collectives, so multi-process runs rely on the cluster's preemption notice
    (orbax's `reached_preemption`, synchronised by jax.distributed) instead.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if jax.process_count() == 1:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("Received %s: saving a checkpoint at the end of this step.", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Pending:
    """Train metrics kept on device between log points, so steps never wait for the host."""

    def __init__(self):
        self.items: list[tuple[int, dict[str, jax.Array]]] = []

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self.items.append((step, metrics))

    def flush(self, last_good: int | None, workdir: str) -> dict[str, float] | None:
        """Fetches the pending metrics, raises NonFiniteLossError on a NaN / inf loss, returns their means."""
        if not self.items:
            return None
        steps = [s for s, _ in self.items]
        fetched = jax.device_get([m for _, m in self.items])
        self.items = []
        for step, m in zip(steps, fetched, strict=True):
            if not math.isfinite(float(m["loss"])):
                kept = f"the last good checkpoint (step {last_good})" if last_good else "no checkpoint"
                raise NonFiniteLossError(
                    f"The training loss became {float(m['loss'])} at step {step}; the run stopped without saving. "
                    f"{workdir} keeps {kept}. Lower train.learning_rate or raise train.warmup_epochs and rerun."
                )
        return {k: float(np.mean([m[k] for m in fetched])) for k in ("loss", "accuracy")} | {
            "lr": float(fetched[-1]["lr"])
        }


class _Clock:
    """Seconds per train step, from the wall time between log points (data loading included).

    The first interval of a run holds the input pipeline's warm-up (filling caches and
    shuffle buffers); it counts only when there is nothing else to go by.
    """

    def __init__(self):
        self.seconds, self.steps = 0.0, 0
        self.first: tuple[float, int] | None = None

    def add(self, seconds: float, steps: int, first: bool) -> None:
        if first:
            self.first = (seconds, steps)
        else:
            self.seconds += seconds
            self.steps += steps

    @property
    def step_time(self) -> float | None:
        seconds, steps = (self.seconds, self.steps) if self.steps else (self.first or (0.0, 0))
        return seconds / steps if steps else None


def _log_train(
    writer: record.MetricsWriter,
    step: int,
    total: int,
    steps_per_epoch: int,
    batch_size: int,
    metrics: Mapping[str, float] | None,
    clock: _Clock,
) -> None:
    step_time = clock.step_time or float("nan")
    progress = {
        **(metrics or {}),
        "epoch": step / steps_per_epoch,
        "images_per_sec": batch_size / step_time,
        "step_time_s": step_time,
    }
    writer.write(step, "train", progress)
    if writer.enabled:
        log.info(
            "step %d/%d  epoch %.2f  loss %.4f  acc %.4f  lr %.3g  %.1f images/s  ETA %s",
            step,
            total,
            progress["epoch"],
            progress.get("loss", float("nan")),
            progress.get("accuracy", float("nan")),
            progress.get("lr", float("nan")),
            progress["images_per_sec"],
            _duration((total - step) * step_time) if math.isfinite(step_time) else "?",
        )


def _log_eval(writer: record.MetricsWriter, result: Mapping[str, Any]) -> None:
    writer.write(result["step"], "eval", {k: v for k, v in result.items() if k != "step"})
    if writer.enabled:
        log.info(
            "eval at step %d: top-1 %.4f (EMA %.4f), top-5 %.4f (EMA %.4f), %.1f images/s",
            result["step"],
            result["top1"],
            result["top1_ema"],
            result["top5"],
            result["top5_ema"],
            result["images_per_sec"],
        )


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """Marks the ValueErrors of validation (config fields, dataset, workdir) as ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _return_compiler_memory() -> None:
    """Hands the heap XLA's compiler freed back to the OS.

    glibc keeps it in its arenas otherwise: measured 4.81 -> 3.71 GB peak RSS for a B0 train step at
    224 px, batch 32 (python -m effscale.bench --variants default --train_only). No-op without glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _every(epochs: float, steps_per_epoch: int) -> int:
    return max(1, int(round(epochs * steps_per_epoch)))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None
) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, returns the run record.

    The record is also written atomically to `<workdir>/result.json` by process 0.
    Raises ValueError for a bad config or an incompatible workdir (before any compile),
    NonFiniteLossError when the loss diverges, Interrupted after a save on SIGINT /
    SIGTERM / preemption, or at `stop_at_step` (a time slice: a later call continues the
    same run, exactly as if it had not stopped).
    """
    wall_start = time.perf_counter()
    from effscale import data

    lead = jax.process_index() == 0
    with _config_errors():
        setup = _Setup(config)
        checkpoint.guard(workdir, fingerprint(setup.net, setup.info.name, setup.config), write=lead)
        if not checkpoint.has_checkpoint(workdir):  # a resumed run has its weights in the checkpoint
            setup.load_init()
    cfg, t = setup.config, setup.config.train
    ckpt = checkpoint.Manager(workdir, t.checkpoint_every_steps, t.keep_checkpoints, t.async_checkpoints)
    writer = record.MetricsWriter(workdir, enabled=lead)
    try:
        start_step = ckpt.latest_step() or 0
        phase = setup.phase_of(start_step)
        start_compile = time.perf_counter()
        train_fn, eval_fn = setup.compile_train(phase), setup.compile_eval()
        compile_time = time.perf_counter() - start_compile
        _return_compiler_memory()
        # Hosts finish compiling at different times; the first collective must not time out on them.
        parallel.barrier(f"effscale:compiled:{os.path.abspath(workdir)}:{start_step}")

        state = ckpt.restore(setup.abstract_state(phase)) if start_step else setup.fresh_state()
        base = setup.record_base()
        total = setup.total_steps
        if lead:
            log.info(
                "Training %s on %s: %d params, %d MACs/image, %d px, batch %d on %d devices (%d processes), "
                "%d steps (%d/epoch), %s.",
                f"width {setup.net.width:.3g} depth {setup.net.depth:.3g}",
                setup.info.name,
                base["params"],
                base["macs"],
                setup.net.resolution,
                t.batch_size,
                setup.devices,
                setup.processes,
                total,
                setup.steps_per_epoch,
                f"resuming from step {start_step}"
                if start_step
                else f"starting from {cfg.init.weights}"
                if setup.imported is not None
                else "from scratch",
            )
        if len(setup.phases) > 1 or phase.freeze != "none":
            _log_phase(setup, phase, lead)
        evals = [e for e in writer.rewind(start_step) if e["kind"] == "eval"]
        train_metrics: dict[str, float] | None = None
        clock = _Clock()
        eval_every = _every(t.eval_every_epochs, setup.steps_per_epoch)
        last_saved = start_step or None
        pending = _Pending()
        batches: Iterator[dict[str, np.ndarray]] = data.train_batches(
            cfg.data,
            setup.net.resolution,
            setup.local_batch,
            t.seed,
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=setup.processes,
        )
        with _StopRequest() as stop:
            tick, tick_step = time.perf_counter(), start_step
            for step in range(start_step + 1, total + 1):
                if step > phase.end:  # the next phase: its optimizer, its compiled step
                    phase = setup.phases[phase.index + 1]
                    start_compile = time.perf_counter()
                    train_fn = setup.compile_train(phase)
                    compile_time += time.perf_counter() - start_compile
                    _return_compiler_memory()
                    parallel.barrier(f"effscale:compiled:{os.path.abspath(workdir)}:{step}")
                    state = setup.enter(phase, state)
                    _log_phase(setup, phase, lead)
                    tick += time.perf_counter() - start_compile  # the compile is not step time
                state, metrics = train_fn(state, parallel.global_batch(next(batches), setup.batch_sharding))
                pending.add(step, metrics)
                is_last = step == total
                stopping = stop.signum is not None or ckpt.reached_preemption(step) or (step == stop_at_step)
                stopping = stopping and not is_last
                log_now = step % t.log_every_steps == 0 or is_last
                eval_now = (step % eval_every == 0 or is_last) and not stopping
                save_now = is_last or stopping or ckpt.should_save(step)
                if not (log_now or eval_now or save_now):
                    continue
                # Fetching the metrics waits for the step: the NaN check comes before any save.
                train_metrics = pending.flush(last_saved, workdir) or train_metrics
                clock.add(time.perf_counter() - tick, step - tick_step, first=tick_step == start_step)
                if log_now:
                    _log_train(writer, step, total, setup.steps_per_epoch, t.batch_size, train_metrics, clock)
                if save_now:
                    ckpt.save(step, state)
                    last_saved = step
                if stopping:
                    ckpt.wait()
                    reason = "stop_at_step" if step == stop_at_step else "preemption"
                    raise Interrupted(step, stop.signum, workdir, reason)
                if eval_now:
                    result = {"step": step, "epoch": step / setup.steps_per_epoch, **_run_eval(setup, eval_fn, state)}
                    evals.append(result)
                    _log_eval(writer, result)
                tick, tick_step = time.perf_counter(), step
        ckpt.wait()
        final = evals[-1] if evals and evals[-1]["step"] == total else None
        if final is None:  # resumed at the end: nothing left to train, evaluate what is there
            final = {"step": total, **_run_eval(setup, eval_fn, state)}
        step_time = clock.step_time
        out = {
            **base,
            "status": "finished",
            "steps": total,
            "epochs": total / setup.steps_per_epoch,
            **_eval_fields(final),
            "best_eval_top1": max(max(e["top1"], e["top1_ema"]) for e in evals) if evals else final["top1"],
            "train_loss": train_metrics["loss"] if train_metrics else None,
            "train_accuracy": train_metrics["accuracy"] if train_metrics else None,
            "train_images_per_sec": t.batch_size / step_time if step_time else None,
            "step_time_s": step_time,
            "resumed_from_step": start_step,
            "compile_time_s": compile_time,
            "wall_time_s": time.perf_counter() - wall_start,
        }
        if lead:
            record.write_json(f"{workdir}/{record.RESULT}", out)
            log.info(
                "Wrote %s/%s: eval top-1 %.4f (EMA %.4f).",
                workdir,
                record.RESULT,
                out["eval_top1"],
                out["eval_top1_ema"],
            )
        return out
    finally:
        writer.close()
        ckpt.close()


def _log_phase(setup: _Setup, phase: Phase, lead: bool) -> None:
    if not lead:
        return
    labels = setup.parts(phase).labels
    sizes = jax.tree.map(lambda x: math.prod(x.shape), setup._abstract_variables()["params"])
    total = sum(jax.tree.leaves(sizes))
    if labels is not None:
        sizes = jax.tree.map(lambda label, n: n if label == transfer.TRAINABLE else 0, labels, sizes)
    trainable = sum(jax.tree.leaves(sizes))
    log.info(
        "Phase %d/%d: steps %d-%d, freeze %r: %d of %d parameters train, learning rate %g per 256 images.",
        phase.index + 1,
        len(setup.phases),
        phase.start + 1,
        phase.end,
        phase.freeze,
        trainable,
        total,
        phase.train.learning_rate,
    )


def _eval_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "eval_top1": result["top1"],
        "eval_top5": result["top5"],
        "eval_top1_ema": result["top1_ema"],
        "eval_top5_ema": result["top5_ema"],
        "eval_loss": result["loss"],
        "eval_loss_ema": result["loss_ema"],
        "eval_examples": int(result["examples"]),
        "eval_images_per_sec": result["images_per_sec"],
    }


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Evaluates the latest checkpoint of `workdir` (raw and EMA weights); returns and writes eval.json."""
    wall_start = time.perf_counter()
    with _config_errors():
        setup = _Setup(config)
        if not checkpoint.has_checkpoint(workdir):
            raise ValueError(f"No checkpoint in {workdir}: train first (--mode=train) or point --workdir at a run.")
        checkpoint.guard(workdir, fingerprint(setup.net, setup.info.name, setup.config), write=False)
    ckpt = checkpoint.Manager(workdir, setup.config.train.checkpoint_every_steps, setup.config.train.keep_checkpoints)
    try:
        start_compile = time.perf_counter()
        eval_fn = setup.compile_eval()
        compile_time = time.perf_counter() - start_compile
        parallel.barrier(f"effscale:compiled-eval:{os.path.abspath(workdir)}")
        step = ckpt.latest_step()
        state = ckpt.restore(setup.abstract_state(setup.phase_of(step)), step)
        result = _run_eval(setup, eval_fn, state)
    finally:
        ckpt.close()
    out = {
        **setup.record_base(),
        "status": "evaluated",
        "steps": step,
        "epochs": step / setup.steps_per_epoch,
        **_eval_fields(result),
        "compile_time_s": compile_time,
        "wall_time_s": time.perf_counter() - wall_start,
    }
    if jax.process_index() == 0:
        record.write_json(f"{workdir}/eval.json", out)
    return out


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
