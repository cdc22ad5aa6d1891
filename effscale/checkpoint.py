"""Checkpoints of a run directory: orbax's CheckpointManager plus a fingerprint guard.

`<workdir>/checkpoints/<step>/` holds the whole train state (parameters, optimizer
state, EMA weights and BatchNorm statistics, step); the step is also the data
position. Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a process killed mid-save leaves the previous checkpoint intact.

`<workdir>/fingerprint.json` records what the checkpoints are of (the network
description and the dataset). A run whose config describes something else is
refused instead of silently restoring mismatched weights or overwriting them.
All calls must be made on every process (orbax synchronises them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import orbax.checkpoint as ocp

from effscale import record

FINGERPRINT = "fingerprint.json"


class Manager:
    """Periodic, preemption-aware saves and automatic resume of one pytree."""

    def __init__(self, workdir: str, every_steps: int, keep: int, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(1, int(every_steps)),
            max_to_keep=max(1, int(keep)),
            enable_async_checkpointing=asynchronous,
            create=True,
            cleanup_tmp_directories=True,  # what a killed save left behind
        )
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
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

    def should_save(self, step: int) -> bool:
        """Whether `step` is on the save interval (or the cluster signalled preemption)."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any) -> None:
        """Saves `state` as checkpoint `step` (in the background when asynchronous)."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once the cluster signalled preemption."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        """Blocks until a background save has been committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds at least one complete checkpoint (without creating anything)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return False
    return any(name.isdigit() for name in os.listdir(directory))


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


def guard(workdir: str, fingerprint: Mapping[str, Any], write: bool) -> None:
    """Refuses a workdir whose checkpoints are of a different network or dataset.

    `fingerprint` must be JSON-ready. The first run of a workdir records it (when
    `write`, i.e. on process 0); later runs must match it. Raises ValueError with the
    differences and the fix.
    """
    path = os.path.join(workdir, FINGERPRINT)
    new = json.loads(json.dumps(fingerprint))  # tuples -> lists, as they will read back
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
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
        record.write_json(path, new)
