"""What a run tells as it goes: train metrics kept on device until a log point, step time, log lines."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from effscale import complexity, model, record, transfer
from effscale.training.evaluation import EvalResult
from effscale.training.phases import Phase
from effscale.training.setup import RunSetup

# Progress lines go to their own logger: absl's is flooded by orbax's INFO messages.
log = logging.getLogger("effscale")


Fetched = list[tuple[int, dict[str, float]]]  # (step, its metrics on the host), oldest first


class Pending:
    """Train metrics kept on device between log points, so steps never wait for the host.

    `carried` are the host metrics of steps a stopped run fetched but never logged: its resume
    averages them with its own, as the uninterrupted run would have.
    """

    def __init__(self, carried: Fetched = ()):
        self.items: list[tuple[int, Mapping[str, Any]]] = list(carried)

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self.items.append((step, metrics))

    def fetch(self) -> Fetched:
        """The pending metrics on the host (waiting for their steps); none are pending afterwards."""
        fetched = jax.device_get(self.items)
        self.items = []
        return fetched


def first_non_finite(fetched: Fetched) -> tuple[int, float] | None:
    """The first (step, loss) whose loss is NaN or infinite, or None."""
    for step, m in fetched:
        if not math.isfinite(float(m["loss"])):
            return step, float(m["loss"])
    return None


def means(fetched: Fetched) -> dict[str, float] | None:
    """The mean loss and accuracy of `fetched` and the last learning rate (None when empty)."""
    if not fetched:
        return None
    out = {k: float(np.mean([m[k] for _, m in fetched])) for k in ("loss", "accuracy")}
    return out | {"lr": float(fetched[-1][1]["lr"])}


def carry(fetched: Fetched) -> dict[str, Any]:
    """`fetched`'s loss and accuracy as a metrics-log event (exact: float32 values are exact in JSON)."""
    return {"steps": [s for s, _ in fetched], **{k: [float(m[k]) for _, m in fetched] for k in ("loss", "accuracy")}}


def carried(event: Mapping[str, Any]) -> Fetched:
    """What `carry` wrote, as the host metrics `Pending` starts from."""
    values = zip(event["steps"], event["loss"], event["accuracy"], strict=True)
    return [(s, {"loss": np.float32(loss), "accuracy": np.float32(acc)}) for s, loss, acc in values]


def diverged(step: int, loss: float, kept: int | None, discarded: list[int], workdir: str) -> str:
    """Why the run stopped, what it discarded and kept, and the fix."""
    dropped = ""
    if discarded:
        listed = ", ".join(map(str, discarded))
        dropped = f"It deleted the checkpoints of steps {listed}: the weights they hold led to it. "
    last = f"the last good checkpoint (step {kept})" if kept else "no checkpoint (a rerun starts over)"
    return (
        f"The training loss became {loss} at step {step}; the run stopped without saving. {dropped}"
        f"{workdir} keeps {last}. Lower train.learning_rate or raise train.warmup_epochs and rerun."
    )


class Clock:
    """Seconds per train step and the fraction of them spent waiting for input, from the wall time
    between log points (data loading included).

    The first interval of a run holds the input pipeline's warm-up (filling caches and
    shuffle buffers); it counts only when there is nothing else to go by.
    """

    def __init__(self):
        self.seconds, self.steps, self.waited = 0.0, 0, 0.0
        self.first: tuple[float, int, float] | None = None

    def add(self, seconds: float, steps: int, first: bool, waited: float = 0.0) -> None:
        """`steps` steps took `seconds`, `waited` of them blocked on the next batch."""
        if first:
            self.first = (seconds, steps, waited)
        else:
            self.seconds += seconds
            self.steps += steps
            self.waited += waited

    def _totals(self) -> tuple[float, int, float]:
        return (self.seconds, self.steps, self.waited) if self.steps else (self.first or (0.0, 0, 0.0))

    @property
    def step_time(self) -> float | None:
        seconds, steps, _ = self._totals()
        return seconds / steps if steps else None

    @property
    def steady(self) -> bool:
        """Whether the step time leaves out the warm-up: some interval after the first was timed."""
        return self.steps > 0

    @property
    def input_wait(self) -> float | None:
        """The fraction of the train loop's wall time spent waiting for the input pipeline.

        Steps run asynchronously, so time blocked on the next batch is time the devices may have
        idled: near 0 the devices set the pace; near 1 the host's input pipeline does.
        """
        seconds, steps, waited = self._totals()
        return min(1.0, waited / seconds) if steps and seconds > 0 else None


def pace(clock: Clock, logged: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """The step time and input wait a run's record keeps: this segment's steady pace, else the last pace
    the segment before a resume logged, else this segment's warm-up interval.

    A run resumed less than two log intervals before its end timed only its warm-up (restoring,
    compiling's stragglers, filling the input pipeline): kept, it would read as a run 2x slower.
    """
    earlier = (logged or {}).get("step_time_s")
    if clock.steady or not isinstance(earlier, int | float) or not math.isfinite(earlier) or earlier <= 0:
        return clock.step_time, clock.input_wait
    return float(earlier), (logged or {}).get("input_wait")


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
        "input_wait": clock.input_wait,
    }
    writer.write(step, "train", progress)
    if writer.enabled:
        log.info(
            "step %d/%d  epoch %.2f  loss %.4f  acc %.4f  lr %.3g  %.1f images/s  input wait %s  ETA %s",
            step,
            total,
            progress["epoch"],
            progress.get("loss", float("nan")),
            progress.get("accuracy", float("nan")),
            progress.get("lr", float("nan")),
            progress["images_per_sec"],
            "?" if clock.input_wait is None else f"{clock.input_wait:.0%}",
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
