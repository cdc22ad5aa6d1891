"""What a run tells as it goes: train metrics kept on device until a log point, step time, log lines."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import jax
import numpy as np

from effscale import complexity, model, record, transfer
from effscale.training.errors import NonFiniteLossError
from effscale.training.evaluation import EvalResult
from effscale.training.phases import Phase
from effscale.training.setup import RunSetup

# Progress lines go to their own logger: absl's is flooded by orbax's INFO messages.
log = logging.getLogger("effscale")


class Pending:
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
        means = {k: float(np.mean([m[k] for m in fetched])) for k in ("loss", "accuracy")}
        return means | {"lr": float(fetched[-1]["lr"])}


class Clock:
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


def duration(seconds: float) -> str:
    """'1h02m03s' or '2m03s'."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def log_start(setup: RunSetup, start_step: int, imported: bool) -> None:
    """What is trained, on what, for how long, and from where."""
    cost = complexity.analyse(setup.net)
    t = setup.config.train
    if start_step:
        origin = f"resuming from step {start_step}"
    else:
        origin = f"starting from {setup.config.init.weights}" if imported else "from scratch"
    log.info(
        "Training %s on %s: %d params, %d MACs/image, %d px, batch %d on %d devices (%d processes), "
        "%d steps (%d/epoch), %s.",
        f"width {setup.net.width:.3g} depth {setup.net.depth:.3g}",
        setup.info.name,
        cost.params,
        cost.macs,
        setup.net.resolution,
        t.batch_size,
        setup.devices,
        setup.processes,
        setup.total_steps,
        setup.steps_per_epoch,
        origin,
    )


def log_phase(setup: RunSetup, phase: Phase) -> None:
    """A phase's steps, freeze and learning rate, and how many parameters it trains."""
    labels = setup.parts_of(phase).labels
    params = model.abstract_variables(setup.module)["params"]
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    trainable = total if labels is None else transfer.count_trainable(params, labels)[0]
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


def log_train(
    writer: record.MetricsWriter, step: int, setup: RunSetup, metrics: Mapping[str, float] | None, clock: Clock
) -> None:
    """One train event: the means since the last one, the epoch, the throughput and the time left."""
    step_time = clock.step_time or float("nan")
    total = setup.total_steps
    progress = {
        **(metrics or {}),
        "epoch": step / setup.steps_per_epoch,
        "images_per_sec": setup.config.train.batch_size / step_time,
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
            duration((total - step) * step_time) if math.isfinite(step_time) else "?",
        )


def log_eval(writer: record.MetricsWriter, step: int, epoch: float, result: EvalResult) -> None:
    """One eval event."""
    writer.write(step, "eval", {"epoch": epoch, **result.metrics()})
    if writer.enabled:
        log.info(
            "eval at step %d: top-1 %.4f (EMA %.4f), top-5 %.4f (EMA %.4f), %.1f images/s",
            step,
            result.top1,
            result.top1_ema,
            result.top5,
            result.top5_ema,
            result.images_per_sec,
        )
