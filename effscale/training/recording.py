"""The run record (effscale.record.RunRecord) of a run, made in one place for training and --mode=eval."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax

from effscale import complexity, parallel, record
from effscale.training import memory
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
    validation: EvalResult | None = None,
    best_val: tuple[int, float] | None = None,
    test_top1_best: float | None = None,
    compile_cache_hits: int | None = None,
) -> record.RunRecord:
    """What `setup` trained, on what, and what it measured: `final` (the test split) after `steps` steps,
    `validation` at the same step, `best_val` (step, top-1) of the in-run evaluations, `train`'s last means."""
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
        val_top1=validation.top1 if validation else None,
        val_top1_ema=validation.top1_ema if validation else None,
        val_examples=validation.examples if validation else None,
        best_val_top1=best_val[1] if best_val else None,
        best_val_step=best_val[0] if best_val else None,
        test_top1=final.top1,
        test_top5=final.top5,
        test_top1_ema=final.top1_ema,
        test_top1_best=test_top1_best,
        train_loss=train["loss"] if train else None,
        train_accuracy=train["accuracy"] if train else None,
        train_images_per_sec=t.batch_size / step_time_s if step_time_s else None,
        step_time_s=step_time_s,
        input_wait_fraction=input_wait,
        resumed_from_step=resumed_from_step,
        compile_time_s=compile_time_s,
        compile_cache_hits=compile_cache_hits,
        wall_time_s=wall_time_s,
        peak_memory_bytes=memory.device_peak_bytes(),
        peak_host_memory_bytes=memory.host_peak_bytes(),
        **parallel.describe(),
        packages=record.package_versions(),
        config=setup.config.to_dict(),
    )


def publish(workdir: str, name: str, run: record.RunRecord) -> None:
    """Writes `run` to `<workdir>/<name>` atomically, on process 0 only."""
    if jax.process_index() != 0:
        return
    record.write_record(os.path.join(workdir, name), run)
    log.info("Wrote %s/%s: test top-1 %.4f (EMA %.4f).", workdir, name, run.eval_top1, run.eval_top1_ema)
    if run.best_val_step is not None:
        log.info(
            "Validation top-1 %.4f (EMA %.4f); best %.4f at step %d, whose weights score %s on the test split.",
            run.val_top1,
            run.val_top1_ema,
            run.best_val_top1,
            run.best_val_step,
            "?" if run.test_top1_best is None else f"{run.test_top1_best:.4f}",
        )
