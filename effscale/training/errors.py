"""The errors a run raises and its callers (launch.py, the sweep driver) catch."""

from __future__ import annotations

import contextlib
import errno
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
    """The run was stopped by a signal or preemption after saving a checkpoint; rerun to resume."""

    def __init__(self, step: int, signum: int | None, workdir: str, reason: str = "preemption"):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name if signum else reason
        super().__init__(f"Stopped by {name} at step {step}; checkpoint saved in {workdir}. Rerun to resume.")


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
    """The OS's words for why `exc` (or an exception it was raised from) failed, e.g. "No space left on device".

    None when no exception in the chain is a storage failure (disk full, quota, read-only, permission).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return os.strerror(current.errno)
        text = str(current)
        code = _OS_ERROR_CODE.search(text)
        if code and int(code.group(1)) in _STORAGE_ERRNOS:
            return os.strerror(int(code.group(1)))
        for number in _STORAGE_ERRNOS:
            if os.strerror(number) in text:
                return os.strerror(number)
        current = current.__cause__ or current.__context__
    return None


def as_storage_error(exc: BaseException, workdir: str | None = None, kept: int | None = None) -> StorageError | None:
    """`exc` as a StorageError naming the file it could not write (else `workdir`) and the newest checkpoint
    `kept`, or None when it is no storage failure."""
    if isinstance(exc, StorageError):
        return exc
    cause = storage_cause(exc)
    if cause is None:
        return None
    path = getattr(exc, "filename", None)
    where = f" {path}" if path else (f" in {workdir}" if workdir else "")
    saved = f"the last good checkpoint (step {kept}) is kept" if kept else "checkpoints already saved are kept"
    return StorageError(
        f"Cannot write{where}: {cause}; {saved}. "
        "Free space or fix the permissions (or choose another --workdir), then rerun to resume."
    )


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Marks the ValueErrors of validation (config fields, dataset, workdir) as ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e
