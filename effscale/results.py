"""The results table of a sweep: one row per point, gathered from the point directories.

A point directory (``WORKDIR/<point>/``) holds ``point.json`` (written by the sweep driver
before the run: name, strategy, overrides, the expanded config and its analytic complexity),
``result.json`` (the trainer's `effscale.record.RunRecord`, written when the run finishes) and,
after a failure, ``error.json``. `collect` walks a workdir (recursively, so a folder of several
sweeps works too), turns each point directory into a flat row and `write_table` saves the rows
as CSV and JSONL, each written atomically (a reader never sees half a table).

The result columns are fields of the run record (`RESULT_COLUMNS`, read with .get so that older
records stay readable); accuracies are fractions. Peak memory: the device's (`peak_memory_bytes`, also
read under jax's own name) and the host process's (`peak_host_memory_bytes`, what a CPU run has).
`seed` is the seed the run recorded in its config, `network` what was trained regardless of the
seed (a sweep with seeds=N names its runs <network>_s<seed>, seed 0 keeping the plain name).
`group` summarises each network over its finished runs (mean, std, n and the 95% t interval of the
mean per metric) and `write_grouped` saves that as results_grouped.csv.

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
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from effscale import record, stats, storage

POINT_FILE = "point.json"
RESULT_FILE = record.RESULT
ERROR_FILE = "error.json"
CLAIM_FILE = "claim.lease"  # a worker's claim on the point (effscale.claims)
# Files the driver itself writes; anything else in a point directory is the trainer's progress.
DRIVER_FILES = (POINT_FILE, ERROR_FILE, CLAIM_FILE)

STATES = ("done", "damaged", "failed", "partial", "pending")

# Table column -> the run record field it shows (read with .get: records older than a field lack it).
RESULT_COLUMNS = {
    "dataset": "dataset",
    "params": "params",
    "macs": "macs",
    "activations": "activations",
    "xla_flops": "xla_flops",
    "epochs": "epochs",
    "steps": "steps",
    "batch_size": "batch_size",
    "steps_per_epoch": "steps_per_epoch",
    "train_images_per_sec": "train_images_per_sec",
    "train_step_time_s": "step_time_s",
    "train_loss": "train_loss",
    "train_accuracy": "train_accuracy",
    "top1": "eval_top1",
    "top5": "eval_top5",
    "best_top1": "best_eval_top1",
    "ema_top1": "eval_top1_ema",
    "ema_top5": "eval_top5_ema",
    "val_top1": "val_top1",
    "val_top1_ema": "val_top1_ema",
    "test_top1": "test_top1",
    "test_top1_ema": "test_top1_ema",
    "test_top1_best": "test_top1_best",
    "wall_time_s": "wall_time_s",
    "compile_time_s": "compile_time_s",
    "compile_cache_hits": "compile_cache_hits",
    "input_wait_fraction": "input_wait_fraction",
    "device_kind": "device_kind",
    "device_count": "device_count",
}
# Peak device memory: a RunRecord field, read from result.json as written so that records which carry it
# under jax Device.memory_stats()'s name count too. The host's peak is a plain field.
PEAK_MEMORY = "peak_memory_bytes"
PEAK_MEMORY_KEYS = (PEAK_MEMORY, "peak_bytes_in_use")
PEAK_HOST_MEMORY = "peak_host_memory_bytes"
# What JAX's persistent compilation cache saved a run: its network's cold compile (median over the runs the
# cache did not serve) minus the run's own; None where the cache served nothing or no run compiled cold.
COMPILE_SAVED = "compile_saved_s"

# The scale comes from point.json first: it is what the sweep declared, for failed points too.
# Params / MACs / activations come from the record first: the trainer counts them with the
# dataset's real number of classes, which point.json only knows when the config sets it.
_POINT_KEYS = ("width", "depth", "resolution", "phi")
_COUNT_KEYS = ("params", "macs", "activations")

# The table's leading columns, in order; point metadata (e.g. target_macs) follows them. `network` names
# what was trained regardless of its seed: the runs of one network over several seeds share it.
COLUMNS = (
    "sweep",
    "strategy",
    "series",
    "network",
    "point",
    "seed",
    "status",
    *_POINT_KEYS,
    *RESULT_COLUMNS,
    PEAK_MEMORY,
    PEAK_HOST_MEMORY,
    COMPILE_SAVED,
    "error",
    "overrides",
)

# The grouped table: the metrics summarised over a network's runs (mean, std, n, 95% interval).
GROUP_METRICS = (
    "top1",
    "top5",
    "best_top1",
    "ema_top1",
    "ema_top5",
    "val_top1",
    "val_top1_ema",
    "test_top1",
    "test_top1_ema",
    "test_top1_best",
    "train_loss",
    "train_accuracy",
    "train_images_per_sec",
    "train_step_time_s",
    "wall_time_s",
    "compile_time_s",
    COMPILE_SAVED,
    "input_wait_fraction",
    PEAK_MEMORY,
    PEAK_HOST_MEMORY,
)
# Columns a network's runs share (taken from its first run).
_GROUP_KEYS = ("sweep", "strategy", "series", "network", "dataset", *_POINT_KEYS, *_COUNT_KEYS, "epochs")


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(storage.read_bytes(path))
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
    d = storage.path(point_dir)
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
    if storage.exists(d / ERROR_FILE):
        return "failed"
    if any(name not in DRIVER_FILES and not name.startswith(".") for name in storage.listdir(d)):
        return "partial"
    return "pending"


def make_row(
    point: Mapping[str, Any] | None,
    run: record.RunRecord | None,
    error: Mapping[str, Any] | None,
    status: str,
    name: str,
    written: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One table row from a point's point.json, run record and error.json (any may be None).

    `written`: result.json as written, for what a record may carry beyond RunRecord's fields (peak memory).
    """
    point = point or {}
    meta = point.get("meta") or {}
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        sweep=point.get("sweep"),
        strategy=point.get("strategy"),
        series=point.get("series") or point.get("strategy"),
        point=point.get("name") or name,
        status=status,
        overrides=json.dumps(point["overrides"], sort_keys=True) if point.get("overrides") is not None else None,
    )
    row["network"] = meta.get("network") or row["point"]
    described = point.get("describe") or {}
    for col in _POINT_KEYS + _COUNT_KEYS:
        row[col] = described.get(col)
    values = run.to_json() if run is not None else {}
    if run is not None:
        for col in _POINT_KEYS:
            if row[col] is None:
                row[col] = values.get(col)
        for col, field in RESULT_COLUMNS.items():
            if values.get(field) is not None:
                row[col] = values[field]
        if row["strategy"] is None:
            row["strategy"] = row["series"] = "run"  # a plain run, not started by a sweep
    row["seed"] = _seed(values.get("config"), point.get("config"), meta)
    row[PEAK_MEMORY] = next((written[k] for k in PEAK_MEMORY_KEYS if (written or {}).get(k) is not None), None)
    row[PEAK_HOST_MEMORY] = values.get(PEAK_HOST_MEMORY)
    if error and status == "failed":
        row["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    for key, value in meta.items():
        row.setdefault(key, value)
    return row


def _seed(*sources: Any) -> int | None:
    """The training seed: what the run recorded, else what point.json's config or labels declare."""
    for source in sources:
        if not isinstance(source, Mapping):
            continue
        seed = source.get("seed") if "seed" in source else (source.get("train") or {}).get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    return None


def point_row(point_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The table row of one point directory (a damaged one's row has its problem as the error)."""
    d = storage.path(point_dir)
    files = read_point(d)
    written = read_json(d / RESULT_FILE) if files.run is not None else None
    row = make_row(
        files.point, files.run, files.error, files.state, d.name, written if isinstance(written, dict) else None
    )
    if files.problem:
        row["error"] = files.problem
    return row


def find_point_dirs(workdir: str | os.PathLike[str]) -> list[Path]:
    """Every directory under `workdir` with a point.json or result.json (not descending into them)."""
    root = storage.path(workdir)
    names = storage.listdir(root)
    if POINT_FILE in names or RESULT_FILE in names:
        return [root]  # checkpoints and logs below a point are not points
    return sorted(d for name in names if not name.startswith(".") for d in find_point_dirs(root / name))


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
    return with_compile_savings(rows)


def with_compile_savings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sets each finished run's `compile_saved_s` (COMPILE_SAVED) from the runs of its network; returns `rows`."""
    for runs in by_network([r for r in rows if r.get("status") == "done"]).values():
        times = [(r.get("compile_cache_hits"), _number(r.get("compile_time_s"))) for r in runs]
        cold = [t for hits, t in times if hits == 0 and t is not None]
        for r in runs:
            own, served = _number(r.get("compile_time_s")), r.get("compile_cache_hits")
            r[COMPILE_SAVED] = statistics.median(cold) - own if cold and own is not None and served else None
    return rows


# ----------------------------------------------------------------------------- repeats


def accuracy_key(rows: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy column to compare: EMA top-1 when every finished row has it, else final top-1."""
    done = [r for r in rows if r.get("status") == "done"]
    if done and all(_number(r.get("ema_top1")) is not None for r in done):
        return "ema_top1"
    return "top1"


T = TypeVar("T")

# Validation columns that may choose among networks in place of an accuracy column, best first.
SELECTION_KEYS = {"ema_top1": ("val_top1_ema", "val_top1"), "top1": ("val_top1",)}


def selection_key(rows: Sequence[Mapping[str, Any]], key: str) -> str | None:
    """The column that chooses among networks compared on `key`: validation top-1 (of the EMA weights
    when `key` is) when every finished row has it, so that a choice never reads the test split;
    None for records from before the validation split."""
    done = [r for r in rows if r.get("status") == "done"]
    usable = [k for k in SELECTION_KEYS.get(key, ()) if done and all(_number(r.get(k)) is not None for r in done)]
    return usable[0] if usable else None


ARCHITECTURE = ("width", "resolution", "macs", "params", "activations")


def architecture(row: Mapping[str, Any]) -> tuple[float, ...] | None:
    """What makes two points the same network whatever their nominal multipliers (rounding can map
    two depth multipliers to the same repeats): width, resolution, MACs, parameters and activations;
    None when a row lacks one."""
    values = tuple(_number(row.get(k)) for k in ARCHITECTURE)
    return None if None in values else values  # type: ignore[return-value]


def identical_groups(items: Sequence[T], row_of: Callable[[T], Mapping[str, Any]]) -> list[list[T]]:
    """`items` grouped by the network their rows describe (`architecture`), in the order the groups first
    appear; an item whose row lacks a count of `ARCHITECTURE` stands alone."""
    groups: dict[Any, list[T]] = {}
    for k, item in enumerate(items):
        groups.setdefault(architecture(row_of(item)) or k, []).append(item)
    return list(groups.values())


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def network_key(row: Mapping[str, Any], index: int = 0) -> tuple[Any, ...]:
    """What identifies a network across its seeds: (sweep, network); a row without a name is its own."""
    name = row.get("network") or row.get("point")
    return (row.get("sweep"), name) if name is not None else ("", index)


def by_network(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """Rows grouped by `network_key`, in first-seen order."""
    out: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for k, r in enumerate(rows):
        out.setdefault(network_key(r, k), []).append(r)
    return out


def group(rows: Sequence[Mapping[str, Any]], level: float = stats.LEVEL) -> list[dict[str, Any]]:
    """One row per network over its finished runs: for each metric <m>_mean, _std, _n, _ci_lo, _ci_hi.

    The interval is the t interval of the mean at `level` (two-sided): it needs n >= 2, so a
    network with one run has mean and n only. Metrics no run has are left out; columns the runs
    share (scale, counts, point labels such as target_macs) come from the first run.
    """
    done = [r for r in rows if r.get("status") == "done"]
    present = [m for m in GROUP_METRICS if any(_number(r.get(m)) is not None for r in done)]
    out = []
    for runs in by_network(done).values():
        first = runs[0]
        g: dict[str, Any] = {k: first.get(k) for k in _GROUP_KEYS}
        g["runs"] = len(runs)
        g["seeds"] = "/".join(
            str(r.get("seed")) for r in sorted(runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
        )
        g["points"] = " ".join(str(r.get("point")) for r in runs)
        for m in present:
            summary = stats.summarize([r.get(m) for r in runs], level)
            g.update({f"{m}_mean": summary.mean, f"{m}_std": summary.std, f"{m}_n": summary.n})
            g.update({f"{m}_ci_lo": summary.lo, f"{m}_ci_hi": summary.hi})
        extra = [k for k in first if k not in COLUMNS and k not in g]
        g.update({k: first.get(k) for k in extra if k not in ("seed", "point", "status", "error", "overrides")})
        out.append(g)
    return out


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
    stem = storage.path(stem)
    csv_path, jsonl_path = stem.parent / (stem.name + ".csv"), stem.parent / (stem.name + ".jsonl")
    record.write_text(csv_path, to_csv(rows))
    record.write_text(jsonl_path, to_jsonl(rows))
    return csv_path, jsonl_path


def write_grouped(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Writes the grouped table of `rows` (see `group`) as CSV at `path` atomically; returns the path."""
    grouped = group(rows)
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for g in grouped for k in g)) or list(_GROUP_KEYS)
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for g in grouped:
        writer.writerow({k: "" if v is None else v for k, v in g.items()})
    record.write_text(path, buf.getvalue())
    return storage.path(path)


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
    path = storage.path(path)
    if storage.is_dir(path):
        return collect(path)
    text = storage.read_bytes(path).decode("utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
