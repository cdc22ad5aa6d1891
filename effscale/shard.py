"""The --sweep_shard value: which share of a sweep's points this process runs.

Three forms:

- ``i/n``: shard i of n, typed by hand (0 <= i < n); point k of the declared order is shard k % n.
- ``auto``: i and n read from the scheduler that started this process (`from_environment`):
  a SLURM array, a Kubernetes Indexed Job, or ``EFFSCALE_SHARD=i/n``. Not TPU_WORKER_ID: it numbers
  the hosts of one TPU slice, which run one shard together as one multi-host job; the TPU launcher
  (effscale.launchers.tpu) gives each slice its shard explicitly.
- ``claim``: no fixed share; workers take the next unclaimed point (effscale.claims).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
AUTO, CLAIM = "auto", "claim"
# Kubernetes does not export an Indexed Job's completion count: the manifest effscale writes sets it.
NUM_SHARDS_ENV = "EFFSCALE_NUM_SHARDS"
SHARD_ENV = "EFFSCALE_SHARD"
_LOOKED_FOR = (
    "SLURM_ARRAY_TASK_ID (+ SLURM_ARRAY_TASK_COUNT or _MAX, _MIN, _STEP), "
    f"JOB_COMPLETION_INDEX + {NUM_SHARDS_ENV} (Kubernetes Indexed Job), {SHARD_ENV}=i/n"
)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n; None or '' -> (0, 1), the whole sweep. Anything else is a ValueError."""
    if not text:
        return 0, 1
    m = _SHARD.fullmatch(text)
    if not m:
        raise ValueError(
            f"--sweep_shard={text}: must be i/n, two whole numbers with 0 <= i < n (e.g. 2/8: shard 2 of 8), "
            f"'{AUTO}' (from the scheduler's environment) or '{CLAIM}' (take points as they come)."
        )
    i, n = int(m.group(1)), int(m.group(2))
    if not 0 <= i < n:
        raise ValueError(
            f"--sweep_shard={text}: shard i of n needs 0 <= i < n (shards are numbered from 0, so 0/{max(n, 1)} "
            f"to {max(n, 1) - 1}/{max(n, 1)})."
        )
    return i, n


def resolve_shard(text: str | None, environ: Mapping[str, str]) -> tuple[int, int]:
    """(i, n) for --sweep_shard `text`: 'i/n' as typed, 'auto' from `environ`, None or '' the whole sweep.

    'claim' has no share: the caller checks ``text == CLAIM`` first (sweep.main does); here it is a ValueError.
    """
    if text == CLAIM:
        raise ValueError(f"--sweep_shard={CLAIM} has no fixed share: its worker claims points one at a time.")
    if text == AUTO:
        return from_environment(environ)
    return parse_shard(text)


def from_environment(environ: Mapping[str, str]) -> tuple[int, int]:
    """This task's (i, n) from the scheduler's variables, in the order of `_LOOKED_FOR`."""
    if "SLURM_ARRAY_TASK_ID" in environ:
        return _slurm_array(environ)
    if "JOB_COMPLETION_INDEX" in environ:
        count = _integer(environ, NUM_SHARDS_ENV, "the number of shards, set beside JOB_COMPLETION_INDEX")
        return _checked(_integer(environ, "JOB_COMPLETION_INDEX", "this task's index"), count, "JOB_COMPLETION_INDEX")
    if SHARD_ENV in environ:
        try:
            return parse_shard(environ[SHARD_ENV])
        except ValueError:
            raise ValueError(f"{SHARD_ENV}={environ[SHARD_ENV]!r}: must be i/n with 0 <= i < n.") from None
    raise ValueError(
        f"--sweep_shard={AUTO} found no shard in the environment; it looks for {_LOOKED_FOR}. Run it as a task of "
        f"the job --mode=launch prints, set {SHARD_ENV}=i/n, or give --sweep_shard=i/n."
    )


def _slurm_array(environ: Mapping[str, str]) -> tuple[int, int]:
    """A SLURM array task: arrays may start at any minimum and step (--array=1-15:2)."""
    task = _integer(environ, "SLURM_ARRAY_TASK_ID", "this array task's id")
    low = _integer(environ, "SLURM_ARRAY_TASK_MIN", "the array's first id") if "SLURM_ARRAY_TASK_MIN" in environ else 0
    step = _integer(environ, "SLURM_ARRAY_TASK_STEP", "the array's step") if "SLURM_ARRAY_TASK_STEP" in environ else 1
    if step < 1 or (task - low) % step:
        raise ValueError(f"SLURM_ARRAY_TASK_ID={task} is not on the array {low}:{step} (SLURM_ARRAY_TASK_MIN:_STEP).")
    if "SLURM_ARRAY_TASK_COUNT" in environ:
        count = _integer(environ, "SLURM_ARRAY_TASK_COUNT", "the number of array tasks")
    elif "SLURM_ARRAY_TASK_MAX" in environ:
        count = (_integer(environ, "SLURM_ARRAY_TASK_MAX", "the array's last id") - low) // step + 1
    else:
        raise ValueError(
            "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX: the shard count is unknown."
        )
    return _checked((task - low) // step, count, "SLURM_ARRAY_TASK_ID")


def _integer(environ: Mapping[str, str], name: str, what: str) -> int:
    value = environ.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        raise ValueError(f"{name}={value!r}: expected a whole number, {what}.")
    return int(value)


def _checked(index: int, count: int, source: str) -> tuple[int, int]:
    if not 0 <= index < count:
        raise ValueError(f"{source} gives shard {index} of {count}: needs 0 <= index < count.")
    return index, count
