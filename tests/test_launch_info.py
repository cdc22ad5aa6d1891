"""`launch.py --mode=info` end to end, in a subprocess as a user runs it, against what the trainer records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_idx = pytest.mark.skipif(
    not os.path.isfile("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
    reason="apt-get install dataset-fashion-mnist",
)


def launch(*args, check=True):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_info_json_for_compound_phi2():
    out = json.loads(launch("--config", "configs/compound.py:phi=2", "--mode=info", "--json").stdout)
    for key in ("params", "macs", "activations", "resolution", "stem_channels", "head_channels", "width", "depth"):
        assert key in out
    assert out["resolution"] == 296 and out["depth"] == pytest.approx(1.44) and out["width"] == pytest.approx(1.21)
    assert len(out["stages"]) == 7
    for st in out["stages"]:
        assert {"kernel", "stride", "repeats", "in_channels", "out_channels", "expand", "se_channels"} <= set(st)
    assert sum(st["repeats"] for st in out["stages"]) == out["num_blocks"]
    assert 1.0 <= out["xla_flops_over_2macs"] <= 1.10


def test_info_table_and_overrides():
    text = launch("--config", "configs/efficientnet.py:b3", "--mode=info", "--noxla").stdout
    assert "resolution 300" in text and "12,233,232" in text and "1.827G" in text
    text = launch("--config", "configs/efficientnet.py:b0", "--config.model.width=2.0", "--mode=info", "--noxla").stdout
    assert "width 2" in text


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--config", "configs/efficientnet.py:b9"], "Unknown EfficientNet preset 'b9'"),
        (["--config", "configs/efficientnet.py", "--config.model.widht=2"], 'Did you mean "width"'),
        (["--config", "configs/efficientnet.py", "--config.model.depth=-1"], "model.depth must be a positive"),
        (["--config", "configs/compound.py:phi=2", "--config.model.gamma=0.9"], "gamma must be >= 1"),
        (["--config", "configs/efficientnet.py", "--config.model.dtype=float16"], "model.dtype must be one of"),
        (["--config", "configs/efficientnet.py", "--config.model.pooling=sum"], "model.pooling must be one of"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(args, needle):
    proc = launch(*args, "--mode=info", "--noxla", check=False)
    assert proc.returncode != 0
    assert needle in proc.stdout + proc.stderr


@needs_idx
def test_info_is_the_network_the_trainer_records(tmp_path):
    """configs/compound_phi2.py: 10 classes from Fashion-MNIST's metadata, so the run's own figures.

    The numbers are those of the result.json of a real run of this config (and the README); the
    in-process check resolves the config with the trainer's own function. The empty data_dir shows
    that describing the network neither prepares nor reads the dataset.
    """
    from configs import compound_phi2
    from effscale import complexity, train

    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    args = ["--config", "configs/compound_phi2.py", f"--config.data.data_dir={data_dir}", "--mode=info"]
    out = json.loads(launch(*args, "--json", "--noxla").stdout)
    assert (out["num_classes"], out["params"], out["macs"], out["activations"]) == (10, 10_717_938, 56_426_928, 627_634)
    assert out["sources"]["num_classes"] == "the TFDS metadata of fashion_mnist"
    assert "gamma^phi" in out["sources"]["resolution"] and out["sources"]["phi"] == "model.phi"
    assert list(data_dir.iterdir()) == []

    config = compound_phi2.get_config()
    config.data.data_dir = str(data_dir)
    recorded = complexity.analyse(train.resolve(config)[2])
    assert (out["params"], out["macs"], out["activations"]) == (recorded.params, recorded.macs, recorded.activations)
    text = launch(*args, "--noxla").stdout
    assert "10,717,938" in text and "56.43M" in text and "classes 10" in text


def test_info_of_an_unprepared_dataset_uses_its_metadata(tmp_path):
    """ImageNet is not prepared (nor downloadable) here: its 1000 classes still come from TFDS."""
    args = ["--config", "configs/efficientnet.py:b0", f"--config.data.data_dir={tmp_path}", "--mode=info", "--json"]
    out = json.loads(launch(*args, "--noxla").stdout)
    # Keras' EfficientNetB0(weights=None) has 5,288,548 trainable parameters.
    assert (out["num_classes"], out["params"]) == (1000, 5_288_548)
    assert out["sources"]["num_classes"] == "the TFDS metadata of imagenet2012"
    assert out["sources"]["width"] == "preset b0"
    assert list(tmp_path.iterdir()) == []
    out = json.loads(launch(*args, "--noxla", "--config.model.num_classes=1000").stdout)
    assert out["num_classes"] == 1000 and out["sources"]["num_classes"] == "model.num_classes"
    # As in training, a class count the dataset contradicts is an error.
    proc = launch(*args, "--noxla", "--config.model.num_classes=7", check=False)
    assert proc.returncode == 2 and "effscale: error: model.num_classes=7 but imagenet2012 has 1000" in proc.stderr


@pytest.mark.parametrize("mode", ["status", "collect", "plot"])
def test_sweep_modes_on_a_single_run_config_say_what_they_take(mode, tmp_path):
    proc = launch("--config", "configs/compound_phi2.py", f"--workdir={tmp_path}", f"--mode={mode}", check=False)
    assert proc.returncode == 2
    assert f"effscale: error: --mode={mode} takes a sweep config (configs/sweeps/" in proc.stderr
    assert list(tmp_path.iterdir()) == []
