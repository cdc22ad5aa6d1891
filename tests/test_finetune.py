"""Transfer learning in the trainer: imported weights, freezing, phases, resume, errors, data subsets.

Networks are tiny (the trainer tests' two-stage 16-px net, or Keras' B0 architecture at width
0.25 / depth 0.1 / 32 px: seven single blocks) and runs are a few steps on synthetic data.
"""

from __future__ import annotations

import itertools
import json
import logging

import jax
import numpy as np
import pytest
import train_support
from flax import traverse_util
from train_support import final_state, launch, synthetic_data, tiny_config

from effscale import checkpoint, record, train
from effscale.training import setup, state, weights

train_support.use_compilation_cache()


def _flat(tree) -> dict[tuple[str, ...], np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(dict(tree))).items()}


def _assert_same(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _losses(workdir) -> dict[int, float]:
    events = map(json.loads, (workdir / record.METRICS).read_text().splitlines())
    return {e["step"]: e["loss"] for e in events if e["kind"] == "train"}


@pytest.fixture(scope="module")
def keras_notop(tmp_path_factory) -> str:
    """A Keras EfficientNet-B0-architecture (width 0.25, depth 0.1) without top, saved as Keras ships it (.h5)."""
    keras = pytest.importorskip("keras")
    h5py = pytest.importorskip("h5py")
    from keras.src.applications import efficientnet as keras_efficientnet
    from keras.src.legacy.saving import legacy_h5_format

    model = keras_efficientnet.EfficientNet(
        0.25, 0.1, 32, name="efficientnetb0", include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:  # statistics away from 0 / 1, so that an update would show
        if layer.name.endswith("bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    path = tmp_path_factory.mktemp("keras") / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    del keras
    return str(path)


def _b0_tiny(weights: str, steps: int = 2):
    c = tiny_config("synthetic", steps=steps)
    m = c.model
    from configs import default

    m.blocks, m.stem_channels, m.head_channels = (default.get_config().model[k] for k in ("blocks", "stem_channels",
                                                                                        "head_channels"))  # fmt: skip
    m.width, m.depth, m.resolution = 0.25, 0.1, 32
    m.pooling, m.dropout = "max", 0.2
    c.init.weights = weights
    c.transfer.freeze = "base"
    c.train.optimizer, c.train.learning_rate = "adamw", 0.05  # big steps: the head must visibly move
    return c


def test_keras_weights_head_only_keeps_base_bit_identical(tmp_path, keras_notop, caplog):
    config = _b0_tiny(keras_notop)
    with synthetic_data():
        run = setup.make_setup(config)
        start = state.fresh_state(run, weights.initial_weights(run))
        with caplog.at_level(logging.WARNING, logger="effscale"):
            out = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert out.steps == 2
    assert "expect inputs normalised with mean" in caplog.text  # weights=None Keras model: mean 0, std 1
    end = final_state(str(tmp_path / "run"), config)
    before, after = _flat(start.params), _flat(end.params)
    head = [p for p in before if p[0] == "predictions"]
    assert head and all(not np.array_equal(before[p], after[p]) for p in head)
    for p in before:
        if p[0] != "predictions":
            np.testing.assert_array_equal(before[p], after[p], err_msg="/".join(p))  # bit-identical
            np.testing.assert_array_equal(before[p], _flat(end.ema_params)[p], err_msg="/".join(p))
    for name, stats in (("batch_stats", end.batch_stats), ("ema_batch_stats", end.ema_batch_stats)):
        b, a = _flat(start.batch_stats), _flat(stats)
        assert b.keys() == a.keys()
        for p in b:
            np.testing.assert_array_equal(b[p], a[p], err_msg=f"{name} {'/'.join(p)}")
    # The imported statistics (not a fresh init's 0 / 1) are what was kept.
    assert not np.allclose(_flat(start.batch_stats)[("top_bn", "mean")], 0.0)
    # Optimizer state only for what trains: AdamW's two moments of the head, nothing for the base.
    opt_size = sum(np.size(x) for x in jax.tree.leaves(end.opt_state))
    head_size = sum(before[p].size for p in head)
    assert 2 * head_size <= opt_size < 2 * head_size + 16


def _two_phases(steps=(3, 3)):
    c = tiny_config("synthetic")
    c.train.num_steps = None  # the phases say how long
    c.transfer.phases = (
        {"freeze": "base", "steps": steps[0], "learning_rate": 0.016},
        {"freeze": "below:block2b", "steps": steps[1], "learning_rate": 0.004},
    )
    return c


# Inside phase 2 (the fast set) and exactly at the phase boundary (a checkpoint of phase 1's optimizer).
@pytest.mark.parametrize("cut", [4, pytest.param(3, marks=pytest.mark.slow)])
def test_two_phase_run_resumes_exactly(tmp_path, cut):
    config = _two_phases()
    with synthetic_data():
        reference = train.train_and_evaluate(config, str(tmp_path / "ref"))
        with pytest.raises(train.Interrupted, match=f"step {cut}"):
            train.train_and_evaluate(config, str(tmp_path / "cut"), stop_at_step=cut)
        resumed = train.train_and_evaluate(config, str(tmp_path / "cut"))
    assert reference.steps == resumed.steps == 6 and resumed.resumed_from_step == cut
    for key in ("eval_top1", "eval_loss", "eval_loss_ema", "train_loss"):
        assert getattr(resumed, key) == pytest.approx(getattr(reference, key), rel=1e-6), key
    _assert_same(final_state(str(tmp_path / "ref"), config), final_state(str(tmp_path / "cut"), config))
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "ref"), rel=1e-6)
    # Phase 2 logs its own, lower learning rate (per 256 images x batch 8 / 256).
    events = [json.loads(x) for x in (tmp_path / "ref" / record.METRICS).read_text().splitlines()]
    lrs = {e["step"]: e["lr"] for e in events if e["kind"] == "train"}
    assert lrs[3] == pytest.approx(0.016 * 8 / 256) and lrs[4] == pytest.approx(0.004 * 8 / 256)


def test_phases_freeze_what_they_say(tmp_path):
    """Phase 1 moves the head only; phase 2 also block2b, not what lies below it (stem, block1a, block2a)."""
    config = _two_phases(steps=(2, 2))
    config.train.checkpoint_every_steps = 1
    config.train.keep_checkpoints = 10
    with synthetic_data():
        train.train_and_evaluate(config, str(tmp_path / "run"))
        run = setup.make_setup(config)
    manager = checkpoint.Manager(str(tmp_path / "run"), 1, 10)
    try:
        states = {s: _flat(manager.restore(state.abstract_state(run, run.phase_of(s)), s).params) for s in (1, 2, 4)}
    finally:
        manager.close()
    moved = lambda a, b: {p[0] for p in states[a] if not np.array_equal(states[a][p], states[b][p])}  # noqa: E731
    assert moved(1, 2) == {"predictions"}
    assert moved(2, 4) == {"predictions", "block2b", "top_conv", "top_bn"}


def test_init_from_effscale_workdir(tmp_path):
    """Phase-1 pretraining of the demo: a workdir's weights, its top dropped, the base frozen."""
    pre = tiny_config("synthetic", steps=2)
    with synthetic_data():
        train.train_and_evaluate(pre, str(tmp_path / "pre"))
        config = tiny_config("synthetic", steps=1)
        config.init.weights, config.init.top = str(tmp_path / "pre"), "drop"
        config.transfer.freeze = "base"
        train.train_and_evaluate(config, str(tmp_path / "ft"))
    a, b = (
        _flat(final_state(str(tmp_path / "pre"), pre).params),
        _flat(final_state(str(tmp_path / "ft"), config).params),
    )
    for p in a:
        if p[0] != "predictions":
            np.testing.assert_array_equal(a[p], b[p])
    assert not np.array_equal(a[("predictions", "kernel")], b[("predictions", "kernel")])


def test_bad_freeze_and_weights_are_config_errors(tmp_path):
    config = tiny_config("synthetic")
    config.transfer.freeze = "below:block9z"
    with synthetic_data(), pytest.raises(train.ConfigError, match="block1a, block2a, block2b"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = _two_phases()
    config.transfer.phases = ({"freeze": "below:stage7", "steps": 1},)
    with synthetic_data(), pytest.raises(train.ConfigError, match=r"phases\[0\].*stage1\.\.stage2"):
        train.train_and_evaluate(config, str(tmp_path / "b"))
    config = tiny_config("synthetic")
    config.init.weights = str(tmp_path / "missing_notop.h5")
    with synthetic_data(), pytest.raises(train.ConfigError, match="missing_notop.h5"):
        train.train_and_evaluate(config, str(tmp_path / "c"))
    assert not checkpoint.has_checkpoint(str(tmp_path / "c"))


def test_bad_freeze_from_the_command_line(tmp_path):
    proc = launch(
        "--config", "tests/train_support.py", "--config.transfer.freeze=below:block9z", f"--workdir={tmp_path}"
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert "effscale: error:" in err and "block2b" in err


def test_fingerprint_unchanged_for_plain_runs_and_guards_transfer():
    config = tiny_config()
    net = train.resolve(config)[2]
    assert train.fingerprint(net, "x", config)["validation"] == ["auto", config.data.get("validation_examples")]
    config.data.validation = "none"
    assert train.fingerprint(net, "x", config) == train.fingerprint(net, "x")
    config.transfer.freeze = "base"
    config.data.classes = (5, 6)
    fp = train.fingerprint(net, "x", config)
    assert fp["transfer"]["freeze"] == "base" and fp["subset"]["classes"] == (5, 6)
    assert "augment" not in fp
    config.data.augment, config.train.cutmix_alpha = "randaugment", 1.0
    fp = train.fingerprint(net, "x", config)
    assert fp["augment"]["policy"] == "randaugment" and fp["augment"]["mixing"][1] == 1.0


def test_class_subset_and_label_budget():
    from effscale import data

    c = tiny_config("fashion_mnist")
    c.data.train_split, c.data.eval_split = "train[:2000]", "test[:300]"
    c.data.classes, c.data.train_examples = (7, 5, 9), 100
    info = data.dataset_info(c.data)
    assert (info.num_classes, info.train_examples) == (3, 100)
    labels = np.concatenate([b["label"] for b in itertools.islice(data.train_batches(c.data, 16, 8, 0), 100 // 8)])
    assert set(labels) == {0, 1, 2}
    batches = list(data.eval_batches(c.data, 16, 16))
    kept = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert len(kept) == info.eval_examples and set(kept) == {0, 1, 2}
    # The same examples every time, and a resume at step 3 continues the stream.
    stream = data.train_batches(c.data, 16, 8, 0)
    first = [next(stream)["label"] for _ in range(5)]
    resumed = data.train_batches(c.data, 16, 8, 0, start_step=3)
    np.testing.assert_array_equal(next(resumed)["label"], first[3])
    c.data.classes = (3, 10)
    with pytest.raises(ValueError, match="distinct labels in 0..9"):
        data.dataset_info(c.data)


def test_demo_config_arms():
    from configs.transfer import finetune, fmnist_split

    for arm in fmnist_split.ARMS:
        assert fmnist_split.get_config(arm).model.resolution == 32
    config, info, net = train.resolve(fmnist_split.get_config("finetune"))
    assert (info.num_classes, info.train_examples) == (5, 500)
    phases = train.resolve_phases(config, net, info.train_examples // config.train.batch_size)
    assert [(p.start, p.end, p.freeze) for p in phases] == [(0, 200, "base"), (200, 400, "below:block6a")]
    assert phases[1].train.learning_rate == 0.002
    # Fewer labels, the same 400 steps: 50 labels are one batch, 400 epochs.
    config, info, net = train.resolve(fmnist_split.get_config("finetune,labels=50"))
    assert info.train_examples == 50
    phases = train.resolve_phases(config, net, 1)
    assert [(p.start, p.end) for p in phases] == [(0, 200), (200, 400)]
    assert fmnist_split.get_config("scratch,labels=100").train.num_epochs == 200
    with pytest.raises(ValueError, match="multiple of 50"):
        fmnist_split.get_config("head,labels=30")
    short = fmnist_split.get_config("finetune,steps=4")
    assert [p["steps"] for p in short.transfer.phases] == [2, 2]
    with pytest.raises(ValueError, match="Unknown arm"):
        fmnist_split.get_config("nope")
    assert len(finetune.get_config("b2").transfer.phases) == 2
