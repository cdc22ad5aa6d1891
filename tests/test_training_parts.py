"""The trainer's parts on their own: setup, phases, run record, evaluation helpers, progress, signals.

No training here: the end-to-end runs are in test_train.py, test_finetune.py and test_parallel.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_support import SYNTHETIC_TRAIN, synthetic_data, tiny_config

from effscale import complexity, record
from effscale.training import errors, evaluation, progress, recording, setup, signals, state


def _two_phases():
    c = tiny_config("synthetic")
    c.train.num_steps = None
    c.transfer.phases = (
        {"freeze": "base", "steps": 3, "learning_rate": 0.016},
        {"freeze": "below:block2b", "epochs": 2.0 / (SYNTHETIC_TRAIN // 8), "learning_rate": 0.004},
    )
    return c


def _make(config) -> setup.RunSetup:
    with synthetic_data():
        return setup.make_setup(config)


def test_setup_builds_every_phase_up_front_and_is_frozen():
    run = _make(_two_phases())
    assert [(p.index, p.start, p.end, p.freeze) for p in run.phases] == [(0, 0, 3, "base"), (1, 3, 5, "below:block2b")]
    assert run.total_steps == 5 and run.steps_per_epoch == SYNTHETIC_TRAIN // 8
    assert len(run.parts) == 2 and all(p.labels is not None for p in run.parts)
    assert run.phases[1].train.learning_rate == 0.004 and run.config.train.learning_rate != 0.004
    # A checkpoint at a phase's last step holds that phase's optimizer.
    assert [run.phase_of(s).index for s in (0, 3, 4, 5, 99)] == [0, 0, 1, 1, 1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.phases = ()
    # Phase 2 trains more than phase 1 (block2b and the top too), so its optimizer holds more state.
    sizes = [sum(np.size(x) for x in jax.tree.leaves(state.abstract_state(run, p).opt_state)) for p in run.phases]
    assert 0 < sizes[0] < sizes[1]


def test_setup_refuses_a_batch_larger_than_the_dataset():
    config = tiny_config("synthetic")
    config.train.batch_size = 2 * SYNTHETIC_TRAIN
    with pytest.raises(ValueError, match=f"batch_size={2 * SYNTHETIC_TRAIN} exceeds the {SYNTHETIC_TRAIN}"):
        _make(config)


def test_config_errors_marks_value_errors_only():
    with pytest.raises(errors.ConfigError, match="bad field"), errors.config_errors():
        raise ValueError("bad field")
    with pytest.raises(RuntimeError), errors.config_errors():
        raise RuntimeError("not validation")


def _result(**changes) -> evaluation.EvalResult:
    fields = dict(top1=0.5, top5=0.75, loss=1.25, top1_ema=0.625, top5_ema=0.875, loss_ema=1.0, examples=40)
    return evaluation.EvalResult(**{**fields, "images_per_sec": 100.0, **changes})


def test_run_record_fields_come_from_setup_eval_and_timings():
    run = _make(tiny_config("synthetic", steps=6))
    final = _result()
    rec = recording.run_record(
        run,
        "finished",
        6,
        final,
        compile_time_s=2.0,
        wall_time_s=9.0,
        best_eval_top1=0.7,
        train={"loss": 0.3, "accuracy": 0.9, "lr": 0.01},
        step_time_s=0.5,
        resumed_from_step=2,
    )
    cost = complexity.analyse(run.net)
    assert (rec.params, rec.macs, rec.activations) == (cost.params, cost.macs, cost.activations)
    assert (rec.dataset, rec.num_classes, rec.resolution) == ("synthetic", 10, 16)
    assert rec.epochs == 6 / (SYNTHETIC_TRAIN // 8) and rec.train_images_per_sec == 8 / 0.5
    assert (rec.eval_top1, rec.eval_top5_ema, rec.eval_loss_ema, rec.eval_examples) == (0.5, 0.875, 1.0, 40)
    assert (rec.train_loss, rec.train_accuracy, rec.best_eval_top1) == (0.3, 0.9, 0.7)
    assert rec.config["model"]["num_classes"] == 10 and rec.xla_flops is None
    assert record.RunRecord.from_json(rec.to_json()) == dataclasses.replace(rec, config=rec.to_json()["config"])
    evaluated = recording.run_record(run, "evaluated", 4, final, compile_time_s=1.0, wall_time_s=2.0)
    assert evaluated.train_loss is None and evaluated.train_images_per_sec is None and evaluated.best_eval_top1 is None


def test_eval_result_reads_back_from_its_log_event():
    result = _result()
    event = {"step": 7, "kind": "eval", "epoch": 0.5, **result.metrics()}
    assert evaluation.EvalResult.from_metrics(event) == result
    assert result.best_top1 == 0.625


def test_pad_masks_out_the_filler():
    batch = {"image": np.ones((3, 2, 2, 1), np.float32), "label": np.arange(1, 4), "mask": np.ones(3, bool)}
    padded = evaluation.pad(batch, 5)
    assert padded["image"].shape == (5, 2, 2, 1) and not padded["image"][3:].any()
    np.testing.assert_array_equal(padded["mask"], [True, True, True, False, False])
    np.testing.assert_array_equal(padded["label"], [1, 2, 3, 0, 0])
    assert evaluation.pad(batch, 3)["label"] is batch["label"]


def _metrics(loss: float, accuracy: float, lr: float) -> dict[str, jax.Array]:
    return {"loss": jnp.float32(loss), "accuracy": jnp.float32(accuracy), "lr": jnp.float32(lr)}


def test_pending_metrics_average_and_find_the_first_nan():
    pending = progress.Pending()
    pending.add(1, _metrics(1.0, 0.5, 0.1))
    pending.add(2, _metrics(3.0, 1.0, 0.2))
    assert progress.means(pending.fetch()) == pytest.approx({"loss": 2.0, "accuracy": 0.75, "lr": 0.2})
    assert progress.means(pending.fetch()) is None
    pending.add(5, _metrics(2.0, 0.0, 0.1))
    pending.add(6, _metrics(math.nan, 0.0, 0.1))
    pending.add(7, _metrics(math.inf, 0.0, 0.1))
    step, loss = progress.first_non_finite(pending.fetch())
    assert step == 6 and math.isnan(loss)
    message = progress.diverged(6, loss, 4, [5, 6], "w")
    assert "at step 6" in message and "steps 5, 6" in message and "w keeps the last good checkpoint (step 4)" in message


def test_clock_leaves_out_the_warm_up_when_it_can():
    clock = progress.Clock()
    assert clock.step_time is None
    clock.add(10.0, 1, first=True)
    assert clock.step_time == 10.0
    clock.add(3.0, 2, first=False)
    clock.add(1.0, 2, first=False)
    assert clock.step_time == 1.0


def test_pace_of_a_run_resumed_near_its_end_is_the_earlier_segments():
    before = {"step_time_s": 0.9, "input_wait": 0.05}  # the stopped segment's last train event
    short = progress.Clock()
    short.add(16.5, 8, first=True, waited=4.0)  # 8 steps after a resume: warm-up only, 2.06 s a step
    assert progress.pace(short, before) == (0.9, 0.05)
    assert progress.pace(short, None) == (16.5 / 8, 4.0 / 16.5)
    assert progress.pace(short, {"step_time_s": math.nan}) == (16.5 / 8, 4.0 / 16.5)
    long = progress.Clock()
    long.add(16.5, 8, first=True)
    long.add(50.0, 50, first=False, waited=5.0)  # a steady interval of its own outranks the earlier pace
    assert progress.pace(long, before) == (1.0, 0.1)
    assert progress.pace(progress.Clock(), before) == (0.9, 0.05)  # resumed at its very end: no interval


def test_clock_input_wait_is_the_blocked_share_of_the_wall_time():
    clock = progress.Clock()
    assert clock.input_wait is None
    clock.add(10.0, 1, first=True, waited=9.0)  # the warm-up counts only while it is all there is
    assert clock.input_wait == pytest.approx(0.9)
    clock.add(4.0, 2, first=False, waited=1.0)
    clock.add(4.0, 2, first=False, waited=0.0)
    assert clock.input_wait == pytest.approx(1.0 / 8.0)


def test_duration():
    assert progress.duration(3723) == "1h02m03s"
    assert progress.duration(59.9) == "0m59s"
    assert progress.duration(-5) == "0m00s"


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.01)


def test_stop_request_turns_signals_into_a_flag_and_restores_handlers():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with signals.StopRequest() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: stop.signum is not None)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a Ctrl-C while stopping: stop now
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=2.0)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_interrupted_names_the_signal_and_the_fix():
    e = errors.Interrupted(7, signal.SIGTERM, "/w")
    assert str(e) == "Stopped by SIGTERM at step 7; checkpoint saved in /w. Rerun to resume."
    assert "Stopped by stop_at_step at step 3" in str(errors.Interrupted(3, None, "/w", "stop_at_step"))


def test_a_request_the_run_took_too_late_passes_to_the_enclosing_stop_request():
    with signals.StopRequest() as outer:
        with signals.StopRequest() as inner:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for(lambda: inner.signum is not None)
        assert outer.signum == signal.SIGTERM
        with signals.StopRequest():  # a run that was not signalled passes nothing on
            pass
    assert outer.signum == signal.SIGTERM
    with signals.StopRequest() as untouched, signals.StopRequest():
        pass
    assert untouched.signum is None


def test_interrupted_before_the_first_step_says_nothing_was_saved():
    e = errors.Interrupted(0, signal.SIGTERM, "/w", saved=False)
    assert str(e) == (
        "Stopped by SIGTERM before training a step; nothing new to save (what /w holds is kept). Rerun to resume."
    )
    assert isinstance(errors.SweepStopped(signal.SIGINT, "/s"), errors.Interrupted)
    assert str(errors.SweepStopped(signal.SIGINT, "/s")).startswith("Stopped by SIGINT between sweep points")
