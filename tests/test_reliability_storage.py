"""Storage faults, probed as a user meets them: a damaged newest checkpoint, a full disk, a disk gone read-only.

Each run is ``python launch.py ...`` in a subprocess, judged by its exit status, its stderr and what
is left on disk. The full and read-only disks are small tmpfs mounts made for the test (root only;
skipped elsewhere) and unmounted after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from train_support import launch

from effscale import checkpoint, record

TINY = ("--config", "tests/train_support.py")  # checkpoints at step 1 (orbax saves the first), then every 2


def _run(*args: str, timeout: float = 300) -> tuple[int, str]:
    proc = launch(*TINY, *args)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _one_error_line(err: str) -> str:
    """The run's single `effscale: error:` line; fails on a traceback or on several error lines."""
    assert "Traceback" not in err, err[-4000:]
    lines = [line for line in err.splitlines() if line.startswith("effscale: error:")]
    assert len(lines) == 1, err[-4000:]
    return lines[0]


def _complete_and_temporary(workdir: Path) -> tuple[list[int], list[str]]:
    names = [p.name for p in (workdir / "checkpoints").iterdir()]
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if not n.isdigit()]


def _truncate_largest_array_file(step_dir: Path) -> Path:
    """Cuts the biggest array-data file of a checkpoint to half its size, as an interrupted copy would.

    The data a restore reads is in `default/d/`: orbax merges each process's OCDBT files into it
    after a save and reads from there, leaving the per-process copies (`ocdbt.process_N/d/`) unread.
    """
    files = [p for p in (step_dir / "default" / "d").iterdir() if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("needs permission to mount a tmpfs (run as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(tmp_path):
    code, err = _run(f"--workdir={tmp_path}", "--config.train.num_steps=4")
    assert code == 0, err[-3000:]
    first = json.loads((tmp_path / record.RESULT).read_text())
    assert _complete_and_temporary(tmp_path) == ([1, 2, 4], [])
    _truncate_largest_array_file(tmp_path / "checkpoints" / "4")
    (tmp_path / record.RESULT).unlink()

    code, err = _run(f"--workdir={tmp_path}", "--config.train.num_steps=4")
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "Checkpoint step 4 does not restore" in err and "resumed from step 2" in err, err[-3000:]
    aside = list((tmp_path / checkpoint.DAMAGED).iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["4"], "the damaged checkpoint is kept, not deleted"
    again = json.loads((tmp_path / record.RESULT).read_text())
    assert again["resumed_from_step"] == 2
    # Steps 3 and 4 are trained again from the same state and data: the same weights.
    assert again["eval_loss"] == pytest.approx(first["eval_loss"], rel=1e-5)


def test_when_no_checkpoint_restores_the_run_stops_and_moves_nothing(tmp_path):
    code, err = _run(f"--workdir={tmp_path}", "--config.train.num_steps=4")
    assert code == 0, err[-3000:]
    for step in ("1", "2", "4"):
        _truncate_largest_array_file(tmp_path / "checkpoints" / step)
    (tmp_path / record.RESULT).unlink()

    code, err = _run(f"--workdir={tmp_path}", "--config.train.num_steps=4")
    assert code == 2, err[-3000:]
    line = _one_error_line(err)
    assert "No checkpoint in" in line and "steps 4, 2, 1" in line and "Requested byte range" in line, line
    assert _complete_and_temporary(tmp_path) == ([1, 2, 4], [])
    assert not (tmp_path / checkpoint.DAMAGED).exists()


def test_a_disk_that_fills_up_stops_with_one_line_keeps_the_last_good_checkpoint_and_leaves_no_temporaries(tmp_path):
    # The disk is filled by another file once the run has saved, whatever a checkpoint's size: the
    # next save finds about 64 kB free, too little for a checkpoint, enough for the metrics log.
    with _tmpfs(tmp_path / "disk", "20m") as workdir:

        def fill() -> None:
            free = os.statvfs(workdir)
            (workdir / "ballast").write_bytes(bytes(free.f_bavail * free.f_frsize - 64 * 1024))

        code, err = _start_then_once_saved(workdir, 200, fill)
        assert code == 1, err[-3000:]
        line = _one_error_line(err)
        kept, temporaries = _complete_and_temporary(workdir)
        assert kept and temporaries == [], (kept, temporaries)
        assert "No space left on device" in line and str(workdir) in line, line
        assert f"step {kept[-1]}" in line and "rerun" in line, line
        assert not (workdir / record.RESULT).exists()

        (workdir / "ballast").unlink()
        code, err = _run(f"--workdir={workdir}", f"--config.train.num_steps={kept[-1] + 2}")
        assert code == 0, err[-3000:]
        assert json.loads((workdir / record.RESULT).read_text())["resumed_from_step"] == kept[-1]


def _start_then_once_saved(workdir: Path, every: int, act: Callable[[], None]) -> tuple[int, str]:
    """Starts an endless tiny run in `workdir`, calls `act` once its first checkpoint is complete, and
    returns the run's exit status and stderr (failing the test if it does not stop by itself)."""
    proc = launch(*TINY, f"--workdir={workdir}", "--config.train.num_steps=100000",
                  f"--config.train.checkpoint_every_steps={every}")  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.has_checkpoint(str(workdir)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        act()
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        pytest.fail(f"the run did not stop: {(e.stderr or b'').decode()[-3000:]}")
    finally:
        proc.kill()
    return proc.returncode, err


def _remount_when_idle(path: Path, options: str, timeout: float = 60) -> None:
    """Remounts `path`, retrying while a save holds a file open there ("mount point is busy")."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["mount", "-o", f"remount,{options}", str(path)], capture_output=True).returncode:
        assert time.monotonic() < deadline, f"could not remount {path} {options}"
        time.sleep(0.05)


def test_checkpoint_storage_that_turns_read_only_mid_run_stops_with_one_line_and_a_rerun_resumes(tmp_path):
    # Only the checkpoints live on the tmpfs: the metrics log is held open for writing, and Linux
    # refuses to remount read-only a file system with files open for writing.
    workdir = tmp_path / "run"
    workdir.mkdir()
    with _tmpfs(workdir / "checkpoints", "50m") as disk:
        code, err = _start_then_once_saved(workdir, 20, lambda: _remount_when_idle(disk, "ro"))
        assert code == 1, err[-3000:]
        line = _one_error_line(err)
        assert "Read-only file system" in line and str(disk) in line, line
        kept, _ = _complete_and_temporary(workdir)
        assert kept, "the checkpoints completed before the failure are kept"

        _remount(disk, "rw")
        code, err = _run(f"--workdir={workdir}", f"--config.train.num_steps={kept[-1] + 2}")
        assert code == 0, err[-3000:]
        result = json.loads((workdir / record.RESULT).read_text())
        assert result["resumed_from_step"] == kept[-1]
        assert _complete_and_temporary(workdir)[1] == [], "a rerun removes what the failed save left"
