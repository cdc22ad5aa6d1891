"""Evaluation as one unit: the whole eval split through the raw and the EMA weights, as fractions.

Each process feeds its share of every eval batch; a short last batch is padded with masked-out
examples, so one compiled shape serves the whole split. The device sums of hits, losses and
counts are fetched once at the end and divided on the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from effscale import parallel
from effscale.training.compiled import EvalFn
from effscale.training.setup import RunSetup
from effscale.training.steps import TrainState


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """One evaluation of the raw and the EMA weights: fractions of the eval split (loss: its mean)."""

    top1: float
    top5: float
    loss: float
    top1_ema: float
    top5_ema: float
    loss_ema: float
    examples: int
    images_per_sec: float  # every pass counts (raw and EMA weights): images through the network

    @property
    def best_top1(self) -> float:
        return max(self.top1, self.top1_ema)

    def metrics(self) -> dict[str, Any]:
        """The fields, as the metrics log holds them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_metrics(cls, event: Mapping[str, Any]) -> EvalResult:
        """The result an eval event of the metrics log holds."""
        return cls(**{f.name: event[f.name] for f in dataclasses.fields(cls)})


def pad(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short eval batch to `size` with masked-out examples (one eval shape, one compile)."""
    n = len(batch["label"])
    if n == size:
        return dict(batch)
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def run_eval(setup: RunSetup, eval_fn: EvalFn, state: TrainState) -> EvalResult:
    """Top-1 / top-5 / loss of the raw and the EMA weights of `state` over the whole eval split."""
    from effscale import data

    passes = {"": {"params": state.params, "batch_stats": state.batch_stats}}
    # ema_decay=0 makes the average the weights themselves (decay min(0, ...) = 0): one pass serves both.
    if setup.config.train.ema_decay != 0:
        passes["_ema"] = {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    sums: dict[str, list[dict[str, jax.Array]]] = {suffix: [] for suffix in passes}
    start = time.perf_counter()
    batches = data.eval_batches(
        setup.config.data, setup.net.resolution, setup.local_eval_batch, jax.process_index(), setup.processes
    )
    for local in batches:
        batch = parallel.global_batch(pad(local, setup.local_eval_batch), setup.batch_sharding)
        for suffix, variables in passes.items():
            sums[suffix].append(eval_fn(variables, batch))
    fetched = jax.device_get(sums)  # one host sync for the whole pass
    seconds = time.perf_counter() - start
    raw = _fractions(fetched[""])
    ema = _fractions(fetched["_ema"]) if "_ema" in fetched else raw
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
    )


def _fractions(sums: list[Mapping[str, Any]]) -> tuple[float, float, float, float]:
    """(top-1, top-5, mean loss, count) from per-batch sums."""
    total = {k: float(sum(s[k] for s in sums)) for k in ("top1", "top5", "loss", "count")}
    count = max(total["count"], 1.0)
    return total["top1"] / count, total["top5"] / count, total["loss"] / count, total["count"]
