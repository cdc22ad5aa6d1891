"""The results table of a sweep: one row per point, gathered from the point directories.

A point directory (``WORKDIR/<point>/``) holds ``point.json`` (written by the sweep driver
before the run: name, strategy, overrides, the expanded config and its analytic complexity),
``result.json`` (the trainer's `effscale.record.RunRecord`, written when the run finishes) and,
after a failure, ``error.json``. `collect` walks a workdir (recursively, so a folder of several
sweeps works too), turns each point directory into a flat row and `write_table` saves the rows
as CSV and JSONL, each written atomically (a reader never sees half a table).

The result columns are fields of the run record (`RESULT_COLUMNS`); accuracies are fractions.
A result.json that does not parse as a run record makes its point 'damaged': status reports it,
`collect` leaves it out with a warning.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from effscale import record

POINT_FILE = "point.json"
RESULT_FILE = record.RESULT
ERROR_FILE = "error.json"
# Files the driver itself writes; anything else in a point directory is the trainer's progress.
DRIVER_FILES = (POINT_FILE, ERROR_FILE)

STATES = ("done", "damaged", "failed", "partial", "pending")

# Table column -> the run record field it shows.
RESULT_COLUMNS = {
    "params": "params",
    "macs": "macs",
    "activations": "activations",
    "xla_flops": "xla_flops",
    "train_images_per_sec": "train_images_per_sec",
    "train_step_time_s": "step_time_s",
    "top1": "eval_top1",
    "top5": "eval_top5",
    "best_top1": "best_eval_top1",
    "ema_top1": "eval_top1_ema",
    "ema_top5": "eval_top5_ema",
    "wall_time_s": "wall_time_s",
}

# The scale comes from point.json first: it is what the sweep declared, for failed points too.
# Params / MACs / activations come from the record first: the trainer counts them with the
# dataset's real number of classes, which point.json only knows when the config sets it.
_POINT_KEYS = ("width", "depth", "resolution", "phi")
_COUNT_KEYS = ("params", "macs", "activations")

# The table's leading columns, in order; point metadata (e.g. target_macs) follows them.
COLUMNS = (
    "sweep",
    "strategy",
    "series",
    "point",
    "status",
    *_POINT_KEYS,
    *RESULT_COLUMNS,
    "error",
    "overrides",
)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- point state


@dataclasses.dataclass(frozen=True)
class PointFiles:
    """What a point directory holds: its state, and its parsed files (None where absent)."""

    state: str  # one of STATES
    point: Mapping[str, Any] | None
    run: record.RunRecord | None
    error: Mapping[str, Any] | None
    problem: str | None = None  # why result.json is damaged


def read_point(point_dir: str | os.PathLike[str]) -> PointFiles:
    """The state and files of one point directory."""
    d = Path(point_dir)
    point, error = read_json(d / POINT_FILE), read_json(d / ERROR_FILE)
    try:
        run = record.read_record(d / RESULT_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return PointFiles(_unfinished_state(d), point, None, error)
    except (record.RecordError, UnicodeDecodeError) as e:
        return PointFiles("damaged", point, None, error, str(e))
    return PointFiles("done", point, run, error)


def point_state(point_dir: str | os.PathLike[str]) -> str:
    """'done' (a readable result.json), 'damaged' (one that is not), 'failed' (error.json),
    'partial' (trainer files, no result) or 'pending'."""
    return read_point(point_dir).state


def _unfinished_state(d: Path) -> str:
    if (d / ERROR_FILE).is_file():
        return "failed"
    if d.is_dir() and any(p.name not in DRIVER_FILES and not p.name.startswith(".") for p in d.iterdir()):
        return "partial"
    return "pending"


def make_row(
    point: Mapping[str, Any] | None,
    run: record.RunRecord | None,
    error: Mapping[str, Any] | None,
    status: str,
    name: str,
) -> dict[str, Any]:
    """One table row from a point's point.json, run record and error.json (any may be None)."""
    point = point or {}
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        sweep=point.get("sweep"),
        strategy=point.get("strategy"),
        series=point.get("series") or point.get("strategy"),
        point=point.get("name") or name,
        status=status,
        overrides=json.dumps(point["overrides"], sort_keys=True) if point.get("overrides") is not None else None,
    )
    described = point.get("describe") or {}
    for col in _POINT_KEYS + _COUNT_KEYS:
        row[col] = described.get(col)
    if run is not None:
        for col in _POINT_KEYS:
            if row[col] is None:
                row[col] = getattr(run, col)
        for col, field in RESULT_COLUMNS.items():
            value = getattr(run, field)
            if value is not None:
                row[col] = value
        if row["strategy"] is None:
            row["strategy"] = row["series"] = "run"  # a plain run, not started by a sweep
    if error and status == "failed":
        row["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    for key, value in (point.get("meta") or {}).items():
        row.setdefault(key, value)
    return row


def point_row(point_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The table row of one point directory (a damaged one's row has its problem as the error)."""
    d = Path(point_dir)
    files = read_point(d)
    row = make_row(files.point, files.run, files.error, files.state, d.name)
    if files.problem:
        row["error"] = files.problem
    return row


def find_point_dirs(workdir: str | os.PathLike[str]) -> list[Path]:
    """Every directory under `workdir` with a point.json or result.json (not descending into them)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(workdir):
        if POINT_FILE in files or RESULT_FILE in files:
            found.append(Path(root))
            dirs[:] = []  # checkpoints and logs below a point are not points
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def collect(workdir: str | os.PathLike[str], pending: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rows for every point directory under `workdir`; damaged points are left out with a warning.

    `pending`: point.json-like dicts of declared points (see `sweep.describe_point`); those
    without a directory yet are added as 'pending' rows, so the table lists the whole sweep.
    """
    rows, seen = [], set()
    for d in find_point_dirs(workdir):
        row = point_row(d)
        seen.add((row["sweep"], row["point"]))
        if row["status"] == "damaged":
            warnings.warn(f"effscale: left out of the table: {row['error']}", stacklevel=2)
        else:
            rows.append(row)
    for p in pending:
        if (p.get("sweep"), p.get("name")) not in seen:
            rows.append(make_row(p, None, None, "pending", p["name"]))
    return rows


# ----------------------------------------------------------------------------- table files


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """COLUMNS, then any extra keys in first-seen order."""
    cols = list(COLUMNS)
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV text (empty cells for None)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=table_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as JSON lines."""
    return "".join(json.dumps(dict(row), sort_keys=False, default=record.json_default) + "\n" for row in rows)


def write_table(rows: Sequence[Mapping[str, Any]], stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Writes `stem`.csv and `stem`.jsonl atomically; returns their paths."""
    stem = Path(stem)
    csv_path, jsonl_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".jsonl")
    record.write_text(csv_path, to_csv(rows))
    record.write_text(jsonl_path, to_jsonl(rows))
    return csv_path, jsonl_path


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return None if isinstance(value, float) and math.isnan(value) else value
    if text in ("True", "False"):
        return text == "True"
    return text


def read_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a results table (.csv or .jsonl), numbers parsed, empty cells as None.

    A directory is collected on the fly (any sweep workdir, or a folder of them).
    """
    path = Path(path)
    if path.is_dir():
        return collect(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
