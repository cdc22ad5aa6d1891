"""Checkpoints of a run directory: orbax's CheckpointManager plus a fingerprint guard.

`<workdir>/checkpoints/<step>/` holds the whole train state (parameters, optimizer
state, EMA weights and BatchNorm statistics, step); the step is also the data
position. The workdir may be local or gs:// (effscale.storage). Orbax commits a checkpoint
locally by writing it to a temporary directory and renaming that when complete, and on gs://
(where a rename is a copy and a delete) by writing `<step>/commit_success.txt` last; only
committed steps count, so a process killed mid-save leaves the previous checkpoint intact.

`<workdir>/fingerprint.json` records what the checkpoints are of (the network
description and the dataset). A run whose config describes something else is
refused instead of silently restoring mismatched weights or overwriting them.
All calls must be made on every process (orbax synchronises them).

A checkpoint that does not restore (a truncated or damaged file) is skipped for the next older
one, and moved to `<workdir>/checkpoints-damaged/` rather than deleted. A save that fails for
want of space or permission raises StorageError and removes orbax's temporary directory (on
gs://: the uncommitted step's objects).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from effscale import parallel, record, storage
from effscale.training.errors import CheckpointsDamagedError, StorageError, storage_cause

FINGERPRINT = "fingerprint.json"
DAMAGED = "checkpoints-damaged"
_TMP_MARK = ".orbax-checkpoint-tmp"  # orbax writes checkpoint <step> as <step>.orbax-checkpoint-tmp[-...] first
_COMMITTED = "commit_success.txt"  # on gs://, orbax writes it last into <step>/ (its CommitFileTemporaryPath)
_log = logging.getLogger("effscale")
_ORBAX_SOURCE = os.path.dirname(ocp.__file__) + os.sep


class Manager:
    """Periodic, preemption-aware saves and automatic resume of one pytree."""

    def __init__(self, workdir: str | os.PathLike[str], every_steps: int, keep: int, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(1, int(every_steps)),
            max_to_keep=max(1, int(keep)),
            enable_async_checkpointing=asynchronous,
            create=True,
            cleanup_tmp_directories=True,  # what a killed save left behind
        )
        self.directory = checkpoints_of(workdir)
        self._failed = False  # a storage error was raised: close() must not raise it again
        with self._storage_errors():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores checkpoint `step` (default: latest) into the structure, shapes and shardings of `target`.

        `target` may be abstract (`jax.ShapeDtypeStruct` leaves with shardings).
        """
        step = self.latest_step() if step is None else step
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def restore_newest(self, abstract_for_step: Callable[[int], Any]) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that restores, or None when there is none.

        `abstract_for_step(step)` is the target for `restore`. Checkpoints newer than the one
        restored failed to restore: each is named in a warning and moved to DAMAGED. Raises
        CheckpointsDamagedError, moving nothing, when none restores (a cause common to all, such
        as a changed program, must not cost the user their checkpoints).
        """
        failures: list[tuple[int, Exception]] = []
        for step in reversed(self.steps()):
            try:
                state = self.restore(abstract_for_step(step), step)
            except Exception as e:  # noqa: BLE001 - orbax, TensorStore and json each raise their own types
                failures.append((step, e))
                continue
            for bad, cause in failures:
                self._set_aside(bad, cause, step)
            if failures:
                self._manager.reload()  # forget the moved steps, so that saving them again is allowed
            return step, state
        if failures:
            newest, cause = failures[0]
            steps = ", ".join(str(s) for s, _ in failures)
            raise CheckpointsDamagedError(
                f"No checkpoint in {self.directory} restores (steps {steps}; step {newest}: {_first_line(cause)}). "
                "They are left as they are: "
                "move that directory away to start afresh, or choose another --workdir."
            )
        return None

    def _set_aside(self, step: int, cause: Exception, resumed: int) -> None:
        """Moves the damaged checkpoint `step` out of orbax's sight (process 0) and says where."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.directory.parent / DAMAGED / f"{step}-{stamp}"
        if jax.process_index() == 0:
            _move_step(self.directory / str(step), target)
            _log.warning(
                "Checkpoint step %d does not restore (%s); moved it to %s and resumed from step %d.",
                step, _first_line(cause), target, resumed,
            )  # fmt: skip
        parallel.barrier(f"effscale:set-aside:{self.directory}:{step}")

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def delete(self, step: int) -> None:
        """Deletes checkpoint `step` (after waiting for a background save)."""
        self.wait()
        self._manager.delete(step)

    def should_save(self, step: int) -> bool:
        """Whether `step` is on the save interval (or the cluster signalled preemption)."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any) -> None:
        """Saves `state` as checkpoint `step` (in the background when asynchronous).

        Raises StorageError when this save, or the previous one still in the background, fails
        for want of space or permission.
        """
        with self._storage_errors():
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once the cluster signalled preemption."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        """Blocks until a background save has been committed; StorageError as `save`."""
        with self._storage_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for a background save and releases orbax's threads; StorageError as `save`.

        After a StorageError the failed save's error is not raised a second time.
        """
        if not self._failed:
            with self._storage_errors():
                self._manager.close()
            return
        with contextlib.suppress(Exception):
            self._manager.close()

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turns a failed write's exception chain into one StorageError, after removing its temporary files."""
        try:
            yield
        except Exception as e:
            cause = storage_cause(e)
            if cause is None:
                raise
            self._failed = True
            # The storage that refused the write may refuse the listings too (revoked credentials): the
            # cleanup is then left to the rerun (orbax removes uncommitted steps when it starts).
            with contextlib.suppress(Exception):
                self._remove_temporaries()
            kept = newest_step_or_none(self.directory)
            # None also when the listing itself was refused: then say only that nothing saved was touched.
            kept_text = f"the last good checkpoint (step {kept}) is kept" if kept else "saved checkpoints are kept"
            fix = "Fix that" if cause.startswith("GCS") else "Free space or fix the permissions"  # GCS's words name it
            raise StorageError(
                f"Cannot write a checkpoint in {self.directory}: {cause}; {kept_text}. "
                f"{fix} (or choose another --workdir), then rerun to resume."
            ) from e

    def _remove_temporaries(self) -> None:
        """Deletes what a failed save left (orbax removes it only when a manager is next created)."""
        if jax.process_index() != 0:
            return
        committed = set(_complete_steps(self.directory))
        for name in storage.listdir(self.directory):
            if _TMP_MARK in name or (name.isdigit() and int(name) not in committed):
                storage.rmtree(self.directory / name)


def _move_step(source: Any, target: Any) -> None:
    """Moves checkpoint directory `source` to `target`, out of orbax's sight.

    Locally a rename (a copy across file systems). On gs:// its objects are copied, then the commit
    marker is deleted before the rest: a move cut short leaves an uncommitted step, which orbax
    removes when it next starts.
    """
    if not storage.is_object_store(source):
        storage.makedirs(target.parent)
        shutil.move(source, target)
        return
    storage.copy_tree(source, target)
    storage.remove(source / _COMMITTED)
    storage.rmtree(source)


def quiet_abandoned_reads() -> None:
    """Makes this process drop the echoes of a failed restore (call once, at start-up); the failure still raises.

    When one array of a checkpoint fails to read, orbax closes its event loop while TensorStore's
    other reads are in flight: each then reports "Event loop is closed" as an unraisable exception,
    and asyncio logs "Task exception was never retrieved" for each abandoned read, hundreds of
    tracebacks for one damaged file, some after the restore has returned.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)):
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_not_unretrieved_task)


def _not_unretrieved_task(entry: logging.LogRecord) -> bool:
    return not entry.getMessage().startswith("Task exception was never retrieved")


def not_orbax_error(entry: logging.LogRecord) -> bool:
    """A logging filter (for absl's logger, which orbax logs through) that drops orbax's ERROR records.

    Orbax logs a failed background save, with its traceback, from each thread involved before it
    re-raises the failure to the caller, where the Manager reports it once.
    """
    return entry.levelno < logging.ERROR or not entry.pathname.startswith(_ORBAX_SOURCE)


def _complete_steps(directory: str | os.PathLike[str]) -> list[int]:
    """The steps of the committed checkpoints in `directory`, oldest first, read from the storage.

    Locally every `<step>/` is complete (orbax renames it into place); on gs:// only those holding
    orbax's commit marker are.
    """
    steps = [int(name) for name in storage.listdir(directory) if name.isdigit()]
    if storage.is_object_store(directory):
        root = storage.path(directory)
        steps = [s for s in steps if storage.exists(root / str(s) / _COMMITTED)]
    return sorted(steps)


def _first_line(exc: BaseException) -> str:
    """The first line of the exception `exc` was raised from (orbax wraps TensorStore's precise one in a vaguer one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    # TensorStore nests its causes as "outer: inner: innermost [tensorstore_spec=...]": the end is the precise part.
    first = (text[0] if text else "").split(" [tensorstore_spec")[0]
    return f"{type(exc).__name__}: {first if len(first) <= 240 else '...' + first[-237:]}"


def has_checkpoint(workdir: str | os.PathLike[str]) -> bool:
    """Whether `workdir` holds at least one complete checkpoint (without creating anything)."""
    return bool(_complete_steps(checkpoints_of(workdir)))


def checkpoints_of(workdir: str | os.PathLike[str]) -> Any:
    """The directory (an epath.Path) of `workdir`'s checkpoints."""
    return storage.path(workdir, "workdir") / "checkpoints"


def newest_step_or_none(directory: Any) -> int | None:
    """The newest complete step under checkpoint `directory`, None when there is none or it cannot be listed.

    For error messages written while the storage itself is failing.
    """
    try:
        steps = _complete_steps(directory)
    except Exception:  # noqa: BLE001 - gcsfs, TensorStore and the OS each raise their own types
        return None
    return steps[-1] if steps else None


def newest_step(workdir: str | os.PathLike[str]) -> int | None:
    """The step of `workdir`'s newest complete checkpoint, read from the disk (None when there is none)."""
    steps = _complete_steps(checkpoints_of(workdir))
    return steps[-1] if steps else None


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} in the workdir, {_short(b)} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def guard(workdir: str | os.PathLike[str], fingerprint: Mapping[str, Any], write: bool) -> None:
    """Refuses a workdir that cannot be reached or whose checkpoints are of a different network or dataset.

    `fingerprint` must be JSON-ready. The first run of a workdir records it (when
    `write`, i.e. on process 0, once the whole run has been validated: see
    `write_fingerprint`); later runs must match it. Raises ValueError with the
    differences (or what makes a gs:// workdir unreachable: effscale.storage.check_reachable) and the fix.
    """
    storage.check_reachable(workdir, "--workdir")
    path = storage.path(workdir, "workdir") / FINGERPRINT
    new = _plain(fingerprint)
    if storage.exists(path):
        old = json.loads(storage.read_bytes(path))
        diffs = _differences(old, new)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            raise ValueError(
                f"Workdir {workdir} holds a run of a different network or dataset ({shown}). "
                "Its checkpoints are kept as they are: choose another --workdir, or delete this one to start over."
            )
        return
    if has_checkpoint(workdir):
        raise ValueError(
            f"Workdir {workdir} holds checkpoints but no {FINGERPRINT}, so what they are of is unknown. "
            "Choose another --workdir, or delete this one to start over."
        )
    if write:
        write_fingerprint(workdir, fingerprint)


def write_fingerprint(workdir: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> None:
    """Records `fingerprint` as what `workdir`'s checkpoints are of, unless it already is (see `guard`)."""
    path = storage.path(workdir, "workdir") / FINGERPRINT
    if not storage.exists(path):
        record.write_json(path, _plain(fingerprint))


def _plain(fingerprint: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(fingerprint))  # tuples -> lists, as they will read back
