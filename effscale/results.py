"""The results table of a sweep: one row per point, gathered from the point directories.

A point directory (``WORKDIR/<point>/``) holds ``point.json`` (written by the sweep driver
before the run: name, strategy, overrides, the expanded config and its analytic complexity),
``result.json`` (written by the trainer when the run finishes) and, after a failure,
``error.json``. `collect` walks a workdir (recursively, so a folder of several sweeps works
too), turns each point directory into a flat row and `write_table` saves the rows as CSV and
JSONL, each written atomically (a reader never sees half a table).

Keys read from the trainer's ``result.json`` (effscale.train's names first; nested dicts are
flattened with dots and the first key present wins, so a few other spellings work too):

    eval_top1 / eval_top5                 final evaluation (fractions in [0, 1])
    eval_top1_ema / eval_top5_ema         final evaluation of the weights' moving average
    best_eval_top1 (/ best_eval_top5)     best evaluation over the run (effscale.train: raw or EMA)
    train_images_per_sec, step_time_s, wall_time_s
    params / macs / activations / xla_flops   (before a result: point.json's analytic counts)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from effscale import record

POINT_FILE = "point.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
# Files the driver itself writes; anything else in a point directory is the trainer's progress.
DRIVER_FILES = (POINT_FILE, ERROR_FILE)

STATES = ("done", "failed", "partial", "pending")

# The table's leading columns, in order; point metadata (e.g. target_macs) follows them.
COLUMNS = (
    "sweep",
    "strategy",
    "series",
    "point",
    "status",
    "width",
    "depth",
    "resolution",
    "phi",
    "params",
    "macs",
    "activations",
    "xla_flops",
    "train_images_per_sec",
    "train_step_time_s",
    "top1",
    "top5",
    "best_top1",
    "best_top5",
    "ema_top1",
    "ema_top5",
    "wall_time_s",
    "error",
    "overrides",
)

# Column -> candidate keys in the flattened result.json, first present wins.
_RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "top1": ("eval_top1", "eval.top1", "final.top1", "eval_top1", "final_top1", "top1"),
    "top5": ("eval_top5", "eval.top5", "final.top5", "eval_top5", "final_top5", "top5"),
    "best_top1": ("best_eval_top1", "eval.best_top1", "best.top1", "best_eval.top1", "best_top1"),
    "best_top5": ("best_eval_top5", "eval.best_top5", "best.top5", "best_eval.top5", "best_top5"),
    "ema_top1": ("eval_top1_ema", "eval.ema_top1", "ema.top1", "eval_ema.top1", "ema_eval.top1", "ema_top1"),
    "ema_top5": ("eval_top5_ema", "eval.ema_top5", "ema.top5", "eval_ema.top5", "ema_eval.top5", "ema_top5"),
    "train_images_per_sec": (
        "train.images_per_sec",
        "train.images_per_second",
        "train_images_per_sec",
        "images_per_sec",
    ),
    "train_step_time_s": ("train.step_time_s", "train.step_time", "train_step_time_s", "step_time_s"),
    "wall_time_s": ("wall_time_s", "train.wall_time_s", "time.wall_s", "wall_time"),
    "params": ("complexity.params", "params"),
    "macs": ("complexity.macs", "macs"),
    "activations": ("complexity.activations", "activations"),
    "xla_flops": ("complexity.xla_flops", "xla_flops"),
}

# The scale comes from point.json first: it is what the sweep declared, for failed points too.
# Params / MACs / activations come from result.json first: the trainer counts them with the
# dataset's real number of classes, which point.json only knows when the config sets it.
_POINT_KEYS = ("width", "depth", "resolution", "phi")
_COUNT_KEYS = ("params", "macs", "activations")


# ----------------------------------------------------------------------------- atomic files


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- point state


def point_state(point_dir: str | os.PathLike[str]) -> str:
    """'done' (result.json), 'failed' (error.json), 'partial' (trainer files, no result) or 'pending'."""
    d = Path(point_dir)
    if (d / RESULT_FILE).is_file():
        return "done"
    if (d / ERROR_FILE).is_file():
        return "failed"
    if d.is_dir() and any(p.name not in DRIVER_FILES and not p.name.startswith(".") for p in d.iterdir()):
        return "partial"
    return "pending"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _first(flat: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = flat.get(key)
        if value is not None:
            return value
    return None


def make_row(
    point: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    error: Mapping[str, Any] | None,
    status: str,
    name: str,
) -> dict[str, Any]:
    """One table row from the parsed point.json, result.json and error.json of a point (any may be None)."""
    point = point or {}
    flat = flatten(result) if result else {}
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
    for col, keys in _RESULT_KEYS.items():
        value = _first(flat, keys)
        if value is not None and (row.get(col) is None or col not in _POINT_KEYS):
            row[col] = value
    if row["strategy"] is None and flat:
        row["strategy"] = row["series"] = "run"  # a plain run, not started by a sweep
    if error and status == "failed":
        row["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    for key, value in (point.get("meta") or {}).items():
        row.setdefault(key, value)
    return row


def point_row(point_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The table row of one point directory."""
    d = Path(point_dir)
    return make_row(
        read_json(d / POINT_FILE),
        read_json(d / RESULT_FILE),
        read_json(d / ERROR_FILE),
        point_state(d),
        d.name,
    )


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
    """Rows for every point directory under `workdir`.

    `pending`: point.json-like dicts of declared points (see `sweep.describe_point`); those
    without a directory yet are added as 'pending' rows, so the table lists the whole sweep.
    """
    rows = [point_row(d) for d in find_point_dirs(workdir)]
    seen = {(r["sweep"], r["point"]) for r in rows}
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


def done(rows: Iterable[Mapping[str, Any]], metric: str = "top1") -> list[Mapping[str, Any]]:
    """Finished rows that have `metric` and MACs: what the figures draw."""
    return [r for r in rows if r.get("status") == "done" and r.get(metric) is not None and r.get("macs")]
