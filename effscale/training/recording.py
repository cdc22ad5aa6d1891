"""The run record (effscale.record.RunRecord) of a run, made in one place for training and --mode=eval."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax

from effscale import complexity, parallel, record
from effscale.training.evaluation import EvalResult
from effscale.training.setup import RunSetup

log = logging.getLogger("effscale")


def run_record(
    setup: RunSetup,
    status: str,
    steps: int,
    final: EvalResult,
    *,
    compile_time_s: float,
    wall_time_s: float,
    best_eval_top1: float | None = None,
    train: Mapping[str, float] | None = None,
    step_time_s: float | None = None,
    input_wait: float | None = None,
    resumed_from_step: int | None = None,
) -> record.RunRecord:
    """What `setup` trained, on what, and what it measured: `final` after `steps` steps, `train`'s last means."""
    net, t = setup.net, setup.config.train
    cost = complexity.analyse(net)
    return record.RunRecord(
        status=status,
        dataset=setup.info.name,
        num_classes=net.num_classes,
        width=net.width,
        depth=net.depth,
        resolution=net.resolution,
        params=cost.params,
        macs=cost.macs,
        activations=cost.activations,
        batch_size=t.batch_size,
        steps=steps,
        steps_per_epoch=setup.steps_per_epoch,
        epochs=steps / setup.steps_per_epoch,
        eval_top1=final.top1,
        eval_top5=final.top5,
        eval_top1_ema=final.top1_ema,
        eval_top5_ema=final.top5_ema,
        eval_loss=final.loss,
        eval_loss_ema=final.loss_ema,
        eval_examples=final.examples,
        phi=net.phi,
        xla_flops=complexity.xla_flops(net) if t.xla_flops else None,
        eval_images_per_sec=final.images_per_sec,
        best_eval_top1=best_eval_top1,
        train_loss=train["loss"] if train else None,
        train_accuracy=train["accuracy"] if train else None,
        train_images_per_sec=t.batch_size / step_time_s if step_time_s else None,
        step_time_s=step_time_s,
        input_wait_fraction=input_wait,
        resumed_from_step=resumed_from_step,
        compile_time_s=compile_time_s,
        wall_time_s=wall_time_s,
        **parallel.describe(),
        packages=record.package_versions(),
        config=setup.config.to_dict(),
    )


def publish(workdir: str, name: str, run: record.RunRecord) -> None:
    """Writes `run` to `<workdir>/<name>` atomically, on process 0 only."""
    if jax.process_index() != 0:
        return
    record.write_record(os.path.join(workdir, name), run)
    log.info("Wrote %s/%s: eval top-1 %.4f (EMA %.4f).", workdir, name, run.eval_top1, run.eval_top1_ema)
