"""The trainer end to end on a tiny network: mocked TFDS datasets, resume, refusals, divergence.

Fashion-MNIST runs read small slices of the real dataset (prepared offline by effscale.data);
ImageNet and CIFAR-10 are `tfds.testing.mock_data`.
"""

from __future__ import annotations

import json
import os
import signal
import time

import jax
import numpy as np
import pytest
import train_support
from train_support import final_state, launch, mocked_dataset, tiny_config

from effscale import checkpoint, optim, record, train

train_support.use_compilation_cache()

RECORD_KEYS = {
    "config", "width", "depth", "resolution", "phi", "params", "macs", "activations", "xla_flops",
    "eval_top1", "eval_top5", "eval_top1_ema", "eval_top5_ema", "best_eval_top1", "steps", "epochs",
    "train_images_per_sec", "step_time_s", "input_wait_fraction", "eval_images_per_sec", "compile_time_s",
    "wall_time_s", "peak_memory_bytes", "peak_host_memory_bytes",
    "device_kind", "device_count", "process_count", "packages",
}  # fmt: skip


def _train_losses(workdir) -> dict[int, float]:
    events = map(json.loads, (workdir / record.METRICS).read_text().splitlines())
    losses = [(e["step"], e["loss"]) for e in events if e["kind"] == "train"]
    assert len({step for step, _ in losses}) == len(losses), "a step was logged twice"
    return dict(losses)


def _assert_same_state(a: train.TrainState, b: train.TrainState) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("name", "classes", "dtype"), [("imagenet2012", 1000, "float32"), ("cifar10", 10, "bfloat16")])
def test_one_step_on_mocked_dataset(tmp_path, name, classes, dtype):
    config = tiny_config(name, steps=1)
    config.model.dtype = dtype
    config.data.manual_dir = str(tmp_path)  # imagenet2012 needs one; the mock never reads it
    # tfds' mock and orbax's background writer trip over each other; the real runs save asynchronously.
    config.train.async_checkpoints = False
    with mocked_dataset(name, num_examples=16, manual_dir=str(tmp_path)):
        out = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert set(out.to_json()) >= RECORD_KEYS
    assert out.status == "finished" and out.format_version == record.FORMAT_VERSION
    assert out.steps == 1 and out.num_classes == classes and out.config["model"]["num_classes"] == classes
    for key in ("eval_top1", "eval_top5", "eval_top1_ema", "eval_top5_ema", "best_eval_top1"):
        assert 0.0 <= getattr(out, key) <= 1.0
    assert out.eval_top5 >= out.eval_top1
    assert out.eval_examples == 16
    # XLA:CPU keeps no allocator statistics; the host's peak is at least the weights' bytes in float32.
    assert out.peak_memory_bytes is None and out.peak_host_memory_bytes > 4 * out.params
    # What the run wrote is what it returned, and reads back as the same record.
    written = tmp_path / "run" / record.RESULT
    assert json.loads(written.read_text()) == out.to_json()
    assert record.read_record(written).to_json() == out.to_json()
    events = [json.loads(line) for line in (tmp_path / "run" / record.METRICS).read_text().splitlines()]
    assert {e["kind"] for e in events} == {"train", "eval"}
    assert os.listdir(tmp_path / "run" / "tb")


def test_interrupted_run_resumes_exactly(tmp_path):
    config = tiny_config(steps=6)
    reference = train.train_and_evaluate(config, str(tmp_path / "ref"))

    with pytest.raises(train.Interrupted, match="step 3"):
        train.train_and_evaluate(config, str(tmp_path / "cut"), stop_at_step=3)
    assert not (tmp_path / "cut" / record.RESULT).exists()
    resumed = train.train_and_evaluate(config, str(tmp_path / "cut"))
    assert resumed.resumed_from_step == 3

    for key in ("eval_top1", "eval_top5", "eval_top1_ema", "eval_top5_ema", "eval_loss", "train_loss"):
        assert getattr(resumed, key) == pytest.approx(getattr(reference, key), rel=1e-6), key
    _assert_same_state(final_state(str(tmp_path / "ref"), config), final_state(str(tmp_path / "cut"), config))
    # The metrics log reads as one run: every step once, the same losses.
    assert _train_losses(tmp_path / "cut") == pytest.approx(_train_losses(tmp_path / "ref"), rel=1e-6)

    # --mode=eval re-evaluates the latest checkpoint to the same figures, as a run record of its own.
    again = train.evaluate(config, str(tmp_path / "ref"))
    assert again.status == "evaluated" and again.steps == 6
    for key in ("eval_top1", "eval_top5", "eval_top1_ema", "eval_top5_ema", "eval_loss", "eval_loss_ema"):
        assert getattr(again, key) == pytest.approx(getattr(reference, key), rel=1e-6), key
    counts = ("params", "macs", "activations", "eval_examples", "steps_per_epoch", "epochs", "batch_size")
    assert [getattr(again, k) for k in counts] == [getattr(reference, k) for k in counts]
    assert record.read_record(tmp_path / "ref" / record.EVAL).to_json() == again.to_json()
    assert record.read_record(tmp_path / "ref" / record.RESULT).to_json() == reference.to_json()


def _wait_for_checkpoint(workdir, proc, after: int = 0, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        names = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
        steps = [int(n) for n in names if n.isdigit() and int(n) > after]  # complete ones: tmp dirs have suffixes
        if steps:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow  # two launched runs (one killed, one stopped) and a reference run
def test_kill9_and_sigterm_lose_nothing_but_the_tail(tmp_path):
    """kill -9 after a checkpoint, then SIGTERM (saves, exits cleanly), then finish: as if never stopped."""
    steps = 40
    args = ["--config", "tests/train_support.py", f"--config.train.num_steps={steps}"]
    config = tiny_config(steps=steps)
    reference = train.train_and_evaluate(config, str(tmp_path / "ref"))
    workdir = tmp_path / "run"

    proc = launch(*args, f"--workdir={workdir}")
    _wait_for_checkpoint(workdir, proc)
    proc.kill()
    proc.wait()
    assert not (workdir / record.RESULT).exists(), "the run finished before it could be killed"
    first = checkpoint.Manager(str(workdir), 1, 1)
    killed_at = first.latest_step()
    first.close()

    proc = launch(*args, f"--workdir={workdir}")
    _wait_for_checkpoint(workdir, proc, after=killed_at)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Rerun to resume" in err and "Traceback" not in err

    resumed = train.train_and_evaluate(config, str(workdir))
    assert killed_at < resumed.resumed_from_step < steps
    for key in ("eval_top1", "eval_top1_ema", "eval_loss", "train_loss"):
        assert getattr(resumed, key) == pytest.approx(getattr(reference, key), rel=1e-5), key
    _assert_same_state(final_state(str(tmp_path / "ref"), config), final_state(str(workdir), config))


def test_incompatible_workdir_is_refused_and_kept(tmp_path):
    config = tiny_config(steps=1)
    train.train_and_evaluate(config, str(tmp_path))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    other = tiny_config(steps=1)
    other.model.head_channels = 48
    with pytest.raises(ValueError, match="different network or dataset.*head_channels"):
        train.train_and_evaluate(other, str(tmp_path))
    other = tiny_config("cifar10", steps=1)
    with pytest.raises(ValueError, match="dataset"), mocked_dataset("cifar10", 16, str(tmp_path)):
        train.train_and_evaluate(other, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_nan_loss_deletes_the_checkpoints_that_led_to_it_and_a_rerun_trains(tmp_path):
    config = tiny_config(steps=6)
    config.train.checkpoint_every_steps = 1
    # Warm-up from 0: step 1 does not move the weights, step 2 blows them up, step 3's loss is NaN.
    config.train.warmup_epochs = 10 / (train_support.FASHION_TRAIN // config.train.batch_size)
    sane = config.train.learning_rate
    config.train.learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r"at step 3.*steps 2: .*keeps the last good checkpoint .step 1"):
        train.train_and_evaluate(config, str(tmp_path))
    # The state saved at step 2 produced the NaN: it is gone; step 1's produced a finite loss.
    assert os.listdir(tmp_path / "checkpoints") == ["1"]
    assert not (tmp_path / record.RESULT).exists()

    config.train.learning_rate = sane
    out = train.train_and_evaluate(config, str(tmp_path))
    assert out.resumed_from_step == 1 and np.isfinite(out.train_loss) and np.isfinite(out.eval_loss)
    assert sorted(_train_losses(tmp_path)) == list(range(1, 7))


def test_nan_loss_at_the_second_step_leaves_no_checkpoint_and_a_rerun_starts_over(tmp_path):
    config = tiny_config(steps=4)
    config.train.checkpoint_every_steps = 1
    sane = config.train.learning_rate
    config.train.learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r"at step 2.*steps 1: .*keeps no checkpoint"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not checkpoint.has_checkpoint(str(tmp_path))
    config.train.learning_rate = sane
    out = train.train_and_evaluate(config, str(tmp_path))
    assert out.resumed_from_step == 0 and np.isfinite(out.train_loss)


_TIMINGS = (
    "images_per_sec",
    "step_time_s",
    "compile_time_s",
    "wall_time_s",
    "memory_bytes",
    "compile_cache_hits",  # a resumed run initialises nothing: one compile fewer
    "resumed_from_step",
    "input_wait",
    "input_wait_fraction",
)


def _untimed(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.endswith(_TIMINGS)}


def _assert_close(a: dict, b: dict) -> None:
    """Equal keys; numbers equal to float32 rounding, anything else exactly."""
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(b[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
        else:
            assert a[key] == b[key], key


def test_a_resumed_run_logs_and_records_what_an_uninterrupted_one_does(tmp_path):
    """Stops on an eval point and between log points, then a rerun after the last checkpoint."""
    config = tiny_config(steps=8)
    steps_per_epoch = train_support.FASHION_TRAIN // config.train.batch_size
    config.train.log_every_steps = 4
    config.train.eval_every_epochs = 3 / steps_per_epoch  # evaluations at steps 3 and 6
    train.train_and_evaluate(config, str(tmp_path / "ref"))
    for stop in (3, 7):  # 3: an eval point, skipped by the stop; 7: its train metrics are logged at 8
        with pytest.raises(train.Interrupted, match=f"step {stop}"):
            train.train_and_evaluate(config, str(tmp_path / "cut"), stop_at_step=stop)
    train.train_and_evaluate(config, str(tmp_path / "cut"))

    def log(name):
        return [_untimed(json.loads(line)) for line in (tmp_path / name / record.METRICS).read_text().splitlines()]

    ref, cut = log("ref"), log("cut")
    assert [(e["step"], e["kind"]) for e in ref] == [(3, "eval"), (4, "train"), (6, "eval"), (8, "train"), (8, "eval")]
    assert [(e["step"], e["kind"]) for e in cut] == [(e["step"], e["kind"]) for e in ref]
    for a, b in zip(cut, ref, strict=True):
        _assert_close(a, b)

    def result(name):
        return _untimed(json.loads((tmp_path / name / record.RESULT).read_text()))

    reference = result("ref")
    _assert_close(result("cut"), reference)
    # Killed after its last checkpoint: the rerun only evaluates, and records the same fields.
    (tmp_path / "ref" / record.RESULT).unlink()
    again = train.train_and_evaluate(config, str(tmp_path / "ref"))
    assert again.resumed_from_step == 8
    assert None not in (again.train_loss, again.train_accuracy, again.train_images_per_sec, again.step_time_s,
                        again.input_wait_fraction)  # fmt: skip
    _assert_close(result("ref"), reference)


def test_bad_inputs_get_clear_errors(tmp_path):
    config = tiny_config()
    config.data.name = "no_such_dataset"
    with pytest.raises(ValueError, match="Unknown dataset"):
        train.train_and_evaluate(config, str(tmp_path))
    config = tiny_config()
    config.data.manual_dir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="not found"):
        train.train_and_evaluate(config, str(tmp_path))
    with pytest.raises(ValueError, match="No checkpoint"):
        train.evaluate(tiny_config(), str(tmp_path / "nothing"))


def test_launch_prints_config_errors_without_traceback(tmp_path):
    proc = launch("--config", "tests/train_support.py", "--config.data.name=no_such_dataset", f"--workdir={tmp_path}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "effscale: error: Unknown dataset 'no_such_dataset'" in err and "Traceback" not in err


def test_input_wait_reports_a_slow_input_pipeline(tmp_path, monkeypatch):
    """A pipeline that takes 0.3 s a batch, for steps of milliseconds: the run was input-bound."""
    from effscale import data

    real = data.train_batches

    def slow(*args, **kwargs):
        for batch in real(*args, **kwargs):
            time.sleep(0.3)
            yield batch

    config = tiny_config(steps=6)
    fast = train.train_and_evaluate(config, str(tmp_path / "fast"))
    monkeypatch.setattr(data, "train_batches", slow)
    slowed = train.train_and_evaluate(config, str(tmp_path / "slow"))
    assert 0.0 <= fast.input_wait_fraction < slowed.input_wait_fraction
    assert slowed.input_wait_fraction > 0.8
    logged = [json.loads(line) for line in (tmp_path / "slow" / record.METRICS).read_text().splitlines()]
    assert all(e["input_wait"] > 0.8 for e in logged if e["kind"] == "train")


def test_schedule_warms_up_then_decays():
    config = tiny_config().train
    config.batch_size, config.learning_rate, config.warmup_epochs = 512, 0.016, 1.0
    lr = optim.schedule(config, steps_per_epoch=10, total_steps=100)
    peak = 0.032
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(peak / 2)
    # Staircase x0.97 every 2.4 epochs (24 steps), counted from step 0 as the official code does.
    assert float(lr(10)) == pytest.approx(peak) and float(lr(50)) == pytest.approx(peak * 0.97**2)
    config.lr_schedule = "cosine"
    lr = optim.schedule(config, steps_per_epoch=10, total_steps=100)
    assert float(lr(10)) == pytest.approx(peak) and float(lr(100)) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_skips_batchnorm():
    params = {"stem_conv": {"kernel": 1}, "stem_bn": {"scale": 1, "bias": 1}, "block1a": {"project_bn": {"scale": 1}}}
    mask = optim.decay_mask(params)
    assert mask == {"stem_conv": {"kernel": True}, "stem_bn": {"scale": False, "bias": False},
                    "block1a": {"project_bn": {"scale": False}}}  # fmt: skip


def test_ema_decay_warms_up():
    assert float(train.ema_decay(0.9999, np.int32(0))) == pytest.approx(0.1)
    assert float(train.ema_decay(0.9999, np.int32(10**7))) == pytest.approx(0.9999)
