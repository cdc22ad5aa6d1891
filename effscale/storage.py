"""Where a run's files live: local paths and Google Cloud Storage (gs://), through one set of functions.

Every path a user gives (--workdir, config.data.data_dir / manual_dir, config.init.weights, outputs)
goes through `path`, which returns an `etils.epath.Path` (what orbax and TFDS take) or raises a
one-line ValueError for a scheme effscale does not commit to. `check_reachable` turns an unreachable
bucket, missing credentials or an emulator set up halfway into one line naming the fix, before
anything compiles. effscale's own files (records, leases, logs) are read and written with the
functions below; orbax writes the checkpoints through the same `epath.Path`.

What "committed" means
----------------------
A record (result.json, eval.json, fingerprint.json, a sweep point's files) is committed when
`write_atomic` returns:

- local: the bytes go to a temporary file in the same directory, are fsynced, and the file is
  renamed over the name (`os.replace`, atomic on POSIX);
- gs://: the bytes go up as one object upload. GCS makes an object visible only once its upload
  has completed, replacing the previous generation at once, and reads and listings are strongly
  consistent: a reader sees the old object or the new one in full, never part of one. A rename
  on GCS is a copy and a delete (two requests, not atomic), so nothing committed is renamed into
  place.

So a reader never sees half a record, and as a run writes result.json last (after its final
checkpoint and evaluation), a record present means the run finished: a finished point is never
re-run. `create_exclusive` (leases, claims) commits only if the name is free: locally by
hard-linking a synced temporary file, on gs:// by an upload with the precondition
ifGenerationMatch=0, which GCS refuses (HTTP 412) when the object exists; of racing creators
exactly one succeeds. Checkpoints follow orbax's rule: a step's temporary directory renamed
(local), or `commit_success.txt` written last into the step's directory (gs://). Logs are no
records: metrics.jsonl is appended locally and re-uploaded whole on gs:// (no appends there),
each upload again all or nothing.

Reaching gs://
--------------
effscale's own files go through gcsfs, with its listing cache off (objects other hosts write must
be seen at once). etils.epath, and orbax through it, takes tf.io.gfile for gs:// while TensorFlow
is installed, and gcsfs when EPATH_USE_TF=false; orbax writes array data with TensorStore's own
GCS client. An emulator (STORAGE_EMULATOR_HOST) is honoured by gcsfs, and by TensorStore through
TENSORSTORE_GCS_HTTP_URL, but not by tf.io.gfile, whose endpoints are compiled in:
`emulator_env(host)` lists every variable an emulator needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import urllib.parse
from typing import Any

from etils import epath

PathLike = str | os.PathLike[str]

EMULATOR = "STORAGE_EMULATOR_HOST"
SUPPORTED = "a local path or gs://BUCKET/PATH"
_GS = "gs://"
_NO_LISTINGS_CACHE = '{"use_listings_cache": false}'


def path(text: PathLike, what: str = "path") -> epath.Path:
    """`text` as an epath.Path: local paths made absolute, gs://BUCKET/PATH as given.

    Raises ValueError naming `what` (the flag or config field) for another scheme (s3://, az://,
    hf://, file://: effscale's commit rule and exclusive creation are built for these two only),
    and for gs:/... (a gs:// URL passed through pathlib.Path, which would become a local directory).
    """
    text = os.fspath(text)
    if not text:
        raise ValueError(f"{what} is empty: give {SUPPORTED}.")
    scheme, sep, rest = text.partition("://")
    if not sep and text.startswith("gs:/"):  # what pathlib.Path makes of gs://: a local directory "gs:" by mistake
        raise ValueError(f"{what}={text}: a gs:// URL that lost a slash (pathlib.Path does that); pass it as a str.")
    if not sep:
        return epath.Path(os.path.abspath(text))
    if scheme != "gs":
        raise ValueError(f"{what}={text}: the scheme {scheme}:// is not supported; give {SUPPORTED}.")
    if not rest.split("/", 1)[0]:
        raise ValueError(f"{what}={text}: no bucket named; give gs://BUCKET/PATH.")
    return epath.Path(text)


def is_object_store(p: PathLike) -> bool:
    """Whether `p` names an object in a bucket (gs://) rather than a local file."""
    return os.fspath(p).startswith(_GS)


def _split(p: PathLike) -> tuple[str, str]:
    """(bucket, object name) of a gs:// path."""
    bucket, _, key = os.fspath(p)[len(_GS) :].partition("/")
    return bucket, key.strip("/")


def _gcs() -> Any:
    """The gcsfs file system effscale's own files go through (the configuration fsspec reads from FSSPEC_GS applies)."""
    import fsspec

    # Uncached listings: an object another host (or TensorStore, under orbax) wrote must be seen at once.
    return fsspec.filesystem("gs", use_listings_cache=False)


# ----------------------------------------------------------------------------- writing and reading


def write_atomic(p: PathLike, data: bytes) -> None:
    """Writes `data` to `p` so that readers see the old content or the new, never a mix (see "committed" above).

    Locally a temporary file in the same directory (created with mode 0666 less the umask, as
    `open` would, so that records on a shared cluster stay readable by the group) is flushed,
    fsynced and renamed over `p`; its directory is created. On gs:// it is one object upload.
    """
    p = path(p)
    if is_object_store(p):
        _gcs().pipe_file(os.fspath(p), data)
        return
    tmp = _synced_temporary(p, data)
    try:
        os.replace(tmp, p)
    except BaseException:
        os.remove(tmp)
        raise


def _synced_temporary(p: epath.Path, data: bytes) -> str:
    """A new file beside local `p` (its directory created) holding `data`, flushed and fsynced.

    Created with mode 0666 less the umask, as `open` would; removed again if writing fails.
    """
    directory = os.path.dirname(os.fspath(p))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{p.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def create_exclusive(p: PathLike, data: bytes) -> bool:
    """Creates `p` holding `data` unless it exists; True when this call created it (see "committed" above).

    Locally the content is synced under a temporary name, then hard-linked to `p` (which fails if
    `p` exists), so a reader never sees a partial file. On gs:// it is one upload with
    ifGenerationMatch=0.
    """
    p = path(p)
    if is_object_store(p):
        try:
            _gcs().pipe_file(os.fspath(p), data, mode="create")
        except FileExistsError:  # HTTP 412: the object exists
            return False
        return True
    tmp = _synced_temporary(p, data)
    try:
        os.link(tmp, p)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def read_bytes(p: PathLike) -> bytes:
    """The content of the file `p`; FileNotFoundError when there is none."""
    p = path(p)
    if is_object_store(p):
        return _gcs().cat_file(os.fspath(p))
    with open(p, "rb") as f:
        return f.read()


def exists(p: PathLike) -> bool:
    """Whether `p` is a file or a directory (on gs://: an object, or a prefix of one)."""
    p = path(p)
    return _gcs().exists(os.fspath(p)) if is_object_store(p) else os.path.exists(p)


def listdir(p: PathLike) -> list[str]:
    """The names in directory `p` (on gs://: under the prefix `p/`), sorted; [] when there is none."""
    p = path(p)
    if not is_object_store(p):
        return sorted(os.listdir(p)) if os.path.isdir(p) else []
    try:
        entries = _gcs().ls(os.fspath(p), detail=False)
    except FileNotFoundError:
        return []
    itself = os.fspath(p)[len(_GS) :]  # gcsfs lists an object as itself: a file has no entries
    return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != itself} - {""})


def is_dir(p: PathLike) -> bool:
    """Whether `p` is a directory (on gs://: a prefix of at least one object; a bucket has no empty ones)."""
    p = path(p)
    return bool(listdir(p)) if is_object_store(p) else os.path.isdir(p)


def makedirs(p: PathLike) -> None:
    """Creates directory `p` and its parents locally; nothing on gs:// (object stores have no directories)."""
    p = path(p)
    if not is_object_store(p):
        os.makedirs(p, exist_ok=True)


# ----------------------------------------------------------------------------- moving and removing


def rename(src: PathLike, dst: PathLike) -> bool:
    """Moves the file `src` to the unused name `dst`; False when `src` is absent.

    Of several callers renaming the same file at once, at most one gets True. Locally that is
    `os.rename`. On gs:// it is a copy, then a delete of `src` on condition that it is still the
    generation that was there before the copy (ifGenerationMatch): a caller whose delete is
    refused (another moved or replaced `src` meanwhile) removes its copy and gets False.
    """
    src, dst = path(src), path(dst)
    if not is_object_store(src):
        try:
            os.rename(src, dst)
            return True
        except FileNotFoundError:
            return False
    fs = _gcs()
    try:
        generation = fs.info(os.fspath(src))["generation"]
        fs.copy(os.fspath(src), os.fspath(dst))
    except FileNotFoundError:
        return False
    bucket, key = _split(src)
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(generation))
    except (FileNotFoundError, FileExistsError):  # gone, or replaced since (gcsfs reads HTTP 412 as FileExistsError)
        remove(dst)
        return False
    return True


def remove(p: PathLike) -> None:
    """Removes the file `p` if it is there."""
    p = path(p)
    with contextlib.suppress(FileNotFoundError):
        if is_object_store(p):
            _gcs().rm_file(os.fspath(p))
        else:
            os.remove(p)


def rmtree(p: PathLike) -> None:
    """Removes directory `p` and all below it (on gs://: every object under the prefix `p/`), if there."""
    p = path(p)
    if not is_object_store(p):
        shutil.rmtree(p, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        _gcs().rm(os.fspath(p), recursive=True)


def copy_tree(src: PathLike, dst: PathLike) -> None:
    """Copies directory `src` to the new directory `dst` (on gs://: every object under `src/`, each a request)."""
    src, dst = path(src), path(dst)
    if not is_object_store(src):
        shutil.copytree(src, dst)
        return
    fs = _gcs()
    root, target = os.fspath(src) + "/", os.fspath(dst) + "/"
    sources = [_GS + name for name in fs.find(root)]
    if sources:  # copied on the server side, several at once
        fs.copy(sources, [target + s[len(root) :] for s in sources])


# ----------------------------------------------------------------------------- reachability


def emulator_env(host: str) -> dict[str, str]:
    """The environment that sends every gs:// access of a process to the GCS-API emulator at `host` (http://H:P).

    STORAGE_EMULATOR_HOST reaches gcsfs (and google-cloud-storage); EPATH_USE_TF=false routes
    etils.epath, and so orbax, through gcsfs instead of tf.io.gfile, which ignores the emulator;
    TENSORSTORE_GCS_HTTP_URL sends orbax's array data there, with a token TensorStore accepts in
    place of credentials; gcsfs's bucket-layout probe (gRPC, not served by emulators) is turned off;
    FSSPEC_GS makes gcsfs anonymous and its listings uncached. Set it before the process starts.
    """
    return {
        EMULATOR: host,
        "EPATH_USE_TF": "false",
        "TENSORSTORE_GCS_HTTP_URL": host,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "FSSPEC_GS": json.dumps({"use_listings_cache": False, "token": "anon"}),
    }


def check_reachable(p: PathLike, what: str = "path") -> None:
    """Raises a one-line ValueError naming `what`, `p` and the fix when gs:// path `p` cannot be used.

    Checked: the process's settings for an emulator (every variable of `emulator_env`), that the
    emulator answers, that the bucket exists and that the credentials may list it (one request).
    Local paths are left to the caller (they need no network).
    """
    p = path(p, what)
    if not is_object_store(p):
        return
    _check_settings(p, what)
    bucket, key = _split(p)
    try:
        _gcs().call("GET", "b/{}/o", bucket, prefix=key, maxResults="1", json_out=True)
    except Exception as e:  # noqa: BLE001 - gcsfs, aiohttp and google-auth each raise their own types
        raise ValueError(f"{what}={p}: {_refusal(e, bucket)}") from e


def _check_settings(p: epath.Path, what: str) -> None:
    """The variables a process needs for gs:// (see `emulator_env`), checked as its libraries will read them."""
    import fsspec.config

    host = os.environ.get(EMULATOR, "")
    uses_gcsfs = _epath_takes_gcsfs()
    if host:
        _check_emulator_settings(p, what, host, uses_gcsfs)
    listings = {**fsspec.config.conf.get("gcs", {}), **fsspec.config.conf.get("gs", {})}.get("use_listings_cache")
    if uses_gcsfs and listings not in (False, "false"):
        raise ValueError(
            f"{what}={p}: gs:// paths go through gcsfs (EPATH_USE_TF=false) with its listing cache on, which "
            f"hides objects other processes write; start the process with FSSPEC_GS='{_NO_LISTINGS_CACHE}'."
        )


def _check_emulator_settings(p: epath.Path, what: str, host: str, uses_gcsfs: bool) -> None:
    import gcsfs

    if not uses_gcsfs:
        raise ValueError(
            f"{what}={p}: {EMULATOR}={host} is set, but gs:// paths would go through tf.io.gfile, whose GCS "
            "client ignores it (its endpoints are compiled in); set EPATH_USE_TF=false before the process starts "
            "(etils reads it once; storage.emulator_env)."
        )
    tensorstore_url = os.environ.get("TENSORSTORE_GCS_HTTP_URL", "")
    if _url(tensorstore_url) != _url(host):
        raise ValueError(
            f"{what}={p}: {EMULATOR}={host} is set, but TENSORSTORE_GCS_HTTP_URL={tensorstore_url or '(unset)'}: "
            f"orbax would send checkpoint arrays elsewhere; set TENSORSTORE_GCS_HTTP_URL={host}."
        )
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        raise ValueError(
            f"{what}={p}: gcsfs probes each bucket's layout over gRPC, which the emulator at {host} does not "
            "serve (a minute's stall per probe); start the process with GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false."
        )
    split = urllib.parse.urlsplit(_url(host))
    try:
        socket.create_connection((split.hostname, split.port or 80), timeout=5).close()
    except OSError as e:
        raise ValueError(
            f"{what}={p}: the storage emulator at {EMULATOR}={host} does not answer ({e.strerror or e}); "
            f"start it, or unset {EMULATOR} to use GCS itself."
        ) from e


def _url(host: str) -> str:
    host = host.strip().rstrip("/")
    return host if "://" in host or not host else f"http://{host}"


def _epath_takes_gcsfs() -> bool:
    """Whether etils.epath, and orbax through it, reaches gs:// through gcsfs in this process.

    etils decides once per process, at the first path of any kind it resolves, from EPATH_USE_TF
    as it was then (a cached check); a variable set later changes nothing, so etils is asked, not
    the environment. "gs://" names no bucket, so asking makes no request.
    """
    from etils.epath import backend

    return epath.Path(_GS)._backend is not backend.tf_backend  # noqa: SLF001 - the decision itself


def _refusal(error: Exception, bucket: str) -> str:
    """Why GCS refused to list `bucket`, and the fix, in one line."""
    code = getattr(error, "code", None)
    detail = " ".join(str(error).split())[:200]
    if isinstance(error, FileNotFoundError):
        return (
            f"bucket {bucket} does not exist or these credentials cannot see it; create it "
            f"(gcloud storage buckets create gs://{bucket}) or correct the name."
        )
    if code == 401:
        return (
            f"GCS refused the request as unauthenticated ({detail}); run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
        )
    if code == 403 or detail.startswith("Forbidden"):
        return (
            f"these credentials may not list bucket {bucket} ({detail}); grant them roles/storage.objectAdmin "
            "on it, or choose another bucket."
        )
    return (
        f"GCS did not answer ({type(error).__name__}: {detail}); check the network, "
        f"or set {EMULATOR} to use an emulator."
    )
