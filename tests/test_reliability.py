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
# Measurements of the process rather than of the run (a resumed run initialises nothing: one compile fewer).
TIMINGS = ("train_images_per_sec", "step_time_s", "eval_images_per_sec", "compile_time_s", "wall_time_s",
           "peak_host_memory_bytes", "compile_cache_hits")  # fmt: skip


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


# ----------------------------------------------------------------------------- GCS failures in the middle of a run


@pytest.fixture
def refusing_gcs(monkeypatch):
    """Starts an HTTP server on loopback that answers every request with a given status and GCS's JSON error body.

    Yields `start(status) -> http://127.0.0.1:PORT`; TensorStore is pointed at the newest one (as at an
    emulator), and every server is stopped afterwards.
    """
    import http.server
    import threading

    servers = []

    def start(status: int) -> str:
        class Refuse(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"error": {"code": status, "message": "refused", "errors": [{"message": "refused"}]}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        host = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", host)
        return host

    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "refused")  # TensorStore's credentials for a test server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _tensorstore_write_error(bucket: str) -> ValueError:
    """What TensorStore (orbax's array writer) raises when its write to `bucket` is refused, retries spent."""
    ts = pytest.importorskip("tensorstore")
    retries = {"max_retries": 1, "initial_delay": "1ms", "max_delay": "2ms"}
    spec = {"driver": "gcs", "bucket": bucket, "path": "run/", "context": {"gcs_request_retries": retries}}
    with pytest.raises(ValueError) as e:
        ts.KvStore.open(spec).result().write("checkpoints/4/d/0", b"weights").result()
    return e.value


GCS_CAUSES = {
    401: "GCS refused the credentials (HTTP 401 Unauthorized): they expired or were revoked; run `gcloud auth",
    403: "GCS refused access (HTTP 403 Forbidden): check the credentials' permission on",
    404: "GCS answered HTTP 404 Not Found for",
    429: "GCS kept refusing requests (HTTP 429 Too Many Requests) after retries",
    503: "GCS kept failing (HTTP 503 Service Unavailable) after retries",
}


@pytest.mark.parametrize("status", sorted(GCS_CAUSES))
def test_a_refused_tensorstore_write_is_a_storage_failure_named_by_its_http_status(refusing_gcs, status):
    from effscale.training import errors

    refusing_gcs(status)
    error = _tensorstore_write_error("bucket")
    assert f"http_response_code='{status}'" in str(error)  # what is matched: TensorStore's own text
    wrapped = RuntimeError("the background save failed")  # as orbax re-raises it
    wrapped.__cause__ = error
    cause = errors.storage_cause(wrapped)
    assert cause is not None and cause.startswith(GCS_CAUSES[status]), cause
    message = str(errors.as_storage_error(wrapped, "gs://bucket/run", 4))
    assert "\n" not in message and message.startswith(f"Cannot write in gs://bucket/run: {GCS_CAUSES[status]}")
    assert "the last good checkpoint (step 4) is kept" in message and message.endswith("then rerun to resume.")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_gcsfs_write_is_a_storage_failure_naming_the_bucket(refusing_gcs, status):
    """gcsfs (effscale's records, orbax's metadata) raises HttpError, OSError('Forbidden: ...') or FileNotFoundError."""
    pytest.importorskip("gcsfs")
    import gcsfs.core

    from effscale.training import errors

    fs = gcsfs.core.GCSFileSystem(token="anon", endpoint_url=refusing_gcs(status), skip_instance_cache=True)
    with pytest.raises(Exception) as e:  # noqa: PT011 - which type is what this test is about
        fs.pipe_file("bucket/run/result.json", b"{}")
    assert getattr(e.value, "errno", None) is None  # no errno: the OS-level causes cannot see it
    cause = errors.storage_cause(e.value)
    assert cause is not None and cause.startswith(GCS_CAUSES[status]), cause
    if status != 401:
        assert "gs://bucket" in cause


def test_gcs_client_errors_are_named_and_other_failures_are_not():
    pytest.importorskip("gcsfs")
    import aiohttp
    import google.auth.exceptions
    from gcsfs.retry import HttpError

    from effscale.training import errors

    assert errors.storage_cause(HttpError({"code": 429, "message": "rate limit"})).startswith(GCS_CAUSES[429])
    assert errors.storage_cause(HttpError({"code": 503, "message": "backend"})).startswith(GCS_CAUSES[503])
    revoked = google.auth.exceptions.RefreshError("invalid_grant: Token has been expired or revoked.")
    assert errors.storage_cause(revoked).startswith(GCS_CAUSES[401])
    info = aiohttp.RequestInfo(aiohttp.client_reqrep.URL("https://storage.googleapis.com/b/x/o"), "GET", {}, None)
    assert errors.storage_cause(aiohttp.ClientResponseError(info, (), status=403)).startswith(GCS_CAUSES[403])
    for other in (
        HttpError({"code": 412, "message": "precondition"}),  # a lost race: the code handles it
        HttpError({"code": 400, "message": "bad request"}),  # a bug, with its traceback
        FileNotFoundError("https://storage.googleapis.com/download/storage/v1/b/x/o/missing?alt=media"),  # one object
        ValueError("config.train.batch_size must be positive"),
    ):
        assert errors.storage_cause(other) is None, other


def test_a_refused_read_from_another_bucket_is_not_called_a_write_in_the_workdir(refusing_gcs):
    """init.weights or the data in a bucket the credentials cannot read: the workdir is not at fault."""
    pytest.importorskip("gcsfs")
    import gcsfs.core

    from effscale.training import errors

    fs = gcsfs.core.GCSFileSystem(token="anon", endpoint_url=refusing_gcs(403), skip_instance_cache=True)
    with pytest.raises(Exception) as e:  # noqa: PT011 - gcsfs's type for a 403 read is part of what is tested
        fs.cat_file("weights/b0.h5")
    message = str(errors.as_storage_error(e.value, "gs://runs/exp", None))
    assert message.startswith(f"Storage refused a request: {GCS_CAUSES[403]} gs://weights "), message
    assert "Cannot write" not in message and message.endswith("Fix that, then rerun to resume.")
    assert str(errors.as_storage_error(e.value, "gs://weights/run", 2)).startswith("Cannot write in gs://weights/run")


def test_gcsfs_bad_gateway_after_its_retries_is_named_not_an_empty_proxy_error():
    pytest.importorskip("gcsfs")
    from gcsfs.retry import validate_response

    from effscale.training import errors

    with pytest.raises(Exception) as e:  # noqa: PT011 - gcsfs raises requests' ProxyError, with no text, for a 502
        validate_response(502, b"Bad Gateway", "bucket/run/result.json")
    assert str(e.value) == ""
    cause = errors.storage_cause(e.value)
    assert cause == "GCS kept failing (HTTP 502 Bad Gateway) after retries: a fault at Google or on the network"
