"""Reliability probes, each run as a user would (``python launch.py ...`` in a subprocess), judged by what is on disk.

A refused run leaves its workdir byte for byte as it found it; a diverged run keeps no checkpoint
whose weights led to the divergence, and a rerun with a sane learning rate trains; a run rerun after
its last checkpoint records what it recorded the first time; records are as readable as `open` makes files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
from train_support import launch

from effscale import checkpoint, record

TINY = ("--config", "tests/train_support.py", "--config.train.num_steps=3")
TIMINGS = ("train_images_per_sec", "step_time_s", "eval_images_per_sec", "compile_time_s", "wall_time_s")


def _run(*args: str, timeout: float = 300) -> tuple[int, str]:
    proc = launch(*TINY, *args)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` (itself included): its mode and, for a file, the SHA-256 of its bytes."""
    out = {".": (os.stat(root).st_mode, "")}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st.st_mode, digest)
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_refused_run_leaves_the_workdir_as_it_found_it(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    bad = f"--config.init.weights={tmp_path / 'no_such_weights.h5'}"
    for state in ("empty", "finished"):
        before = _tree(workdir)
        code, err = _run(f"--workdir={workdir}", bad)
        assert code == 2, err[-3000:]
        assert "effscale: error:" in err and "Traceback" not in err
        assert _tree(workdir) == before, f"a refused run changed the {state} workdir"
        if state == "empty":
            # The typo does not stand in the way of the run meant.
            code, err = _run(f"--workdir={workdir}")
            assert code == 0, err[-3000:]
            assert (workdir / record.RESULT).exists()


def test_records_are_readable_as_open_makes_files_and_a_rerun_records_the_same(tmp_path):
    code, err = _run(f"--workdir={tmp_path}")
    assert code == 0, err[-3000:]
    for name in (record.RESULT, checkpoint.FINGERPRINT, record.METRICS):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name
    first = json.loads((tmp_path / record.RESULT).read_text())

    # Killed after its last checkpoint, before writing its record: the rerun only evaluates.
    (tmp_path / record.RESULT).unlink()
    code, err = _run(f"--workdir={tmp_path}")
    assert code == 0, err[-3000:]
    again = json.loads((tmp_path / record.RESULT).read_text())
    assert again["resumed_from_step"] == 3
    assert all(again[k] is not None for k in TIMINGS), {k: again[k] for k in TIMINGS}
    for key in sorted(set(first) - set(TIMINGS) - {"resumed_from_step"}):
        if isinstance(first[key], float):
            assert again[key] == pytest.approx(first[key], rel=1e-6), key
        else:
            assert again[key] == first[key], key


def test_a_diverged_run_keeps_no_poisoned_checkpoint_and_a_sane_rerun_trains(tmp_path):
    code, err = _run(
        f"--workdir={tmp_path}",
        "--config.train.learning_rate=1e30",
        "--config.train.warmup_epochs=0",
        "--config.train.checkpoint_every_steps=1",
    )
    assert code == 1, err[-3000:]
    assert "loss became nan at step 2" in err and "keeps no checkpoint" in err and "Traceback" not in err
    assert not checkpoint.has_checkpoint(str(tmp_path)) and not (tmp_path / record.RESULT).exists()

    code, err = _run(f"--workdir={tmp_path}")
    assert code == 0, err[-3000:]
    result = json.loads((tmp_path / record.RESULT).read_text())
    assert math.isfinite(result["train_loss"]) and math.isfinite(result["eval_loss"])
    logged = [json.loads(line) for line in (tmp_path / record.METRICS).read_text().splitlines()]
    assert [e["step"] for e in logged if e["kind"] == "train"] == [1, 2, 3]
