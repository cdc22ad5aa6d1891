"""A GCS-API server on loopback for the tests: gcp-storage-emulator in a subprocess, with GCS's preconditions.

    with gcs_emulator.running() as gcs:      # or the `gcs` fixture of tests/test_gcs.py
        train_and_evaluate(config, f"gs://{gcs.bucket}/run")

`running` starts ``python tests/gcs_emulator.py`` (in-memory storage, a free port on 127.0.0.1,
one bucket), sets this process's environment to effscale.storage.emulator_env for the block (the
environment of subprocesses started inside it too), and stops the server afterwards.

gcp-storage-emulator 2026.7.19 lacks three rules of GCS that effscale and TensorStore rely on;
the server here adds them as GCS documents them:

- ifGenerationMatch: a request whose value differs from the object's live generation ("0" when
  there is none) gets 412 Precondition Failed and changes nothing. The emulator ignores it, so a
  create with ifGenerationMatch=0 overwrites an existing object. (Requests are handled under one
  lock, so the check and the change cannot interleave.)
- ifGenerationNotMatch on a read of an object whose live generation is that value: 304 Not Modified.
- media downloads carry the object's generation in an x-goog-generation header; without it
  TensorStore (orbax's array writer) fails with "Malformed StorageGeneration" when it re-reads an
  OCDBT manifest.

With `require_auth`, it answers 401 to requests without credentials, as GCS answers an anonymous
caller of a private bucket.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any
from unittest import mock

_STARTUP_S = 60


@dataclasses.dataclass(frozen=True)
class Emulator:
    host: str  # http://127.0.0.1:PORT
    bucket: str
    env: dict[str, str]  # effscale.storage.emulator_env(host)

    def url(self, *parts: str) -> str:
        """gs://BUCKET/PARTS..."""
        return "/".join([f"gs://{self.bucket}", *parts])


@contextlib.contextmanager
def running(
    bucket: str = "effscale-test", require_auth: bool = False, refuse_while: str | None = None
) -> Iterator[Emulator]:
    """Starts the server, points this process (and its children) at it for the block, and stops it.

    `refuse_while`: a file path; while that file exists, the server answers every request with 403,
    as GCS does once a run's credentials lose their permission on the bucket.
    """
    from effscale import storage

    command = [sys.executable, os.path.abspath(__file__), "--bucket", bucket] + (["--require-auth"] * require_auth)
    command += ["--refuse-while", refuse_while] if refuse_while else []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = _read_port(proc)
        host = f"http://127.0.0.1:{port}"
        env = storage.emulator_env(host)
        with mock.patch.dict(os.environ, env), _fsspec_config_from(env):
            epath_decides_again()
            yield Emulator(host, bucket, env)
    finally:
        epath_decides_again()  # on the environment as it was before
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def epath_decides_again() -> None:
    """Makes etils choose its gs:// backend again from the environment as it is now.

    etils decides once per process, at the first path of any kind (`gpath._is_tf_installed`, cached),
    from EPATH_USE_TF as it was then. A test process has resolved paths long before it points itself
    at an emulator (under pytest-xdist, in other modules' tests), so orbax's gs:// paths would go
    through tf.io.gfile, which cannot reach the emulator. Processes effscale starts get the variable
    from birth.
    """
    from etils.epath import gpath

    gpath._is_tf_installed.cache_clear()  # noqa: SLF001 - the cache is the cause


def _read_port(proc: subprocess.Popen) -> int:
    ready, _, _ = select.select([proc.stdout], [], [], _STARTUP_S)  # the server prints its port once it listens
    line = proc.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"the GCS emulator did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return int(line)


@contextlib.contextmanager
def _fsspec_config_from(env: dict[str, str]) -> Iterator[None]:
    """Applies the FSSPEC_* variables of `env` to this process's fsspec (it reads them once, on import)."""
    import fsspec.config

    saved = {k: dict(v) for k, v in fsspec.config.conf.items()}
    fsspec.config.set_conf_env(fsspec.config.conf, env)
    try:
        yield
    finally:
        fsspec.config.conf.clear()
        fsspec.config.conf.update(saved)


# ----------------------------------------------------------------------------- the server process


def _target(request: Any) -> tuple[str | None, str | None]:
    """(bucket, object name) a request is about: from its path, its `name` parameter or its upload metadata.

    A copy's or rewrite's precondition is about its destination, as on GCS.
    """
    params = request.params or {}
    bucket = params.get("dest_bucket_name") or params.get("bucket_name")
    name = params.get("dest_object_id") or params.get("object_id") or (request.query.get("name") or [None])[0]
    if name is None and request.method == "POST" and "uploadType" in request.query:
        data = request.data
        if isinstance(data, dict):
            name = (data.get("meta") or data).get("name")
    return bucket, name


def _live_generation(request: Any, storage: Any) -> str:
    """The generation of the object a request is about, "0" when there is no live object (GCS's convention)."""
    bucket, name = _target(request)
    live = storage.objects.get(bucket, {}).get(name)
    return str(live["generation"]) if live else "0"


def _answer(response: Any, status: HTTPStatus, message: str) -> None:
    response.status = status
    response.json({"error": {"code": status.value, "message": message, "errors": [{"message": message}]}})


def _is_media_download(request: Any) -> bool:
    return request.method == "GET" and ("/download/" in request.path or request.query.get("alt") == ["media"])


def _guarded(handler: Any, require_auth: bool, lock: threading.Lock, refuse_while: str | None = None) -> Any:
    """`handler` with GCS's rules the emulator lacks: preconditions, 401 for anonymous callers, generation
    headers; and 403 for every request while the file `refuse_while` exists (revoked permission)."""

    def run(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if refuse_while and os.path.exists(refuse_while):
            _answer(response, HTTPStatus.FORBIDDEN, "The caller does not have storage.objects.create access.")
            return None
        with lock:
            return _handle(handler, require_auth, request, response, storage, *args, **kwargs)

    return run


def _handle(handler: Any, require_auth: bool, request: Any, response: Any, storage: Any, *args: Any, **kw: Any) -> Any:
    if require_auth and not request.get_header("Authorization"):
        _answer(response, HTTPStatus.UNAUTHORIZED, "Anonymous caller does not have storage.objects.list access.")
        return None
    match, not_match = (request.query.get(k, [None])[0] for k in ("ifGenerationMatch", "ifGenerationNotMatch"))
    if match is not None and _live_generation(request, storage) != match:
        _answer(response, HTTPStatus.PRECONDITION_FAILED, "At least one of the pre-conditions did not hold.")
        return None
    if not_match is not None and _live_generation(request, storage) == not_match != "0":
        response.status = HTTPStatus.NOT_MODIFIED  # what GCS answers a read of an unchanged object
        return None
    out = handler(request, response, storage, *args, **kw)
    if _is_media_download(request) and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        response["x-goog-generation"] = _live_generation(request, storage)  # TensorStore reads it
        response["x-goog-metageneration"] = "1"
    return out


def _serve(bucket: str, require_auth: bool, refuse_while: str | None) -> None:
    import http.server
    import logging
    import time

    from gcp_storage_emulator import server

    logging.disable(logging.CRITICAL)  # it logs every request
    # A thread per connection, so that one a client holds open without sending cannot stall the
    # others; the lock keeps the handling of requests one at a time, as the emulator's storage expects.
    http.server.HTTPServer = http.server.ThreadingHTTPServer
    lock = threading.Lock()
    server.HANDLERS = tuple(
        (regex, {method: _guarded(h, require_auth, lock, refuse_while) for method, h in handlers.items()})
        for regex, handlers in server.HANDLERS
    )
    srv = server.create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    srv.start()
    print(srv._api._httpd.server_address[1], flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        srv.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--require-auth", action="store_true")
    parser.add_argument("--refuse-while", default=None, help="answer 403 to everything while this file exists")
    args = parser.parse_args()
    _serve(args.bucket, args.require_auth, args.refuse_while)
