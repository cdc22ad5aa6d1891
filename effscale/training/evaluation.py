"""Evaluation as one unit: a whole split through the raw and the EMA weights, as fractions.

In-run evaluations read the held-out validation split (the test split when a run has none) and
choose the best weights; the test split (config.data.eval_split) is read at the end, and at each
new validation best below the last step, for the better of that step's weights, which are gone
by the end: so the test accuracy of the best-on-validation weights needs no copy of them, and a
resumed run finds it in the metrics log like every other evaluation.

Each process feeds its share of every eval batch; a short last batch is padded with masked-out
examples, so one compiled shape serves the whole split. The device sums of hits, losses and
counts are fetched once at the end and divided on the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from effscale import parallel
from effscale.training.compiled import EvalFn
from effscale.training.setup import RunSetup
from effscale.training.steps import TrainState

VALIDATION, TEST = "validation", "test"
RAW, EMA = "raw", "ema"


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """One evaluation of the raw and the EMA weights: fractions of `split` (loss: its mean)."""

    top1: float
    top5: float
    loss: float
    top1_ema: float
    top5_ema: float
    loss_ema: float
    examples: int
    images_per_sec: float  # every pass counts (raw and EMA weights): images through the network
    split: str = TEST  # VALIDATION or TEST (metrics logs from before validation existed: their eval split)
    # Set on a validation evaluation that is a new best below the last step: its better weights on the test split.
    best_weights: str | None = None  # RAW or EMA
    best_test_top1: float | None = None
    best_test_top5: float | None = None

    @property
    def best_top1(self) -> float:
        return max(self.top1, self.top1_ema)

    @property
    def better_weights(self) -> str:
        """RAW or EMA: the weights with the higher top-1 (RAW on a tie)."""
        return EMA if self.top1_ema > self.top1 else RAW

    def top1_of(self, weights: str) -> float:
        return self.top1_ema if weights == EMA else self.top1

    def metrics(self) -> dict[str, Any]:
        """The fields, as the metrics log holds them (the best_* ones only when set)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_metrics(cls, event: Mapping[str, Any]) -> EvalResult:
        """The result an eval event of the metrics log holds (an older event lacks the defaulted fields)."""
        fields = dataclasses.fields(cls)
        return cls(**{f.name: event[f.name] for f in fields if f.name in event or f.default is dataclasses.MISSING})


def in_run_split(setup: RunSetup) -> str:
    """The split of in-run evaluations and of the choice of the best weights: VALIDATION, or TEST without one."""
    return TEST if setup.info.validation_examples is None else VALIDATION


def best_of(evals: Sequence[tuple[int, EvalResult]]) -> tuple[int, EvalResult]:
    """The (step, result) with the highest top-1 of raw or EMA weights; the earliest of equals."""
    best = evals[0]
    for step, result in evals[1:]:
        if result.best_top1 > best[1].best_top1:
            best = (step, result)
    return best


def is_new_best(evals: Sequence[tuple[int, EvalResult]], result: EvalResult) -> bool:
    """Whether `result` beats every evaluation in `evals` (`best_of`'s rule)."""
    return not evals or result.best_top1 > best_of(evals)[1].best_top1


def pad(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short eval batch to `size` with masked-out examples (one eval shape, one compile)."""
    n = len(batch["label"])
    if n == size:
        return dict(batch)
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _variables(state: TrainState, weights: str) -> dict[str, Any]:
    if weights == EMA:
        return {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    return {"params": state.params, "batch_stats": state.batch_stats}


def _passes(
    setup: RunSetup, eval_fn: EvalFn, passes: Mapping[str, Any], split: str
) -> tuple[dict[str, tuple[float, float, float, float]], float]:
    """{name: (top-1, top-5, mean loss, count)} of each set of variables in `passes` over `split`, and the seconds."""
    from effscale import data

    stream = data.validation_batches if split == VALIDATION else data.eval_batches
    sums: dict[str, list[dict[str, jax.Array]]] = {name: [] for name in passes}
    start = time.perf_counter()
    data_cfg, batch_size = setup.config.data, setup.local_eval_batch
    batches = stream(data_cfg, setup.net.resolution, batch_size, jax.process_index(), setup.processes)
    for local in batches:
        batch = parallel.global_batch(pad(local, setup.local_eval_batch), setup.batch_sharding)
        for name, variables in passes.items():
            sums[name].append(eval_fn(variables, batch))
    fetched = jax.device_get(sums)  # one host sync for the whole pass
    return {name: _fractions(fetched[name]) for name in passes}, time.perf_counter() - start


def run_eval(setup: RunSetup, eval_fn: EvalFn, state: TrainState, split: str = TEST) -> EvalResult:
    """Top-1 / top-5 / loss of the raw and the EMA weights of `state` over the whole of `split`."""
    passes = {RAW: _variables(state, RAW)}
    # ema_decay=0 makes the average the weights themselves (decay min(0, ...) = 0): one pass serves both.
    if setup.config.train.ema_decay != 0:
        passes[EMA] = _variables(state, EMA)
    scores, seconds = _passes(setup, eval_fn, passes, split)
    raw = scores[RAW]
    ema = scores.get(EMA, raw)
    examples = raw[3]
    return EvalResult(
        top1=raw[0],
        top5=raw[1],
        loss=raw[2],
        top1_ema=ema[0],
        top5_ema=ema[1],
        loss_ema=ema[2],
        examples=int(examples),
        images_per_sec=len(passes) * examples / seconds if seconds > 0 else float("nan"),
        split=split,
    )


def with_test_of_better(setup: RunSetup, eval_fn: EvalFn, state: TrainState, result: EvalResult) -> EvalResult:
    """`result` (an evaluation of `state`) with its better weights' top-1 / top-5 on the test split."""
    weights = result.better_weights
    scores, _ = _passes(setup, eval_fn, {weights: _variables(state, weights)}, TEST)
    top1, top5, _, _ = scores[weights]
    return dataclasses.replace(result, best_weights=weights, best_test_top1=top1, best_test_top5=top5)


def _fractions(sums: list[Mapping[str, Any]]) -> tuple[float, float, float, float]:
    """(top-1, top-5, mean loss, count) from per-batch sums."""
    total = {k: float(sum(s[k] for s in sums)) for k in ("top1", "top5", "loss", "count")}
    count = max(total["count"], 1.0)
    return total["top1"] / count, total["top5"] / count, total["loss"] / count, total["count"]
