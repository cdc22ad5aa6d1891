"""Sweeps: a config's named points, run one after another or a share at a time.

A sweep config is an ordinary training config plus a ``sweep`` block::

    config.sweep.name = 'width'
    config.sweep.points = (
        {'name': 'width-1.5', 'strategy': 'width', 'series': 'width', 'meta': {},
         'overrides': {'model.width': 1.5}},
        ...
    )

built with `point(...)` and `block(...)` (see configs/sweeps/). Each point is the base config
with its overrides applied (dotted paths; an unknown path is an error), trained in
``WORKDIR/<point-name>/``. ``--config.x=y`` on the command line changes the base, so it applies
to every point; a point's own override of the same field wins.

A user-defined grid is a list of `point(...)` dicts::

    c = configs.sweeps.base.get_config('dataset=fashion_mnist')
    c.sweep = sweep.block('my_grid', [
        sweep.point(f'w{w}-r{r}', 'width', {'model.width': w, 'model.resolution': r}, series=f'r={r}')
        for w in (1.0, 1.5) for r in (32, 48)])

Lifecycle (what `main` does per mode):

- train: run the points of this process' share in declared order. A point with result.json is
  skipped (a damaged one too, with a warning: remove it to rerun); any other is (re)started: the
  trainer resumes from the checkpoints in its directory. A failure is recorded in
  ``<point>/error.json`` (traceback, attempt count) and the sweep goes on; the next run retries it
  and removes error.json once it succeeds. The driver writes only point.json and error.json
  (atomically) and the trainer writes result.json atomically, so a driver killed at any moment
  loses at most the unfinished part of the current point.
- Sharding: ``--sweep_shard=i/n`` (0 <= i < n) takes the points k with k % n == i over the
  declared order: disjoint and complete for every n, and cost-balanced when points are listed
  by size. In a multi-host job every process runs every point of its share together (one run
  spans all hosts); only process 0 writes the driver's files. ``--sweep_shard=auto`` reads i and n
  from the scheduler (a SLURM array, a Kubernetes Indexed Job: effscale.shard);
  ``--sweep_shard=claim`` has each worker claim the next free point instead (effscale.claims).
- status: every declared point as done / damaged / failed / partial / pending with top-1 and MACs, and
  once 3 points have finished, the predicted training time of the others (effscale.costmodel).
- collect: the results table (WORKDIR/results.csv and .jsonl) and the table of networks over their
  seeds (WORKDIR/results_grouped.csv: mean, std, n, 95% interval), see effscale.results.
- plot: the figures in WORKDIR/figures, see effscale.plots.
- report: WORKDIR/report.md, a verdict on each of the paper's claims with the numbers behind
  it, see effscale.report. WORKDIR may be a folder holding several sweeps' workdirs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from effscale import record as run_record
from effscale import results, storage
from effscale.results import ERROR_FILE, POINT_FILE, RESULT_FILE
from effscale.shard import CLAIM, resolve_shard
from effscale.units import si

# Point names become directory names: keep them portable.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")

RunFn = Callable[[ml_collections.ConfigDict, str], run_record.RunRecord | None]


@dataclasses.dataclass(frozen=True)
class Point:
    """One named point of a sweep: config overrides plus labels for the results table.

    `strategy` is the scaling rule (width / depth / resolution / compound / ...); `series` is
    the line it belongs to in the figures (default: the strategy); `meta` holds extra columns
    for the table, e.g. {'target_macs': 3.4e7}.
    """

    name: str
    strategy: str
    overrides: Mapping[str, Any]
    series: str = ""
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form (what a config stores and point.json records)."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "series": self.series or self.strategy,
            "overrides": dict(self.overrides),
            "meta": dict(self.meta),
        }


def point(
    name: str,
    strategy: str,
    overrides: Mapping[str, Any],
    series: str | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """A sweep point as plain data, for config files. Extra keywords become table columns."""
    return Point(name, strategy, dict(overrides), series or strategy, meta).as_dict()


def block(name: str, points: Iterable[Mapping[str, Any]]) -> ml_collections.ConfigDict:
    """The ``config.sweep`` block for `points` (checked: names valid and unique)."""
    pts = tuple(_to_point(p).as_dict() for p in points)
    check_names([p["name"] for p in pts])
    return ml_collections.ConfigDict({"name": name, "points": pts})


def check_names(names: Sequence[str]) -> None:
    """Raises ValueError on an empty, non-portable or repeated point name."""
    if not names:
        raise ValueError("A sweep needs at least one point.")
    seen: set[str] = set()
    for n in names:
        if not _NAME_RE.match(n):
            raise ValueError(f"Point name {n!r} must match {_NAME_RE.pattern} (it names a directory).")
        if n in seen:
            raise ValueError(f"Point name {n!r} appears twice in the sweep.")
        seen.add(n)


def _to_point(p: Mapping[str, Any] | Point) -> Point:
    if isinstance(p, Point):
        return p
    return Point(
        name=str(p["name"]),
        strategy=str(p["strategy"]),
        overrides=dict(p.get("overrides") or {}),
        series=str(p.get("series") or p["strategy"]),
        meta=dict(p.get("meta") or {}),
    )


def is_sweep(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` carries a sweep block (launch.py dispatches on this)."""
    return "sweep" in config and config.sweep is not None


def sweep_name(config: ml_collections.ConfigDict) -> str:
    """The sweep's name (from its block)."""
    return str(config.sweep.get("name") or "sweep")


def points_of(config: ml_collections.ConfigDict) -> list[Point]:
    """The declared points of a sweep config, in order."""
    pts = [_to_point(p) for p in config.sweep.points]
    check_names([p.name for p in pts])
    return pts


def base_of(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` without its sweep block: the training config every point starts from."""
    base = copy.deepcopy(config)
    with base.unlocked():
        if "sweep" in base:
            del base["sweep"]
    return base


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted-path `overrides` set. Unknown paths raise KeyError.

    Only existing fields may be set (as with ``--config.x=y``), so a typo in a sweep fails at
    expansion instead of training the wrong model.
    """
    out = copy.deepcopy(config)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = out
        for i, part in enumerate(parents):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise KeyError(f"Sweep override {path!r}: the config has no field {'.'.join(parents[: i + 1])!r}.")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
            raise KeyError(f"Sweep override {path!r}: no such config field (known here: {known}).")
        try:
            node[leaf] = value
        except TypeError as e:
            raise TypeError(f"Sweep override {path!r}={value!r}: {e}") from e
    return out


def expand(config: ml_collections.ConfigDict) -> list[tuple[Point, ml_collections.ConfigDict]]:
    """Every point of a sweep config with its full training config, in declared order."""
    base = base_of(config)
    return [(p, apply_overrides(base, p.overrides)) for p in points_of(config)]


# ----------------------------------------------------------------------------- sharding


def shard_of(index: int, num_shards: int) -> int:
    """The shard that runs the point at `index` of the declared order: round robin."""
    return index % num_shards


def share(items: Sequence[Any], shard: int, num_shards: int) -> list[Any]:
    """The items of shard `shard` out of `num_shards` (disjoint and complete over all shards)."""
    return [x for k, x in enumerate(items) if shard_of(k, num_shards) == shard]


# ----------------------------------------------------------------------------- point records


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`config` as JSON-ready plain data."""
    return json.loads(json.dumps(config.to_dict(), default=run_record.json_default))


def describe_model(model_config: Any) -> dict[str, Any]:
    """Resolved scale and analytic complexity of a model config; {'error': ...} if it does not build."""
    from effscale import complexity, spec

    try:
        net = spec.build(model_config)
    except (ValueError, TypeError, KeyError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    report = complexity.analyse(net)
    return {
        "width": net.width,
        "depth": net.depth,
        "resolution": net.resolution,
        "phi": net.phi,
        "params": report.params,
        "macs": report.macs,
        "activations": report.activations,
        "num_blocks": len(net.blocks),
    }


def describe_point(sweep: str, p: Point, config: ml_collections.ConfigDict, index: int) -> dict[str, Any]:
    """What point.json records: labels, overrides, the full config and its analytic complexity."""
    return {
        "sweep": sweep,
        "index": index,
        **p.as_dict(),
        "describe": describe_model(config.model),
        "config": config_json(config),
    }


# ----------------------------------------------------------------------------- the driver


def _identity(flag: bool) -> bool:
    return flag


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    run_fn: RunFn,
    shard: tuple[int, int] = (0, 1),
    is_main: bool = True,
    agree: Callable[[bool], bool] = _identity,
    log: Callable[[str], None] = print,
    stop_on: tuple[type[BaseException], ...] = (),
    claim: bool = False,
    ttl_s: float | None = None,
    stop_requested: Callable[[], int | None] = lambda: None,
) -> dict[str, str]:
    """Runs this shard's points of a sweep one after another; returns {name: outcome}.

    Outcomes: 'skipped' (a sound result.json existed; a damaged one is moved aside and the point
    rerun), 'done' (ran now), 'failed' (error recorded, the sweep went on) or 'held' (another
    process's trainer holds the point's writer.lease: it is training it now).
    `claim=True` ignores `shard` and takes points one at a time by claim file instead, until every
    point is finished or failed in this round (effscale.claims; `ttl_s` is the claims' lease TTL,
    default EFFSCALE_LEASE_TTL or 120 s). `run_fn(config, point_dir)` trains one point; it must write
    result.json atomically at its end (if it only returns a RunRecord, the driver writes it) and
    resume from what it finds in point_dir. `agree(flag)` makes every process take process
    0's decision in a multi-host job (all processes must skip or run a point together).
    KeyboardInterrupt, SystemExit and `stop_on` (the trainer's "stopped by a signal or
    preemption, checkpoint saved") are not recorded as failures: they end the sweep, and the
    next run resumes that point. `stop_requested()` is the signal of a stop request the running point
    could not take (it came as the point finished) or that came between points (the claim scan's
    waits included): the sweep then ends with SweepStopped before its next point.
    """
    workdir = storage.path(workdir, "--workdir")
    name, expanded = sweep_name(config), expand(config)
    index = {p.name: k for k, (p, _) in enumerate(expanded)}

    def check_stop() -> None:
        signum = stop_requested()
        if signum is not None:
            from effscale.training.errors import SweepStopped

            log(f"sweep {name}: stop requested; the points left run on the next call")
            raise SweepStopped(signum, os.fspath(workdir))

    if claim:
        from effscale import claims

        log(f"sweep {name}: claiming its {len(expanded)} points one at a time, workdir {workdir}")
        todo = claims.claimed(
            expanded,
            lambda item: workdir / item[0].name,
            lambda pdir: _finished(pdir, is_main, log),
            ttl_s=ttl_s,
            is_main=is_main,
            agree=agree,
            log=log,
            sleep=lambda seconds: _nap(seconds, check_stop),
        )
    else:
        mine = share(expanded, *shard)
        log(f"sweep {name}: {len(mine)} of {len(expanded)} points in shard {shard[0]}/{shard[1]}, workdir {workdir}")
        todo = (item for item in mine)
    outcomes: dict[str, str] = {}
    try:  # closing `todo` releases a claim held when a stop or an interrupt ends the loop
        for p, cfg in todo:
            check_stop()
            describe = functools.partial(describe_point, name, p, cfg, index[p.name])
            outcomes[p.name] = _visit(p, cfg, describe, workdir / p.name, run_fn, is_main, agree, log, stop_on)
    finally:
        todo.close()
    _log_outcomes(name, outcomes, log)
    return outcomes


def _visit(
    p: Point,
    cfg: ml_collections.ConfigDict,
    describe: Callable[[], dict[str, Any]],
    pdir: Path,
    run_fn: RunFn,
    is_main: bool,
    agree: Callable[[bool], bool],
    log: Callable[[str], None],
    stop_on: tuple[type[BaseException], ...],
) -> str:
    """One point of the sweep: skipped when finished, failed when it cannot resume safely, else run;
    `describe()` is its point.json record (built only for a point that runs)."""
    if agree(_finished(pdir, is_main, log)):
        log(f"  {p.name}: done, skipped")
        return "skipped"
    record = describe()
    previous = results.read_json(pdir / ERROR_FILE) or {}
    problem = _write_point(pdir, record) if is_main else None
    # A point that cannot resume safely is recorded like any failure; other processes follow.
    if agree(problem is not None):
        if is_main:
            _record_failure(pdir, previous, "PointChanged", problem or "", "")
        log(f"  {p.name}: FAILED: {problem}")
        return "failed"
    macs = si(record["describe"].get("macs"))
    log(f"  {p.name}: {results.point_state(pdir)}, running ({p.strategy}, {macs} MACs)")
    return _run_point(cfg, pdir, run_fn, previous, is_main, log, stop_on)


def _log_outcomes(name: str, outcomes: Mapping[str, str], log: Callable[[str], None]) -> None:
    """The sweep's last line: how many points are done, which failed, which another process holds."""
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    held = sorted(n for n, o in outcomes.items() if o == "held")
    done = sum(o in ("done", "skipped") for o in outcomes.values())
    elsewhere = f", held elsewhere {held}" if held else ""
    log(f"sweep {name}: {done} done, {len(failed)} failed {failed or ''}{elsewhere}")


def _nap(seconds: float, check: Callable[[], None]) -> None:
    """Sleeps `seconds` in slices of at most one, calling `check` (which may raise) before each."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check()
        time.sleep(min(1.0, left))


def _finished(pdir: Path, is_main: bool, log: Callable[[str], None]) -> bool:
    """Whether the point has a sound run record. A damaged one is moved aside (kept, never deleted), so the
    point runs again: the trainer resumes from its last checkpoint and writes a new record."""
    if not storage.exists(pdir / RESULT_FILE):
        return False
    problem = results.read_point(pdir).problem
    if problem is None:
        return True
    if is_main:
        aside = pdir / f"{RESULT_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        if not storage.rename(pdir / RESULT_FILE, aside):  # another driver moved it first
            return False
        log(f"  {pdir.name}: DAMAGED record ({problem}); moved to {aside.name}, rerunning from its checkpoint")
    return False


def _write_point(pdir: Path, record: Mapping[str, Any]) -> str | None:
    """Writes point.json unless the directory holds work for another model; returns that problem, if any."""
    problem = _changed_model(results.read_json(pdir / POINT_FILE), record, pdir)
    if problem is None:
        run_record.write_json(pdir / POINT_FILE, record)
    return problem


def _run_point(
    cfg: ml_collections.ConfigDict,
    pdir: Path,
    run_fn: RunFn,
    previous: Mapping[str, Any],
    is_main: bool,
    log: Callable[[str], None],
    stop_on: tuple[type[BaseException], ...],
) -> str:
    """Trains one point; 'done', 'failed' with error.json written, or 'held' when another process trains it
    (its trainer's writer.lease is held: nothing is recorded). `stop_on` ends the sweep."""
    start = time.time()
    try:
        result = run_fn(cfg, str(pdir))
        if is_main and not storage.exists(pdir / RESULT_FILE):
            if not isinstance(result, run_record.RunRecord):
                raise TypeError(f"the run wrote no {RESULT_FILE} and returned {type(result).__name__}")
            run_record.write_record(pdir / RESULT_FILE, result)
    except stop_on:
        log(f"  {pdir.name}: stopped after {time.time() - start:.0f} s; rerun to resume")
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one point must not stop the sweep
        from effscale import claims

        if claims.held_elsewhere(e):
            log(f"  {pdir.name}: not run, another process is training it: {e}")
            return "held"
        if is_main:
            _record_failure(pdir, previous, type(e).__name__, str(e), traceback.format_exc())
        log(f"  {pdir.name}: FAILED after {time.time() - start:.0f} s: {type(e).__name__}: {e}")
        return "failed"
    if is_main:
        storage.remove(pdir / ERROR_FILE)
    log(f"  {pdir.name}: done in {time.time() - start:.0f} s")
    return "done"


def _changed_model(old: Mapping[str, Any] | None, new: Mapping[str, Any], pdir: Path) -> str | None:
    """A message if `pdir` already holds work for a different model than the point now declares."""
    if not old or results.point_state(pdir) == "pending":
        return None
    before, after = (old.get("config") or {}).get("model"), new["config"].get("model")
    if before is None or before == after:
        return None
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return (
        f"{pdir} was started with a different model (fields {', '.join(diff)}); its checkpoints cannot be "
        "resumed. Remove that directory or give the point a new name."
    )


def _record_failure(pdir: Path, previous: Mapping[str, Any], kind: str, message: str, tb: str) -> None:
    run_record.write_json(
        pdir / ERROR_FILE,
        {
            "type": kind,
            "message": message,
            "traceback": tb,
            "attempts": int(previous.get("attempts", 0)) + 1,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


# ----------------------------------------------------------------------------- status


def status(config: ml_collections.ConfigDict, workdir: str | Path, num_shards: int = 1) -> list[dict[str, Any]]:
    """One row per declared point: state, shard, EMA top-1 (a fraction, when known), params and MACs.

    With 3 or more finished points that measured their speed, the cost model (effscale.costmodel) adds
    each unfinished point's predicted training time ('predicted_s') and each finished point's
    leave-one-out prediction error ('cost_error').
    """
    from effscale import costmodel

    workdir = storage.path(workdir, "--workdir")
    rows, table, trains, datasets = [], [], [], []
    for k, (p, cfg) in enumerate(expand(config)):
        pdir = workdir / p.name
        row = results.point_row(pdir) if storage.is_dir(pdir) else {}
        desc = describe_model(cfg.model)
        error = results.read_json(pdir / ERROR_FILE) if row.get("status") == "failed" else None
        table.append(row)
        trains.append(cfg.train)
        datasets.append(str(cfg.data.name))
        rows.append(
            {
                "point": p.name,
                "strategy": p.strategy,
                "series": p.series or p.strategy,
                "shard": shard_of(k, num_shards),
                "state": row.get("status") or "pending",
                "top1": row.get("ema_top1") if row.get("ema_top1") is not None else row.get("top1"),
                # The trainer's counts once it has run (real class count), the analytic ones before.
                "params": row.get("params") or desc.get("params"),
                "macs": row.get("macs") or desc.get("macs"),
                "activations": row.get("activations") or desc.get("activations"),
                "wall_time_s": row.get("wall_time_s"),
                "attempts": (error or {}).get("attempts"),
                "error": row.get("error") or desc.get("error"),
            }
        )
    return costmodel.annotate(rows, table, trains, datasets)


def format_points(config: ml_collections.ConfigDict, num_shards: int = 1) -> str:
    """The declared points of a sweep with their shard, analytic params / MACs and overrides."""
    lines = [f"sweep {sweep_name(config)}: {len(config.sweep.points)} points"]
    total = 0
    for k, (p, cfg) in enumerate(expand(config)):
        desc = describe_model(cfg.model)
        total += desc.get("macs") or 0
        overrides = ", ".join(f"{key}={value}" for key, value in p.overrides.items())
        lines.append(
            f"  {p.name:<28} {p.strategy:<10} shard {shard_of(k, num_shards):>2}  "
            f"{si(desc.get('params')):>7} params {si(desc.get('macs')):>7} MACs  {overrides}"
        )
    lines.append(f"  total {si(total)} MACs per image over all points")
    return "\n".join(lines)


def format_status(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """A table of `status` rows (top-1 in percent) with a count per state at the end.

    The 'time' column: an unfinished point's predicted wall time (its training time alone before
    any finished point measured a wall time), or a finished point's leave-one-network-out error of
    the training-time prediction (effscale.costmodel), once the model has its points.
    """
    from effscale import costmodel

    width = max([len(r["point"]) for r in rows] + [5])
    lines = [title] if title else []
    lines.append(
        f"{'point':<{width}}  {'strategy':<12} {'shard':>5}  {'state':<8} {'top-1':>6} {'params':>8} {'MACs':>8} "
        f"{'time':>8}"
    )
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.2f}"
        if r.get("cost_error") is not None:
            cost = f"{int(round(100 * r['cost_error'])):+d}%"  # int: never '-0%'
        else:
            predicted = r.get("predicted_wall_s") or r.get("predicted_s")
            cost = costmodel.duration(predicted) if r["state"] != "done" else "-"
        line = (
            f"{r['point']:<{width}}  {r['strategy']:<12} {r['shard']:>5}  {r['state']:<8} {top1:>6} "
            f"{si(r['params']):>8} {si(r['macs']):>8} {cost:>8}"
        )
        if r["error"]:
            attempts = f" (attempt {r['attempts']})" if r.get("attempts") else ""
            line += f"  {r['error'].splitlines()[0][:100]}{attempts}"
        lines.append(line)
    counts = {s: sum(r["state"] == s for r in rows) for s in results.STATES}
    shown = {s: n for s, n in counts.items() if n or s != "damaged"}  # damaged only when there is one
    lines.append(", ".join(f"{n} {s}" for s, n in shown.items()) + f" (of {len(rows)})")
    lines.append(_cost_summary(rows))
    return "\n".join(lines)


def _cost_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """The status table's last line: the unfinished points' predicted time, or why there is none."""
    from effscale import costmodel

    todo = [r for r in rows if r["state"] != "done"]
    basis = next((r["cost_basis"] for r in todo if r.get("cost_basis")), None)
    if not todo:
        return "time: leave-one-network-out error of the cost model's prediction (seconds per image)"
    if basis is None:
        return f"time: no prediction yet (the cost model needs timed points of {costmodel.MIN_POINTS} networks)"
    known = [r for r in todo if r.get("predicted_s") is not None]
    train = sum(r["predicted_s"] for r in known)
    spent = sum(r.get("wall_time_s") or 0.0 for r in rows if r["state"] == "done")
    finished = f"finished: leave-one-network-out error; finished points' wall time {costmodel.duration(spent)}"
    extra = next((r["cost_overhead"] for r in known if r.get("cost_overhead") is not None), None)
    if extra is None:
        return (
            f"time: predicted training time {costmodel.duration(train)} for {len(known)} of {len(todo)} unfinished "
            f"points (cost model on {basis}; excludes compilation and evaluation: no finished wall time); {finished}"
        )
    wall = sum(r["predicted_wall_s"] for r in known)
    return (
        f"time: predicted wall time {costmodel.duration(wall)} for {len(known)} of {len(todo)} unfinished points "
        f"(training {costmodel.duration(train)} by the cost model on {basis}, plus {100 * extra:.0f}% for "
        f"compilation and evaluation as the finished points measured); sweep total "
        f"{costmodel.duration(wall + spent)}; {finished}"
    )


# ----------------------------------------------------------------------------- entry point


def _multihost() -> tuple[bool, Callable[[bool], bool]]:
    """(is process 0, agree) for the current JAX job."""
    import jax

    if jax.process_count() == 1:
        return True, _identity
    import numpy as np
    from jax.experimental import multihost_utils

    def agree(flag: bool) -> bool:
        return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))

    return jax.process_index() == 0, agree


def pending_records(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """point.json-like records of every declared point (so tables list points not yet started)."""
    name = sweep_name(config)
    return [{"sweep": name, **p.as_dict(), "describe": describe_model(cfg.model)} for p, cfg in expand(config)]


def main(
    config: ml_collections.ConfigDict,
    workdir: str,
    mode: str = "train",
    shard: str | None = None,
    run_fn: RunFn | None = None,
) -> int:
    """launch.py's entry for sweep configs: mode info / train / status / collect / plot / report. Returns an exit code.

    `shard` is the --sweep_shard text ('i/n', 'auto' or 'claim': effscale.shard); `run_fn` replaces
    effscale.train.train_and_evaluate (tests). In train mode, the trainer's Interrupted (a signal or
    preemption, checkpoint saved) propagates to the caller; failures of single points give exit status 1
    after the sweep.
    """
    claim = shard == CLAIM  # work stealing: no fixed share (effscale.claims)
    i, n = (0, 1) if claim else resolve_shard(shard, os.environ)
    if mode == "info":  # what the sweep holds, without a workdir
        print(format_points(config, n))
        return 0
    if not workdir:
        print("A sweep needs --workdir.", file=sys.stderr)
        return 2
    if mode == "train":
        is_main, agree = _multihost()
        stop_on: tuple[type[BaseException], ...] = ()
        if run_fn is None:
            from effscale import train

            run_fn, stop_on = train.train_and_evaluate, (train.Interrupted,)
        from effscale.training.signals import StopRequest

        # A SIGTERM / SIGINT between points, or one the running point took too late to stop on, ends the sweep
        # before its next point; during a point, the trainer's own StopRequest takes it.
        with StopRequest() as stop:
            outcomes = run(
                config,
                workdir,
                run_fn,
                (i, n),
                is_main=is_main,
                agree=agree,
                stop_on=stop_on,
                claim=claim,
                stop_requested=lambda: stop.signum,
            )
        return 1 if any(o == "failed" for o in outcomes.values()) else 0
    if mode == "status":
        print(format_status(status(config, workdir, n), f"sweep {sweep_name(config)} in {workdir}"))
        return 0
    if mode in ("collect", "plot", "report"):
        return _outputs(config, storage.path(workdir, "--workdir"), mode)
    print(f"--mode={mode} is not a sweep mode (info, train, status, collect, plot, report).", file=sys.stderr)
    return 2


def _outputs(config: ml_collections.ConfigDict, workdir: Path, mode: str) -> int:
    """--mode=collect (the tables), plot (the figures) or report (the claims) over what `workdir` holds."""
    rows = results.collect(workdir, pending_records(config))
    if mode == "collect":
        csv_path, jsonl_path = results.write_table(rows, workdir / "results")
        grouped = results.write_grouped(rows, workdir / "results_grouped.csv")
        print(f"{len(rows)} rows ({sum(r['status'] == 'done' for r in rows)} done) -> {csv_path}, {jsonl_path}")
        print(f"{len(results.group(rows))} networks (mean, std, n, 95% interval over seeds) -> {grouped}")
        return 0
    if mode == "report":
        from effscale import report

        path, claims = report.write(rows, workdir / "report.md", f"{sweep_name(config)} in {workdir}")
        for claim in claims:
            print(f"claim {claim.number}: {claim.verdict}: {claim.title}")
        print(f"-> {path}")
        return 0
    from effscale import plots

    written = plots.plot_all(rows, workdir / "figures")
    print(f"{len(written)} figures -> {workdir / 'figures'}")
    for path in written:
        print(f"  {path}")
    return 0


# ----------------------------------------------------------------------------- point builders


def macs_of(model_config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> int:
    """Analytic multiply-adds per image of `model_config` with `overrides` (paths relative to it)."""
    from effscale import complexity, spec

    model = copy.deepcopy(model_config)
    for path, value in overrides.items():
        model[path] = value
    return complexity.analyse(spec.build(model)).macs


def bisect_multiplier(
    macs_fn: Callable[[float], int],
    target: float,
    lo: float,
    hi: float,
    iters: int = 60,
) -> tuple[float, int]:
    """The multiplier m in [lo, ...] whose MACs come closest to `target`, by bisection.

    `macs_fn` must not decrease with m. Rounding (repeats, channels, pixels) makes it a step
    function, so the bisection brackets the step that crosses `target` and keeps the closer
    side. `hi` doubles until it reaches the target. Returns (m, macs_fn(m)).
    """
    if macs_fn(lo) >= target:
        return lo, macs_fn(lo)
    for _ in range(20):
        if macs_fn(hi) >= target:
            break
        lo, hi = hi, hi * 2
    else:
        raise ValueError(f"No multiplier up to {hi:g} reaches {target:.4g} MACs.")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if macs_fn(mid) >= target:
            hi = mid
        else:
            lo = mid
    below, above = macs_fn(lo), macs_fn(hi)
    m, macs = (lo, below) if target - below < above - target else (hi, above)
    # Any multiplier on the same step is as good: report the one with the fewest decimals.
    for digits in range(1, 7):
        scale = 10**digits
        for nice in (round(m, digits), math.ceil(m * scale) / scale, math.floor(m * scale) / scale):
            if nice >= 0 and macs_fn(nice) == macs:
                return nice, macs
    return m, macs
