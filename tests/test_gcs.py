"""effscale with its workdir on a GCS bucket, against a GCS-API server on loopback (tests/gcs_emulator.py).

What lands in the bucket is listed and read with a gcsfs client of the test's own, not through
effscale.storage. Every test runs in a fresh current directory: a path mistaken for a local one
(gs:/bucket/...) would show up there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

# Not imported here: gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT on import, which the emulator's environment sets.
if not (importlib.util.find_spec("gcsfs") and importlib.util.find_spec("gcp_storage_emulator")):
    pytest.skip("needs gcsfs and gcp-storage-emulator (requirements.txt)", allow_module_level=True)

import gcs_emulator  # noqa: E402 - after the skip
from train_support import launch, tiny_config, use_compilation_cache  # noqa: E402

from effscale import checkpoint, lease, record, storage  # noqa: E402


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def _server():
    with gcs_emulator.running() as server:
        yield server


@pytest.fixture
def gcs(_server, monkeypatch):
    """The module's emulator, its variables set for each test (other modules' tests run between this
    module's under pytest-xdist and restore the environment), and etils made to read them."""
    for key, value in _server.env.items():
        monkeypatch.setenv(key, value)
    gcs_emulator.epath_decides_again()
    yield _server
    monkeypatch.undo()
    gcs_emulator.epath_decides_again()


@pytest.fixture(autouse=True)
def _fresh_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "gs:").exists(), "a gs:// path was taken for a local one"


def bucket_fs():
    """A gcsfs client of the test's own: plain (no bucket-layout probe), anonymous, listings uncached."""
    import gcsfs.core

    return gcsfs.core.GCSFileSystem(token="anon", use_listings_cache=False, skip_instance_cache=True)


def race(n: int, fn) -> None:
    """Runs fn(0) .. fn(n - 1) in n threads released at once, and waits for them all."""
    barrier = threading.Barrier(n)

    def start(k: int) -> None:
        barrier.wait()
        fn(k)

    workers = [threading.Thread(target=start, args=(k,)) for k in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def names_under(server, prefix: str) -> list[str]:
    """Every object under gs://BUCKET/PREFIX/, relative to it."""
    root = f"{server.bucket}/{prefix}/"
    return sorted(name[len(root) :] for name in bucket_fs().find(root))


# ----------------------------------------------------------------------------- paths and reachability


def test_paths_local_and_gs_and_one_line_errors_for_other_schemes(tmp_path):
    assert os.fspath(storage.path("run")) == str(tmp_path / "run")  # local: absolute
    assert os.fspath(storage.path("gs://b/runs/x/")) == "gs://b/runs/x"
    assert os.fspath(storage.path("gs://b/runs") / "checkpoints") == "gs://b/runs/checkpoints"
    for bad, said in [
        ("s3://b/run", "the scheme s3:// is not supported"),
        ("file:///tmp/run", "the scheme file:// is not supported"),
        ("gs:///run", "no bucket named"),
        ("gs:/b/run", "a gs:// URL that lost a slash"),
        ("", "is empty"),
    ]:
        with pytest.raises(ValueError) as e:
            storage.path(bad, "--workdir")
        message = str(e.value)
        assert "\n" not in message and message.startswith("--workdir") and said in message, message
        assert "gs://BUCKET/PATH" in message or "pass it as a str" in message


def test_a_missing_bucket_is_one_line_naming_it_and_the_fix(gcs):
    storage.check_reachable(gcs.url("run"), "--workdir")  # the bucket exists: no error
    with pytest.raises(ValueError) as e:
        storage.check_reachable("gs://no-such-bucket/run", "--workdir")
    message = str(e.value)
    assert "\n" not in message and message.startswith("--workdir=gs://no-such-bucket/run: bucket no-such-bucket")
    assert "gcloud storage buckets create gs://no-such-bucket" in message


def test_an_emulator_that_does_not_answer_is_named(gcs, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for key, value in storage.emulator_env(dead).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError) as e:
        storage.check_reachable(gcs.url("run"), "--workdir")
    message = str(e.value)
    assert "\n" not in message and f"STORAGE_EMULATOR_HOST={dead} does not answer" in message, message


@pytest.mark.parametrize(
    "change, said",
    [
        ({"EPATH_USE_TF": None}, "set EPATH_USE_TF=false"),
        ({"TENSORSTORE_GCS_HTTP_URL": None}, "TENSORSTORE_GCS_HTTP_URL=(unset)"),
    ],
)
def test_an_emulator_set_up_halfway_is_refused_before_anything_is_written(gcs, monkeypatch, change, said):
    for key, value in change.items():
        monkeypatch.delenv(key) if value is None else monkeypatch.setenv(key, value)
    gcs_emulator.epath_decides_again()
    with pytest.raises(ValueError) as e:
        storage.check_reachable(gcs.url("run"), "--workdir")
    assert "\n" not in str(e.value) and said in str(e.value), str(e.value)


def test_emulator_settings_made_after_etils_decided_are_refused(gcs, monkeypatch):
    """etils keeps its first decision: a variable changed after it must not pass the check unseen."""
    monkeypatch.delenv("EPATH_USE_TF")
    gcs_emulator.epath_decides_again()
    from etils import epath

    epath.Path("/").exists()  # etils decides here: tf.io.gfile
    monkeypatch.setenv("EPATH_USE_TF", "false")  # too late for this process
    with pytest.raises(ValueError, match="set EPATH_USE_TF=false"):
        storage.check_reachable(gcs.url("run"), "--workdir")


def test_missing_credentials_are_one_line_naming_the_login():
    with gcs_emulator.running(bucket="private", require_auth=True) as private, pytest.raises(ValueError) as e:
        storage.check_reachable(private.url("run"), "--workdir")
    message = str(e.value)
    assert "\n" not in message and "unauthenticated" in message, message
    assert "gcloud auth application-default login" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message


# ----------------------------------------------------------------------------- commit rules


def test_a_record_is_one_object_written_in_place_and_read_back(gcs):
    target = gcs.url("records", "result.json")
    record.write_json(target, {"top1": 0.5})
    assert names_under(gcs, "records") == ["result.json"]  # no temporary object, nothing renamed
    record.write_json(target, {"top1": 0.75})
    assert json.loads(bucket_fs().cat_file(target)) == {"top1": 0.75}
    assert names_under(gcs, "records") == ["result.json"]
    assert json.loads(storage.read_bytes(target)) == {"top1": 0.75}
    assert storage.exists(target) and not storage.exists(gcs.url("records", "eval.json"))
    assert storage.listdir(gcs.url("records")) == ["result.json"] and storage.listdir(gcs.url("nothing")) == []
    assert storage.is_dir(gcs.url("records")) and not storage.is_dir(target) and not storage.is_dir(gcs.url("nothing"))
    assert storage.listdir(target) == []  # a file lists nothing


def test_exclusive_creation_is_a_generation_precondition(gcs):
    target = gcs.url("exclusive", "x.lease")
    assert lease.create_exclusive(target, b"first")
    assert not lease.create_exclusive(target, b"second")  # HTTP 412: the object exists
    assert bucket_fs().cat_file(target) == b"first"
    won = []

    def create(k: int) -> None:
        if lease.create_exclusive(gcs.url("exclusive", "raced.lease"), str(k).encode()):
            won.append(k)

    race(8, create)
    assert len(won) == 1 and bucket_fs().cat_file(gcs.url("exclusive", "raced.lease")) == str(won[0]).encode()


def test_a_file_renamed_by_racing_callers_moves_once(gcs):
    for round_ in range(3):
        source = gcs.url("moves", str(round_), "x")
        storage.write_atomic(source, b"content")
        moved = []

        def move(k: int, source=source, moved=moved) -> None:
            if storage.rename(source, source + f".aside-{k}"):
                moved.append(k)

        race(6, move)
        assert len(moved) == 1, moved
        assert names_under(gcs, f"moves/{round_}") == [f"x.aside-{moved[0]}"]
        assert bucket_fs().cat_file(source + f".aside-{moved[0]}") == b"content"


def test_leases_on_gcs_refuse_a_live_holder_and_take_over_an_expired_one(gcs):
    target = gcs.url("leases", "writer.lease")
    clock = FakeClock(1_700_000_000.0)
    old = lease.acquire(target, "old", 10, clock=clock, renew=False)
    clock.now += 5
    with pytest.raises(lease.HeldError, match="held by old"):
        lease.acquire(target, "other", 10, clock=clock, renew=False)
    clock.now += 6  # expired: nobody renewed
    new = lease.acquire(target, "new", 10, clock=clock, renew=False)
    assert json.loads(bucket_fs().cat_file(target))["token"] == new.holder.token
    assert not old.renew()
    new.release()
    assert names_under(gcs, "leases") == []  # no takeover marker, no set-aside copy


def test_racing_takeovers_of_an_expired_lease_on_gcs_have_one_winner(gcs):
    for round_ in range(3):
        target = gcs.url("raced", str(round_), "claim.lease")
        lease.acquire(target, "killed", 5, clock=FakeClock(time.time() - 100), renew=False)
        won, refused = [], []

        def contend(_: int, target=target, won=won, refused=refused) -> None:
            try:
                won.append(lease.acquire(target, "racer", 60, renew=False))
            except lease.HeldError:
                refused.append(1)

        race(6, contend)
        assert len(won) == 1 and len(refused) == 5, (round_, len(won))
        assert lease.read_holder(target).token == won[0].holder.token
        assert names_under(gcs, f"raced/{round_}") == ["claim.lease"]


def test_only_steps_with_orbax_commit_marker_count_as_checkpoints(gcs):
    run = gcs.url("steps")
    fs = bucket_fs()
    fs.pipe_file(gcs.url("steps", "checkpoints", "1", "default", "data"), b"x")
    fs.pipe_file(gcs.url("steps", "checkpoints", "1", "commit_success.txt"), b"")
    fs.pipe_file(gcs.url("steps", "checkpoints", "2", "default", "data"), b"x")  # a save cut short
    assert checkpoint.has_checkpoint(run) and checkpoint.newest_step(run) == 1
    assert not checkpoint.has_checkpoint(gcs.url("nothing-here"))


def test_a_damaged_checkpoint_in_the_bucket_is_set_aside_and_the_one_before_restores(gcs):
    import jax
    import numpy as np

    tree = {"w": np.arange(4096, dtype=np.float32), "b": np.ones(3, np.float32)}
    manager = checkpoint.Manager(gcs.url("damaged"), 1, 5, asynchronous=False)
    for step in (1, 2):
        manager.save(step, jax.tree.map(lambda x, step=step: x * step, tree))
    manager.wait()
    fs = bucket_fs()
    data = fs.find(gcs.url("damaged", "checkpoints", "2", "default", "d"))
    victim = max(data, key=fs.size)  # what a restore reads (see tests/test_reliability_storage.py)
    fs.pipe_file(victim, fs.cat_file(victim)[: fs.size(victim) // 2])
    before = names_under(gcs, "damaged/checkpoints/2")

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    step, restored = manager.restore_newest(lambda step: abstract)
    manager.close()
    assert step == 1 and np.array_equal(restored["w"], tree["w"])
    files = names_under(gcs, "damaged")
    assert not any(f.startswith("checkpoints/2/") for f in files)
    (aside,) = {f.split("/")[1] for f in files if f.startswith(f"{checkpoint.DAMAGED}/")}
    assert aside.startswith("2-") and names_under(gcs, f"damaged/{checkpoint.DAMAGED}/{aside}") == before
    assert checkpoint.newest_step(gcs.url("damaged")) == 1


# ----------------------------------------------------------------------------- training


def test_a_run_in_a_missing_bucket_is_refused_before_anything_compiles(gcs):
    from effscale import train

    with pytest.raises(train.ConfigError, match="bucket no-such-bucket does not exist"):
        train.train_and_evaluate(tiny_config(steps=2), "gs://no-such-bucket/run")


def _events(data: bytes) -> dict[str, list[int]]:
    """The steps of each scalar tag in a TensorBoard event file, read with TensorFlow's own reader."""
    import tempfile

    import tensorflow as tf

    with tempfile.NamedTemporaryFile(suffix=".tfevents") as f:
        f.write(data)
        f.flush()
        tags: dict[str, list[int]] = {}
        for event in tf.compat.v1.train.summary_iterator(f.name):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def test_a_run_writes_everything_into_the_bucket(gcs):
    from effscale import train

    use_compilation_cache()
    out = train.train_and_evaluate(tiny_config(steps=4), gcs.url("run"))
    files = names_under(gcs, "run")
    for name in ("fingerprint.json", "metrics.jsonl", "result.json", "checkpoints/4/commit_success.txt"):
        assert name in files, files
    assert "writer.lease" not in files  # released at the end
    assert json.loads(bucket_fs().cat_file(gcs.url("run", "result.json"))) == out.to_json()
    assert record.read_record(gcs.url("run", "result.json")).to_json() == out.to_json()
    events = [json.loads(line) for line in bucket_fs().cat_file(gcs.url("run", "metrics.jsonl")).splitlines()]
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["kind"] == "eval"] == [4]
    (tb,) = [name for name in files if name.startswith("tb/")]
    assert _events(bucket_fs().cat_file(gcs.url("run", tb)))["train/loss"] == [1, 2, 3, 4]
    committed = sorted(int(name.split("/")[1]) for name in files if name.endswith("/commit_success.txt") and
                       name.count("/") == 2)  # fmt: skip
    assert committed and committed[-1] == 4 and checkpoint.newest_step(gcs.url("run")) == 4
    fingerprint = json.loads(bucket_fs().cat_file(gcs.url("run", "fingerprint.json")))
    checkpoint.guard(gcs.url("run"), fingerprint, write=False)  # the same network: accepted
    with pytest.raises(ValueError, match="different network"):
        checkpoint.guard(gcs.url("run"), {**fingerprint, "dataset": "cifar10"}, write=False)


def _killed_after_a_checkpoint(workdir: str, args: list[str], timeout: float = 120) -> None:
    """Launches the run, and kill -9s it once its first checkpoint is committed in the bucket."""
    proc = launch(*args)  # inherits the emulator's environment
    deadline = time.time() + timeout
    try:
        while not checkpoint.has_checkpoint(workdir) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert checkpoint.has_checkpoint(workdir), f"no checkpoint in {timeout} s ({proc.returncode}):\n{err[-3000:]}"


def test_kill9_then_a_rerun_resumes_from_the_bucket(gcs):
    workdir = gcs.url("killed")
    args = ["--config", "tests/train_support.py", f"--workdir={workdir}", "--config.train.checkpoint_every_steps=10"]
    _killed_after_a_checkpoint(workdir, [*args, "--config.train.num_steps=100000"])
    files = names_under(gcs, "killed")
    assert "result.json" not in files and "writer.lease" in files  # killed: nothing released
    kept = checkpoint.newest_step(workdir)

    proc = launch(*args, f"--config.train.num_steps={kept + 3}")
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the rerun did not finish in 120 s:\n{proc.communicate()[1][-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    result = record.read_record(gcs.url("killed", "result.json"))
    assert result.resumed_from_step == kept and result.steps == kept + 3
    events = [json.loads(line) for line in bucket_fs().cat_file(gcs.url("killed", "metrics.jsonl")).splitlines()]
    assert [e["step"] for e in events if e["kind"] == "train"] == list(range(1, kept + 4))  # rewound, no repeats
    files = names_under(gcs, "killed")
    steps = {name.split("/")[1] for name in files if name.startswith("checkpoints/")}
    assert all(f"checkpoints/{s}/commit_success.txt" in files for s in steps), steps  # a cut save is gone
    assert len([name for name in files if name.startswith("tb/")]) == 2  # one event file per process


# ----------------------------------------------------------------------------- a sweep


def test_a_two_point_sweep_trains_into_the_bucket_and_status_collect_plot_read_it(gcs, capsys):
    from effscale import results, sweep

    use_compilation_cache()
    config = tiny_config("fashion_mnist", steps=2)
    config.sweep = sweep.block("gcs", [sweep.point(f"width-{w:g}", "width", {"model.width": w}) for w in (1.0, 1.5)])
    workdir = gcs.url("sweep")
    assert sweep.main(config, workdir, "train") == 0
    files = names_under(gcs, "sweep")
    for point in ("width-1", "width-1.5"):
        assert f"{point}/result.json" in files and f"{point}/point.json" in files, files
    assert sweep.main(config, workdir, "train") == 0  # everything skipped
    assert sweep.main(config, workdir, "status") == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 2 and "2 done, 0 failed, 0 partial, 0 pending" in out, out
    assert sweep.main(config, workdir, "collect") == 0
    rows = results.read_table(gcs.url("sweep", "results.csv"))
    assert [r["status"] for r in rows] == ["done", "done"]
    for r in rows:
        result = json.loads(bucket_fs().cat_file(gcs.url("sweep", r["point"], "result.json")))
        assert r["macs"] == result["macs"] and r["top1"] == result["eval_top1"]
    assert sweep.main(config, workdir, "plot") == 0
    assert bucket_fs().size(gcs.url("sweep", "figures", "gcs_top1_vs_macs.png")) > 1000


# ----------------------------------------------------------------------------- data, initial weights, refusals


def _idx_gz(array) -> bytes:
    """`array` (uint8) as a gzipped IDX file, written from the format's definition."""
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def test_tfds_data_dir_and_manual_dir_in_the_bucket_are_resolved_there(gcs, tmp_path):
    import numpy as np

    from effscale import data, fashion_mnist

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    fs = bucket_fs()
    for pair in fashion_mnist.FILES.values():
        for name in pair:
            fs.pipe_file(gcs.url("manual", name), _idx_gz(images))
    cfg = tiny_config().data
    cfg.data_dir, cfg.manual_dir = gcs.url("tfds") + "/", gcs.url("manual")
    info = data.dataset_info(cfg)  # metadata only: nothing prepared, nothing written
    assert info.name == "fashion_mnist" and info.num_classes == 10
    assert os.fspath(data._checked_builder(cfg).data_dir_root) == gcs.url("tfds")
    assert names_under(gcs, "tfds") == []
    assert np.array_equal(fashion_mnist.read_idx(gcs.url("manual", "train-images-idx3-ubyte.gz")), images)
    fs.rm_file(gcs.url("manual", "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(ValueError, match=f"t10k-labels-idx1-ubyte.gz not found in {gcs.url('manual')}"):
        data.dataset_info(cfg)
    for field in ("data_dir", "manual_dir"):
        bad = tiny_config().data
        bad[field] = "gs://no-such-bucket/tfds"
        with pytest.raises(ValueError) as e:
            data.dataset_info(bad)
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"config.data.{field}=gs://no-such-bucket/tfds: bucket")


def test_paths_of_other_schemes_in_the_config_are_one_line_naming_the_field(tmp_path):
    from effscale import cli, data, spec, train
    from effscale.weights import initial

    for field, value in (("data_dir", "s3://x/tfds"), ("manual_dir", "s3://x")):
        cfg = tiny_config().data
        cfg[field] = value
        with pytest.raises(ValueError) as e:
            data.dataset_info(cfg)
        assert str(e.value) == (
            f"config.data.{field}={value}: the scheme s3:// is not supported; give a local path or gs://BUCKET/PATH."
        )
    config = tiny_config()
    config.init.weights = "ftp://x/w.h5"
    with pytest.raises(ValueError, match=r"^config\.init\.weights=ftp://x/w\.h5: the scheme ftp:// is not supported"):
        initial.load_initial(config.init, spec.build(config.model))
    with pytest.raises(train.ConfigError, match=r"^config\.init\.weights=ftp://x/w\.h5: the scheme ftp://"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(cli.CommandLineError, match=r"^--workdir=s3://b/run: the scheme s3:// is not supported"):
        cli.check_workdir("s3://b/run", writes=True, flag="--workdir=s3://b/run")
    with pytest.raises(cli.CommandLineError, match="lost a slash"):
        cli.check_workdir("gs:/b/run", writes=True, flag="--workdir=gs:/b/run")


def test_the_command_line_refuses_a_bad_data_path_before_jax_compiles(tmp_path):
    proc = launch("--config", "tests/train_support.py", "--config.data.manual_dir=s3://x", "--mode=info", "--noxla")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("effscale: error:")]
    assert lines == ["effscale: error: config.data.manual_dir=s3://x: the scheme s3:// is not supported; "
                     "give a local path or gs://BUCKET/PATH."], err[-2000:]  # fmt: skip


def test_a_gs_workdir_on_the_command_line_is_asked_of_its_bucket(gcs):
    from effscale import cli

    cli.check_workdir(gcs.url("run"), writes=True, flag=f"--workdir={gcs.url('run')}")  # reachable: no error
    with pytest.raises(cli.CommandLineError) as e:
        cli.check_workdir("gs://no-such-bucket/run", writes=True, flag="--workdir=gs://no-such-bucket/run")
    assert "\n" not in str(e.value) and str(e.value).startswith("--workdir=gs://no-such-bucket/run: bucket")
    cli.check_command([], "launch", True, None, "gs://no-such-bucket/run", True, "slurm")  # launch asks no bucket


def _timm_file(net, path) -> dict:
    """A timm state dict of random weights for `net`, saved as .npz at local `path`; returns the variables."""
    import numpy as np
    from flax import traverse_util

    from effscale import convert

    rng = np.random.default_rng(0)
    flat = {p: rng.normal(0, 1, s).astype(np.float32) for p, s in convert.expected_shapes(net).items()}
    variables = traverse_util.unflatten_dict(flat)
    np.savez(path, **convert.to_timm_state_dict(variables, net))
    return variables


def test_initial_weights_in_the_bucket_load_as_the_local_file(gcs, tmp_path):
    import h5py
    import jax
    import numpy as np

    from effscale import spec
    from effscale.training import fingerprint
    from effscale.weights import initial, keras_files

    config = tiny_config()
    net = spec.build(config.model)
    variables = _timm_file(net, tmp_path / "sd.npz")
    bucket_fs().put_file(str(tmp_path / "sd.npz"), gcs.url("weights", "sd.npz"))
    config.init.timm_arch = "tf_efficientnet_b0"
    loaded = {}
    for where in (str(tmp_path / "sd.npz"), gcs.url("weights", "sd.npz")):
        config.init.weights = where
        loaded[where] = initial.load_initial(config.init, net).variables
        jax.tree.map(np.testing.assert_array_equal, loaded[where], variables)
    assert fingerprint.fingerprint(net, "fashion_mnist", config)["init"]["weights"] == gcs.url("weights", "sd.npz")

    kernel = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    with h5py.File(tmp_path / "w.h5", "w") as f:  # Keras' legacy layout, written from its definition
        f.attrs["layer_names"] = [b"stem_conv"]
        f.create_group("stem_conv").attrs["weight_names"] = [b"stem_conv/kernel:0"]
        f["stem_conv"]["stem_conv/kernel:0"] = kernel
    bucket_fs().put_file(str(tmp_path / "w.h5"), gcs.url("weights", "w.h5"))
    read, layout = keras_files.read_keras_h5(gcs.url("weights", "w.h5"))
    assert layout == "Keras legacy HDF5" and list(read) == ["stem_conv/kernel"]
    assert np.array_equal(read["stem_conv/kernel"], kernel)

    for missing, said in (("gs://no-such-bucket/w.npz", "bucket no-such-bucket"), (gcs.url("none.npz"), "No weights")):
        config.init.weights = missing
        with pytest.raises((ValueError, FileNotFoundError), match=said):
            initial.load_initial(config.init, net)


def test_an_effscale_workdir_in_the_bucket_gives_initial_weights(gcs):
    import jax
    import numpy as np

    from effscale import spec
    from effscale.weights import initial

    config = tiny_config()
    net = spec.build(config.model)
    saved = {
        "params": {"stem_conv": {"kernel": np.arange(216, dtype=np.float32).reshape(3, 3, 3, 8)}},
        "batch_stats": {"stem_bn": {"mean": np.linspace(0, 1, 8, dtype=np.float32)}},
    }
    manager = checkpoint.Manager(gcs.url("pretrained"), 1, 1, asynchronous=False)
    manager.save(3, saved)
    manager.close()
    config.init.weights = gcs.url("pretrained")  # source 'auto': a directory in the bucket is an effscale workdir
    jax.tree.map(np.testing.assert_array_equal, initial.load_initial(config.init, net), saved)


def test_a_write_into_a_deleted_bucket_is_a_storage_failure_named_in_one_line(gcs):
    import numpy as np

    from effscale.training import errors

    fs = bucket_fs()
    fs.mkdir("doomed")  # a bucket of this test's own: the module's other tests keep theirs
    storage.write_atomic("gs://doomed/run/result.json", b"{}")
    manager = checkpoint.Manager("gs://doomed/run", 1, 5, asynchronous=False)
    manager.save(1, {"w": np.arange(8.0)})
    fs.rm("gs://doomed", recursive=True)  # its objects, then the bucket itself
    assert "doomed" not in [b.rstrip("/") for b in fs.ls("")]
    gone = "GCS answered HTTP 404 Not Found for gs://doomed: the bucket was deleted"
    with pytest.raises(FileNotFoundError) as e:
        storage.write_atomic("gs://doomed/run/result.json", b"{}")
    assert errors.storage_cause(e.value).startswith(gone)
    message = str(errors.as_storage_error(e.value, "gs://doomed/run", 1))
    assert "\n" not in message and message.startswith(f"Cannot write in gs://doomed/run: {gone}")
    assert "the last good checkpoint (step 1) is kept" in message
    with pytest.raises(errors.StorageError, match=f"Cannot write a checkpoint in gs://doomed/run/checkpoints: {gone}"):
        manager.save(2, {"w": np.arange(8.0)})
    manager.close()


def test_permission_revoked_mid_run_stops_in_one_line_keeping_the_last_checkpoint_and_a_rerun_resumes(tmp_path):
    revoked = tmp_path / "revoked"  # while this file exists the server answers 403 to everything
    with gcs_emulator.running(bucket="revocable", refuse_while=str(revoked)) as server:
        workdir = server.url("run")
        args = ["--config", "tests/train_support.py", f"--workdir={workdir}", "--config.train.checkpoint_every_steps=5"]
        proc = launch(*args, "--config.train.num_steps=100000")
        deadline = time.time() + 180
        while not checkpoint.has_checkpoint(workdir) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        kept = checkpoint.newest_step(workdir)
        revoked.touch()
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the run did not stop once refused:\n{proc.communicate()[1][-3000:]}")
        revoked.unlink()
        last = err.strip().splitlines()[-1]
        assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
        assert last.startswith("effscale: error: Cannot write") and "GCS refused access (HTTP 403 Forbidden)" in last
        assert last.endswith("then rerun to resume."), last
        assert kept is not None and checkpoint.newest_step(workdir) >= kept  # nothing committed was lost
        resumed_from = checkpoint.newest_step(workdir)
        rerun = launch(*args, f"--config.train.num_steps={resumed_from + 2}")
        _, err = rerun.communicate(timeout=180)
        assert rerun.returncode == 0, err[-3000:]
        result = record.read_record(server.url("run", "result.json"))
        assert result.resumed_from_step == resumed_from and result.steps == resumed_from + 2
