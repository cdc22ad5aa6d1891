"""Held-out validation: the carved split, the best weights chosen on it, the test figures, resume; the compile cache.

Truths are independent of the code under test: split sizes worked out by hand, images decoded from
the IDX files here, the best step found from the metrics log, the best weights' test accuracy
computed with the network applied to the test images directly.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import train_support
from train_support import mocked_dataset, tiny_config

from configs import default
from effscale import checkpoint, compile_cache, data, record, train
from effscale.training import evaluation, setup, state

train_support.use_compilation_cache()

IDX_DIR = "/usr/share/datasets/fashion-mnist"
needs_idx = pytest.mark.skipif(
    not os.path.isfile(os.path.join(IDX_DIR, "train-labels-idx1-ubyte.gz")),
    reason="apt-get install dataset-fashion-mnist",
)
TINY_TRAIN, TINY_VALIDATION = 922, 102  # train[:1024]: 10% (102) held out, the rest trains
STEPS_PER_EPOCH = TINY_TRAIN // 8


def _idx(name: str) -> np.ndarray:
    """Independent IDX decode: 16-byte header for images (N, 28, 28), 8-byte header for labels."""
    with gzip.open(os.path.join(IDX_DIR, name)) as f:
        raw = f.read()
    if "images" in name:
        return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(raw, np.uint8, offset=8)


def _split_infos(**sizes: int) -> tfds.core.SplitDict:
    return tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0) for name, n in sizes.items()]
    )


def _data_config(**fields):
    c = default.get_config().data
    for key, value in fields.items():
        c[key] = value
    return c


def _events(workdir, kind: str = "eval") -> list[dict]:
    lines = (workdir / record.METRICS).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


# ---------------------------------------------------------------------------------------------
# Which splits a run reads


@pytest.mark.parametrize(
    ("train_split", "sizes", "expected"),
    [
        # Fashion-MNIST and CIFAR-10: 10% is more than 5,000, so the last 5,000.
        ("train", {"train": 60_000, "test": 10_000}, ("train[0:55000]", "train[55000:60000]")),
        ("train", {"train": 50_000, "test": 10_000}, ("train[0:45000]", "train[45000:50000]")),
        # ImageNet: its 'validation' is the test split; 1% of 1,281,167 (12,812, rounded as TFDS rounds
        # 'train[99%:]') beats the 5,000 cap.
        ("train", {"train": 1_281_167, "validation": 50_000}, ("train[0:1268355]", "train[1268355:1281167]")),
        # A slice is carved from its own end: 10% of 1,024 rounded down is 102.
        ("train[:1024]", {"train": 60_000, "test": 10_000}, ("train[0:922]", "train[922:1024]")),
        ("train[100:200]", {"train": 60_000, "test": 10_000}, ("train[100:190]", "train[190:200]")),
        ("train[:10%]", {"train": 60_000, "test": 10_000}, ("train[0:5400]", "train[5400:6000]")),
    ],
)
def test_auto_carves_the_end_of_the_training_split(train_split, sizes, expected):
    c = _data_config(train_split=train_split)
    splits = data.resolve_splits(c, _split_infos(**sizes))
    assert (splits.train, splits.validation) == expected
    assert splits == data.resolve_splits(c, _split_infos(**sizes))  # a function of the config and sizes alone


def test_the_imagenet_minival_is_the_one_tfds_reads_as_train_99_percent():
    infos = _split_infos(train=1_281_167, validation=50_000)
    (part,) = tfds.core.ReadInstruction.from_spec("train[99%:]").to_absolute(infos)
    assert data.resolve_splits(_data_config(), infos).validation == f"train[{part.from_}:1281167]"


def test_validation_modes_and_explicit_counts():
    infos = _split_infos(train=60_000, test=10_000)
    assert data.resolve_splits(_data_config(validation="none"), infos) == data.Splits("train", None, "test")
    own = data.resolve_splits(_data_config(validation="train[-500:]", train_split="train[:59500]"), infos)
    assert own == data.Splits("train[:59500]", "train[-500:]", "test")
    counted = data.resolve_splits(_data_config(validation_examples=100), infos)
    assert (counted.train, counted.validation) == ("train[0:59900]", "train[59900:60000]")
    # A dataset with a validation split of its own that is not the test split: that one, whole or its first N.
    three = _split_infos(train=1000, validation=200, test=300)
    assert data.resolve_splits(_data_config(eval_split="test"), three) == data.Splits("train", "validation", "test")
    first = data.resolve_splits(_data_config(eval_split="test", validation_examples=50), three)
    assert first.validation == "validation[:50]"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"train_split": "train[:1024]", "validation_examples": 1024}, "validation_examples=1024 leaves no training"),
        ({"train_split": "train[:1]"}, "validation='auto' leaves no training examples"),
        ({"validation": "train[59000:]"}, r"validation='train\[59000:\]' overlaps config.data.train_split='train'"),
        ({"train_split": "train+test"}, "cannot carve from config.data.train_split='train\\+test'"),
        ({"validation": "nosuch"}, "config.data.validation='nosuch' is not a split of this dataset"),
        ({"eval_split": "test", "validation_examples": 201}, "validation_examples=201 exceeds the 200 examples"),
    ],
)
def test_impossible_validation_splits_are_one_line_errors(fields, message):
    infos = _split_infos(train=60_000, validation=200, test=300) if "eval_split" in fields else None
    infos = infos or _split_infos(train=60_000, test=10_000)
    with pytest.raises(ValueError, match=message) as err:
        data.resolve_splits(_data_config(**fields), infos)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"validation": "train[:3"}, "config.data.validation='train\\[:3' is not a TFDS split"),
        ({"validation": ""}, "config.data.validation=''"),
        ({"validation_examples": 0}, "config.data.validation_examples=0; expected an integer >= 1"),
        ({"validation": "none", "validation_examples": 10}, "validation_examples=10 applies to validation='auto'"),
    ],
)
def test_bad_validation_fields_are_refused_before_any_data_is_read(tmp_path, fields, message):
    c = _data_config(name="fashion_mnist", data_dir=str(tmp_path), **fields)
    with pytest.raises(ValueError, match=message):
        data.dataset_info(c)
    assert list(tmp_path.iterdir()) == []


@needs_idx
def test_carved_split_is_disjoint_from_training_and_holds_the_last_images():
    c = tiny_config().data  # train[:1024] of Fashion-MNIST
    c.train_crop, c.flip, c.eval_crop_padding = "none", False, 0
    c.mean, c.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    info = data.dataset_info(c)
    assert (info.train_examples, info.validation_examples, info.eval_examples) == (TINY_TRAIN, TINY_VALIDATION, 40)

    def pixels(batches):
        kept = [b["image"][b["mask"]] if "mask" in b else b["image"] for b in batches]
        return np.round(np.concatenate(kept)[..., 0] * 255).astype(np.uint8)

    truth = _idx("train-images-idx3-ubyte.gz")[:1024]
    validation = pixels(data.validation_batches(c, 28, 16))
    np.testing.assert_array_equal(validation, truth[TINY_TRAIN:])  # in file order, every one once
    np.testing.assert_array_equal(pixels(data.validation_batches(c, 28, 16)), validation)
    # One epoch of training (two batches of 461) is exactly the first 922 images, shuffled.
    stream = data.train_batches(c, 28, TINY_TRAIN // 2, seed=0)
    epoch = pixels([next(stream), next(stream)])
    assert sorted(map(bytes, epoch)) == sorted(map(bytes, truth[:TINY_TRAIN]))
    assert not {bytes(x) for x in epoch} & {bytes(x) for x in validation}


def test_a_dataset_with_its_own_validation_split_reads_it(tmp_path):
    c = tiny_config("cifar10").data
    c.eval_split = "test"
    infos = _split_infos(train=16, validation=8, test=12)
    reads = mock.Mock(wraps=data._read)
    with (
        tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE),
        mock.patch.object(tfds.core.DatasetInfo, "splits", new_callable=mock.PropertyMock, return_value=infos),
        mock.patch.object(data, "_read", reads),
    ):
        info = data.dataset_info(c)
        assert (info.train_examples, info.validation_examples, info.eval_examples) == (16, 8, 12)
        batches = list(data.validation_batches(c, 16, 8))
    assert [str(call.args[1]) for call in reads.call_args_list] == [
        str(tfds.split_for_jax_process("validation", process_index=0, process_count=1))
    ]
    assert len(batches) == 1 and batches[0]["mask"].sum() == 8


def test_imagenet_validation_is_its_test_split_so_a_minival_is_carved(tmp_path):
    c = tiny_config("imagenet2012").data
    c.manual_dir = str(tmp_path)
    with mocked_dataset("imagenet2012", 200, str(tmp_path)):
        info = data.dataset_info(c)
        # 200 training images: 10% (20) held out; the dataset's 'validation' split is the test split.
        assert (info.train_examples, info.validation_examples, info.eval_examples) == (180, 20, 200)


# ---------------------------------------------------------------------------------------------
# The trainer: best on validation, test at the end, resume


def _test_accuracy(config, workdir, step: int, weights: str) -> float:
    """Top-1 on test[:40] of the `weights` ('raw' | 'ema') of checkpoint `step`, the network applied directly."""
    run = setup.make_setup(config)
    manager = checkpoint.Manager(str(workdir), 1, 100)
    try:
        restored = manager.restore(state.abstract_state(run), step)
    finally:
        manager.close()
    ema = weights == evaluation.EMA
    variables = {
        "params": restored.ema_params if ema else restored.params,
        "batch_stats": restored.ema_batch_stats if ema else restored.batch_stats,
    }
    gray = _idx("t10k-images-idx3-ubyte.gz")[:40]
    images = np.stack([data.preprocess_eval(np.repeat(g[..., None], 3, -1), config.data, 16).numpy() for g in gray])
    logits = run.module.apply(variables, images, train=False)
    return float(np.mean(np.argmax(logits, -1) == _idx("t10k-labels-idx1-ubyte.gz")[:40]))


@needs_idx
def test_best_is_chosen_on_validation_and_its_weights_are_tested(tmp_path):
    config = tiny_config(steps=6)
    config.train.eval_every_epochs = 1 / STEPS_PER_EPOCH  # a validation evaluation after every step
    config.train.checkpoint_every_steps, config.train.keep_checkpoints = 1, 10
    config.train.async_checkpoints = False
    out = train.train_and_evaluate(config, str(tmp_path))

    evals = _events(tmp_path)
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5, 6]
    assert all(e["split"] == "validation" and e["examples"] == TINY_VALIDATION for e in evals)
    scores = [max(e["top1"], e["top1_ema"]) for e in evals]
    best = evals[int(np.argmax(scores))]  # the first of equals
    assert (out.best_val_step, out.best_val_top1) == (best["step"], max(scores))
    assert out.best_val_step < 6, "this run's validation curve peaks before the end (as measured)"
    weights = "ema" if best["top1_ema"] > best["top1"] else "raw"
    assert best["best_weights"] == weights and out.test_top1_best == best["best_test_top1"]
    assert out.test_top1_best == pytest.approx(_test_accuracy(config, tmp_path, out.best_val_step, weights))
    assert out.best_eval_top1 == out.test_top1_best  # older readers see the held-out choice

    # The final weights on both splits; eval_* stays the final evaluation of the test split.
    assert (out.val_top1, out.val_top1_ema, out.val_examples) == (evals[-1]["top1"], evals[-1]["top1_ema"], 102)
    assert (out.test_top1, out.test_top5, out.test_top1_ema) == (out.eval_top1, out.eval_top5, out.eval_top1_ema)
    assert out.eval_examples == 40
    assert out.test_top1 == pytest.approx(_test_accuracy(config, tmp_path, 6, "raw"))
    assert out.test_top1_ema == pytest.approx(_test_accuracy(config, tmp_path, 6, "ema"))
    assert record.read_record(tmp_path / record.RESULT).to_json() == out.to_json()


def _untimed(obj: dict) -> dict:
    timings = ("images_per_sec", "step_time_s", "compile_time_s", "wall_time_s", "resumed_from_step", "input_wait",
               "input_wait_fraction", "memory_bytes", "compile_cache_hits")  # fmt: skip
    return {k: v for k, v in obj.items() if not k.endswith(timings)}


def _assert_close(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(b[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
        else:
            assert a[key] == b[key], key


@needs_idx
def test_a_resumed_run_records_what_an_uninterrupted_one_does(tmp_path):
    """Stopped on an eval point (2) and after the best (5): the same log, best and test figures."""
    config = tiny_config(steps=6)
    config.train.eval_every_epochs = 2 / STEPS_PER_EPOCH  # validation at steps 2, 4, 6
    config.train.checkpoint_every_steps = 1
    reference = train.train_and_evaluate(config, str(tmp_path / "ref"))
    for stop in (2, 5):
        with pytest.raises(train.Interrupted, match=f"step {stop}"):
            train.train_and_evaluate(config, str(tmp_path / "cut"), stop_at_step=stop)
    resumed = train.train_and_evaluate(config, str(tmp_path / "cut"))
    assert resumed.resumed_from_step == 5

    ref, cut = (list(map(_untimed, _events(tmp_path / name))) for name in ("ref", "cut"))
    assert [e["step"] for e in cut] == [e["step"] for e in ref] == [2, 4, 6]
    for a, b in zip(cut, ref, strict=True):
        _assert_close(a, b)
    _assert_close(_untimed(resumed.to_json()), _untimed(reference.to_json()))
    assert None not in (resumed.best_val_step, resumed.test_top1_best, resumed.val_top1, resumed.test_top1_ema)

    # --mode=eval: the last checkpoint on both splits again, its one compile (the eval step) served by the cache.
    again = train.evaluate(config, str(tmp_path / "cut"))
    for key in ("val_top1", "val_top1_ema", "val_examples", "test_top1", "test_top5", "test_top1_ema", "eval_top1"):
        assert getattr(again, key) == pytest.approx(getattr(reference, key), rel=1e-6), key
    assert again.best_val_step is None and again.compile_cache_hits == 1


@needs_idx
def test_without_validation_the_run_evaluates_on_the_test_split_as_before(tmp_path):
    config = tiny_config(steps=2)
    config.data.validation = "none"
    out = train.train_and_evaluate(config, str(tmp_path))
    (last,) = _events(tmp_path)
    assert last["split"] == "test" and last["examples"] == 40 and "best_test_top1" not in last
    assert out.steps_per_epoch == 1024 // 8
    assert (out.eval_top1, out.best_eval_top1) == (last["top1"], max(last["top1"], last["top1_ema"]))
    assert (out.val_top1, out.best_val_step, out.test_top1_best) == (None, None, None)


def test_too_large_a_validation_split_stops_the_run_before_it_compiles(tmp_path):
    config = tiny_config(steps=2)
    config.data.validation_examples = 1024
    with (
        mock.patch("effscale.training.loop.compile_train") as compile_train,
        pytest.raises(ValueError, match=r"config.data.validation_examples=1024 .*allows 1..1023"),
    ):
        train.train_and_evaluate(config, str(tmp_path))
    compile_train.assert_not_called()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Records and logs from before validation existed


def test_older_records_and_eval_events_still_read():
    old = {
        "status": "finished", "dataset": "fashion_mnist", "num_classes": 10, "width": 1.0, "depth": 1.0,
        "resolution": 16, "params": 1, "macs": 1, "activations": 1, "batch_size": 8, "steps": 2,
        "steps_per_epoch": 128, "epochs": 2 / 128, "eval_top1": 0.5, "eval_top5": 0.9, "eval_top1_ema": 0.5,
        "eval_top5_ema": 0.9, "eval_loss": 1.0, "eval_loss_ema": 1.0, "eval_examples": 40, "best_eval_top1": 0.6,
    }  # fmt: skip
    parsed = record.RunRecord.from_json(old)
    assert parsed.best_eval_top1 == 0.6 and parsed.val_top1 is None and parsed.test_top1_best is None
    with pytest.raises(record.RecordError, match="test_top1_best is an accuracy"):
        record.RunRecord.from_json({**old, "test_top1_best": 1.5})

    event = {"step": 4, "kind": "eval", "epoch": 0.1, "top1": 0.5, "top5": 0.9, "loss": 1.0, "top1_ema": 0.6,
             "top5_ema": 0.9, "loss_ema": 1.0, "examples": 40, "images_per_sec": 10.0}  # fmt: skip
    result = evaluation.EvalResult.from_metrics(event)
    assert (result.split, result.best_test_top1, result.better_weights) == ("test", None, "ema")
    with pytest.raises(KeyError, match="top1"):
        evaluation.EvalResult.from_metrics({k: v for k, v in event.items() if k != "top1"})


def test_best_of_takes_the_first_of_equal_scores_over_raw_and_ema():
    def result(top1, top1_ema):
        return evaluation.EvalResult(top1, 1.0, 0.0, top1_ema, 1.0, 0.0, 10, 1.0, split="validation")

    evals = [(1, result(0.2, 0.1)), (2, result(0.1, 0.3)), (3, result(0.3, 0.3)), (4, result(0.25, 0.2))]
    assert evaluation.best_of(evals)[0] == 2  # 0.3 (EMA) first at step 2
    assert evaluation.is_new_best(evals, result(0.31, 0.0)) and not evaluation.is_new_best(evals, result(0.3, 0.3))
    assert evaluation.is_new_best([], result(0.0, 0.0))


# ---------------------------------------------------------------------------------------------
# The persistent compilation cache


_CACHE_PROBE = textwrap.dedent(
    """
    import json, sys
    import jax
    from effscale import compile_cache
    before = jax.config.jax_compilation_cache_dir
    compile_cache.enable(sys.argv[1])
    with compile_cache.counting() as counts:
        jax.jit(lambda x: x * 2 + 1).lower(jax.ShapeDtypeStruct((3,), "float32")).compile()
    print(json.dumps({"before": before, "hits": counts.hits, "misses": counts.misses}))
    """
)


def test_compile_cache_serves_a_second_process(tmp_path):
    cache = tmp_path / "cache"
    # A plain environment: none of the cache settings the other tests' subprocesses get.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(train_support.ROOT))
    answers = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(cache)], cwd=train_support.ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        answers.append(train_support.last_json_line(done.stdout))
    assert answers[0] == {"before": None, "hits": 0, "misses": 1}  # importing effscale.compile_cache set nothing
    assert answers[1] == {"before": None, "hits": 1, "misses": 0}
    assert any(cache.iterdir())


def test_compile_cache_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert compile_cache.directory(tmp_path) == os.path.join(str(tmp_path), ".jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/shared/jax")
    assert compile_cache.directory(tmp_path) == "/shared/jax"


def test_repeats_with_other_seeds_load_their_programs_from_the_cache(tmp_path):
    """The seed is an argument of the compiled steps, not a constant: a repeat compiles nothing new."""
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    hits = []
    for k, seed in enumerate((0, 7, 0)):
        proc = train_support.launch("--config", "tests/train_support.py", f"--workdir={tmp_path / str(k)}",
                                    f"--config.train.seed={seed}", env=env)  # fmt: skip
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        hits.append(json.loads((tmp_path / str(k) / record.RESULT).read_text())["compile_cache_hits"])
    # Another seed is served as fully as the same seed again: the initialiser, the train and the eval step.
    assert hits[0] == 0 and hits[1] == hits[2] >= 3
