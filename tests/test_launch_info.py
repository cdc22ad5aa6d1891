"""`launch.py --mode=info` end to end, in a subprocess as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
