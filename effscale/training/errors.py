"""The errors a run raises and its callers (launch.py, the sweep driver) catch."""

from __future__ import annotations

import contextlib
import errno
import http as http_lib
import os
import re
import signal
from collections.abc import Iterator


class ConfigError(ValueError):
    """The config or the workdir cannot be used; raised before anything is compiled or trained."""


class CheckpointsDamagedError(ConfigError):
    """No checkpoint of the workdir restores; raised before training, with every checkpoint left in place."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class Interrupted(Exception):  # noqa: N818 (a state, not an error)
    """The run was stopped by a signal or preemption, after saving a checkpoint (or before its first step, with
    nothing new to save); rerun to resume."""

    def __init__(self, step: int, signum: int | None, workdir: str, reason: str = "preemption", saved: bool = True):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name if signum else reason
        if saved:
            said = f"at step {step}; checkpoint saved in {workdir}"
        else:  # while validating, restoring or compiling: the state is still the saved one
            said = f"before training a step; nothing new to save (what {workdir} holds is kept)"
        super().__init__(f"Stopped by {name} {said}. Rerun to resume.")


class SweepStopped(Interrupted):
    """A stop request the sweep driver took between two points: no point is running, none is lost."""

    def __init__(self, signum: int, workdir: str):
        name = signal.Signals(signum).name
        Exception.__init__(
            self, f"Stopped by {name} between sweep points; finished points are in {workdir}. Rerun to continue."
        )
        self.step, self.signum, self.workdir = None, signum, workdir


class StorageError(RuntimeError):
    """A write failed for want of space or permission (disk full, read-only, quota); the run stopped.

    The message names the path, the cause and what was kept; checkpoints already complete are
    untouched and the failed write's temporary files are removed, so a rerun resumes.
    """


# Why a write fails for reasons the user, not the code, must fix.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# TensorStore (under orbax) re-raises OS errors as ValueErrors that keep only the text and the code.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def storage_cause(exc: BaseException) -> str | None:
    """Why `exc` (or an exception it was raised from) failed, in words the user can act on.

    The OS's words for a disk ("No space left on device"), or for GCS the HTTP status and the fix
    ("GCS refused access (HTTP 403 Forbidden): ..."). None when no exception in the chain is a
    storage failure (disk full, quota, read-only, permission; on GCS: credentials, permission, a
    bucket gone, or throttling and server errors that outlasted the client's retries).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = _os_cause(current) or _gcs_cause(current)
        if cause:
            return cause
        current = current.__cause__ or current.__context__
    return None


def _os_cause(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return os.strerror(exc.errno)
    text = str(exc)
    code = _OS_ERROR_CODE.search(text)
    if code and int(code.group(1)) in _STORAGE_ERRNOS:
        return os.strerror(int(code.group(1)))
    for number in _STORAGE_ERRNOS:
        if os.strerror(number) in text:
            return os.strerror(number)
    return None


# GCS answers that retrying does not get past: credentials, permission, a missing bucket; throttling and server
# errors reach effscale only once the client's retries are spent.
_GCS_STATUSES = frozenset({401, 403, 404, 408, 429, 500, 502, 503, 504})
# TensorStore (orbax's array writer) re-raises an HTTP failure as a ValueError that keeps the status in its text.
_TENSORSTORE_HTTP = re.compile(r"http_response_code='?(\d{3})")
# The bucket a JSON API URL (.../b/BUCKET/o...) or a gs:// URL in an error's text is about.
_GCS_BUCKET = re.compile(r"(?:^|\s|/storage/v1/)b/([^/?\s]+)/o\b|gs://([^/\s'\"]+)")
# A JSON API URL about a bucket as a whole (an upload, a listing; not one object): gcsfs's 404 for it means
# the bucket is gone, where a 404 for one object is an object that is not there (not a storage failure).
_GCS_BUCKET_URL = re.compile(r"(?:^|\s|/storage/v1/)b/[^/?\s]+/o(?:[?\s]|$)")


def _gcs_cause(exc: BaseException) -> str | None:
    """The GCS refusal `exc` stands for, with its fix; None when it is none.

    Matched by the raising library's module and attributes, so that gcsfs, aiohttp and google-auth
    need not be importable: gcsfs.retry.HttpError (`code`), gcsfs's OSError("Forbidden: URL") for
    403 and FileNotFoundError(URL) for 404, aiohttp's ClientResponseError (`status`), google-auth's
    RefreshError (revoked or expired credentials), and TensorStore's ValueError text.
    """
    status, text = _gcs_status(exc), str(exc)
    if status not in _GCS_STATUSES:
        return None
    found = _GCS_BUCKET.search(text)
    return _gcs_words(status, (found.group(1) or found.group(2)) if found else None)


def _gcs_status(exc: BaseException) -> int | None:
    """The HTTP status of a GCS failure, from whichever client raised it."""
    module, text = type(exc).__module__.split(".")[0], str(exc)
    if module == "google" and type(exc).__name__ == "RefreshError":  # the token could not be renewed
        return 401
    if module == "requests" and type(exc).__name__ == "ProxyError":  # gcsfs's 502 after its retries, no text
        return 502
    code = getattr(exc, "code", None) if module in ("gcsfs", "google") else None
    code = getattr(exc, "status", None) if module == "aiohttp" else code
    if isinstance(code, int):
        return code
    if isinstance(exc, FileNotFoundError) and _GCS_BUCKET_URL.search(text):  # gcsfs: no such bucket
        return 404
    if isinstance(exc, OSError) and text.startswith("Forbidden: ") and _GCS_BUCKET.search(text):  # gcsfs's 403
        return 403
    found = _TENSORSTORE_HTTP.search(text) if isinstance(exc, ValueError) else None
    return int(found.group(1)) if found else None


def _gcs_words(status: int, bucket: str | None) -> str:
    """What GCS's `status` means for a run, and the fix, in one clause."""
    http = f"HTTP {status} {http_lib.HTTPStatus(status).phrase}"
    where = f"gs://{bucket}" if bucket else "the bucket"
    if status == 401:
        return (
            f"GCS refused the credentials ({http}): they expired or were revoked; run `gcloud auth "
            "application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
        )
    if status == 403:
        return f"GCS refused access ({http}): check the credentials' permission on {where} (roles/storage.objectAdmin)"
    if status == 404:
        return f"GCS answered {http} for {where}: the bucket was deleted, or these credentials can no longer see it"
    if status == 429:
        return f"GCS kept refusing requests ({http}) after retries: write less often or from fewer hosts at once"
    return f"GCS kept failing ({http}) after retries: a fault at Google or on the network"


def as_storage_error(exc: BaseException, workdir: str | None = None, kept: int | None = None) -> StorageError | None:
    """`exc` as a StorageError naming the file it could not write (else `workdir`) and the newest checkpoint
    `kept`, or None when it is no storage failure."""
    if isinstance(exc, StorageError):
        return exc
    cause = storage_cause(exc)
    if cause is None:
        return None
    path = getattr(exc, "filename", None)
    saved = f"the last good checkpoint (step {kept}) is kept" if kept else "checkpoints already saved are kept"
    if _another_bucket(cause, workdir):  # the data or the initial weights, read from elsewhere: not a write
        return StorageError(f"Storage refused a request: {cause}; {saved}. Fix that, then rerun to resume.")
    where = f" {path}" if path else (f" in {workdir}" if workdir else "")
    fix = "Fix that" if cause.startswith("GCS") else "Free space or fix the permissions"  # GCS's words name the fix
    tail = f"{fix} (or choose another --workdir), then rerun to resume."
    return StorageError(f"Cannot write{where}: {cause}; {saved}. {tail}")


def _another_bucket(cause: str, workdir: str | None) -> bool:
    """Whether the GCS bucket `cause` names is not the workdir's."""
    found = re.search(r"gs://([^/\s:;,)]+)", cause)
    if found is None:
        return False
    return not (workdir or "").startswith(f"gs://{found.group(1)}/") and workdir != f"gs://{found.group(1)}"


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Marks the ValueErrors of validation (config fields, dataset, workdir) as ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e
