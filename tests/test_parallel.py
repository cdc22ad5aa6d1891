"""Data parallelism: 1 device, 8 simulated devices and 2 processes x 4 devices train the same network.

The device count is fixed when jax starts, so the multi-device runs are subprocesses. They
read the synthetic dataset of train_support, whose global batches do not depend on the
process count, so any difference would come from the trainer's sharding. The two processes
also share one workdir on a GCS-API emulator, are both killed and resumed (a multi-host slice
whose hosts reach one bucket).
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import socket
import time

import jax
import numpy as np
import pytest
import train_support
from train_support import final_state, last_json_line, python_process, run_python, synthetic_data, tiny_config

from effscale import parallel, record, train

train_support.use_compilation_cache()
STEPS = 6  # checkpoints every 2 steps (tiny_config): a kill after the first leaves 4 to resume

WORKER = """
import json
from effscale import parallel
if {processes} > 1:
    parallel.initialize("127.0.0.1:{port}", {processes}, {process_id})
import jax
from train_support import synthetic_data, tiny_config
from effscale import train

def config(batch):
    c = tiny_config("synthetic", steps={steps})
    c.train.batch_size = batch
    return c

answer = {{"devices": jax.device_count(), "processes": jax.process_count()}}
with synthetic_data():
    try:  # 12 does not split over 8 devices: refused before anything compiles
        train.train_and_evaluate(config(12), {workdir!r} + "-bad")
    except ValueError as e:
        answer["batch_error"] = str(e)
    out = train.train_and_evaluate(config(16), {workdir!r})
answer.update(out.to_json())
print(json.dumps(answer))
"""


def _config():
    c = tiny_config("synthetic", steps=STEPS)
    c.train.batch_size = 16
    return c


def _losses(workdir) -> list[float]:
    lines = (workdir / record.METRICS).read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if e["kind"] == "train"]


def _worker(workdir, devices: int, processes: int = 1, process_id: int = 0, port: int = 0) -> tuple[str, dict]:
    code = WORKER.format(processes=processes, process_id=process_id, port=port, steps=STEPS, workdir=str(workdir))
    return code, {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one")
    with synthetic_data():
        out = train.train_and_evaluate(_config(), str(workdir))
    return workdir, out.to_json()


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eight") / "run"
    code, env = _worker(workdir, devices=8)
    code, out, err = run_python(code, env)
    assert code == 0, err[-4000:]
    return workdir, last_json_line(out)


def _assert_same_run(a_dir, a, b_dir, b, rtol):
    np.testing.assert_allclose(_losses(a_dir), _losses(b_dir), rtol=rtol)
    for key in ("eval_top1", "eval_top1_ema", "eval_loss", "eval_loss_ema", "train_loss"):
        assert a[key] == pytest.approx(b[key], rel=rtol, abs=1e-6), key
    a_state, b_state = final_state(a_dir, _config()), final_state(b_dir, _config())
    for x, y in zip(jax.tree.leaves(a_state), jax.tree.leaves(b_state), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-5)


def test_eight_devices_train_like_one(one_device, eight_devices):
    (one_dir, one), (eight_dir, eight) = one_device, eight_devices
    assert eight["devices"] == 8 and len(_losses(eight_dir)) == STEPS
    _assert_same_run(one_dir, one, eight_dir, eight, rtol=1e-4)
    assert "train.batch_size=12" in eight["batch_error"] and "device count (8)" in eight["batch_error"]
    assert "--config.train.batch_size=16" in eight["batch_error"]


def test_two_processes_train_like_one_with_eight_devices(tmp_path, eight_devices):
    port = _free_port()
    workdir = tmp_path / "run"
    procs = [python_process(*_worker(workdir, 4, processes=2, process_id=pid, port=port)) for pid in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    two = last_json_line(outs[0][0])
    assert two["devices"] == 8 and two["processes"] == 2
    eight_dir, eight = eight_devices
    _assert_same_run(eight_dir, eight, workdir, two, rtol=1e-5)


RESUMABLE = """
import json, time
from effscale import parallel
if {processes} > 1:
    parallel.initialize("127.0.0.1:{port}", {processes}, {process_id})
from train_support import synthetic_data, tiny_config
from effscale import data, train

c = tiny_config("synthetic", steps={steps})
c.train.batch_size = 16
with synthetic_data():
    if {slow}:  # slowed so that the kill lands between checkpoints; the batches are the same
        fast = data.train_batches
        def slowed(*args, **kwargs):
            for batch in fast(*args, **kwargs):
                time.sleep({slow})
                yield batch
        data.train_batches = slowed  # restored by synthetic_data's patch
    out = train.train_and_evaluate(c, {workdir!r})
import jax
print(json.dumps({{**out.to_json(), "processes": jax.process_count()}}))
"""


def _resumable(workdir: str, devices: int, processes: int, process_id: int, port: int, slow: float):
    code = RESUMABLE.format(processes=processes, process_id=process_id, port=port, steps=STEPS,
                            workdir=workdir, slow=slow)  # fmt: skip
    return python_process(code, {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir: str, slow: float = 0.0) -> list:
    port = _free_port()
    return [_resumable(workdir, 4, 2, pid, port, slow) for pid in range(2)]


def _finished(procs) -> dict:
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return last_json_line(outs[0][0])


def _committed_steps(fs, root: str) -> list[int]:
    """Checkpoint steps under gs://`root` with orbax's commit marker (read with the test's own client)."""
    names = fs.find(f"{root}/checkpoints/") if fs.exists(f"{root}/checkpoints") else []
    marker = re.compile(rf"{re.escape(root)}/checkpoints/(\d+)/commit_success\.txt")
    return sorted(int(m.group(1)) for m in map(marker.fullmatch, names) if m)


@pytest.mark.skipif(
    not (importlib.util.find_spec("gcsfs") and importlib.util.find_spec("gcp_storage_emulator")),
    reason="needs gcsfs and gcp-storage-emulator (requirements.txt)",
)
def test_two_processes_on_one_bucket_killed_and_resumed_end_like_eight_devices(eight_devices):
    import gcs_emulator
    import gcsfs.core

    with gcs_emulator.running() as server:
        fs = gcsfs.core.GCSFileSystem(token="anon", use_listings_cache=False, skip_instance_cache=True)
        root, workdir = f"{server.bucket}/two", server.url("two")
        procs = _two_processes(workdir, slow=1.0)
        deadline = time.time() + 300
        while not _committed_steps(fs, root) and time.time() < deadline:
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-4000:]
            time.sleep(0.2)
        for p in procs:  # both hosts lost at once, between checkpoints
            p.send_signal(signal.SIGKILL)
            p.communicate()
        kept = _committed_steps(fs, root)
        assert kept and kept[-1] < STEPS, kept
        two = _finished(_two_processes(workdir))
        metrics = fs.cat_file(f"{root}/{record.METRICS}").decode()
    assert two["resumed_from_step"] == kept[-1] and two["steps"] == STEPS and two["processes"] == 2
    train_events = [e for e in map(json.loads, metrics.splitlines()) if e["kind"] == "train"]
    assert [e["step"] for e in train_events] == list(range(1, STEPS + 1))  # rewound to the checkpoint
    eight_dir, eight = eight_devices
    np.testing.assert_allclose([e["loss"] for e in train_events], _losses(eight_dir), rtol=1e-5)
    for key in ("eval_top1", "eval_top1_ema", "eval_loss", "eval_loss_ema", "train_loss"):
        assert two[key] == pytest.approx(eight[key], rel=1e-5, abs=1e-6), key


def test_batch_size_checks():
    assert parallel.check_batch_size("train.batch_size", 64, 8, 2) == 32
    with pytest.raises(ValueError, match=r"device count \(8\).*batch_size=16"):
        parallel.check_batch_size("train.batch_size", 12, 8, 1)


def test_multihost_detected_from_environment():
    assert not parallel.multihost_from_env({})
    assert not parallel.multihost_from_env({"SLURM_NTASKS": "1"})
    assert parallel.multihost_from_env({"SLURM_NTASKS": "4"})
    assert parallel.multihost_from_env({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
