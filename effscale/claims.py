"""Work stealing over a sweep's points: each worker claims the next unfinished point with a lease.

Workers started with ``--sweep_shard=claim`` on any machines sharing the sweep's workdir need no
coordinator. Each scans the points in declared order and takes the first one that is neither
finished nor claimed, by creating ``<point>/claim.lease`` exclusively (effscale.lease); it trains
that point (the trainer resumes from the checkpoints it finds there), releases the claim and scans
again from the top. A worker killed with kill -9 stops renewing its claim: once the claim expires
(the lease TTL, 120 s unless EFFSCALE_LEASE_TTL says otherwise; at once on the worker's own machine,
where its process is seen gone) another worker takes the point over and resumes it from its last
checkpoint.

A worker ends when every point is finished or was tried in this round (it ran the point, or the
point's error.json gained an attempt since the worker started: a failure is retried by the next
round, not again and again by the workers of this one). Points that other live workers hold are
waited for, not skipped: if their worker dies, a waiting worker finishes them. So the last workers
end with the last point; stopping an idle, waiting worker loses nothing.

The claim is the sweep's; the trainer takes its own ``writer.lease`` in the same directory (a
different file, so they never wait on each other). A point a driver of static shares is training
has no claim but a held writer lease: the trainer refuses to start it, and this worker looks at
it again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from effscale import lease, results

CLAIM = results.CLAIM_FILE
HOLDER = "a sweep worker"

T = TypeVar("T")


def _same(flag: bool) -> bool:
    return flag


def held_elsewhere(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says another process holds a lease: not a failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, lease.HeldError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def attempts(point_dir: Path) -> int:
    """How many failed attempts the point's error.json records (0 without one)."""
    return int((results.read_json(point_dir / results.ERROR_FILE) or {}).get("attempts", 0))


def claimed(
    items: Sequence[T],
    dir_of: Callable[[T], Path],
    finished: Callable[[Path], bool],
    *,
    ttl_s: float | None = None,
    poll_s: float | None = None,
    is_main: bool = True,
    agree: Callable[[bool], bool] = _same,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[T]:
    """Yields the items this worker claims, one at a time, holding the point's claim until the next is asked for.

    `dir_of(item)` is the point's directory; `finished(dir)` says, once the claim is held, whether
    the point has its result (it may move a damaged one aside: it runs under the claim). Only the
    main process (`is_main`) takes claims; `agree` makes every process of a multi-host job follow
    its decisions. Closing the generator (the caller's loop ended by an exception) releases the claim.
    """
    ttl = lease.ttl_from_env() if ttl_s is None else ttl_s
    poll = ttl / 3 if poll_s is None else poll_s
    at_start = {dir_of(x): attempts(dir_of(x)) for x in items}
    tried: set[Path] = set()
    later: dict[Path, float] = {}  # points another driver's trainer held: not before this time
    shown: list[str] = []
    while True:
        waiting: dict[str, str] = {}  # point name: who holds it
        for x in items:
            d = dir_of(x)
            if d in tried or agree(_settled(d, at_start[d])):
                continue
            if agree(time.monotonic() < later.get(d, 0.0)):
                waiting[d.name] = "its trainer's writer.lease is held by another driver"
                continue
            held = _claim(d, ttl) if is_main else lease.NotHeld()
            if not agree(not isinstance(held, str)):
                waiting[d.name] = held if isinstance(held, str) else "held by another worker"
                continue
            with held:
                if agree(finished(d)):  # finished by another worker since the scan looked
                    continue
                yield x
            if agree(_settled(d, at_start[d])):
                tried.add(d)
            else:  # the trainer refused it (another driver trains it) or left no trace: look again later
                later[d] = time.monotonic() + poll
            break  # scan again from the top: a point before this one may have been released
        else:
            if not waiting:
                return
            if list(waiting) != shown:  # once per change of the points waited for, not per renewal
                log(f"  waiting for {len(waiting)} point(s) other workers hold (looking every {poll:.3g} s):")
                for name, reason in waiting.items():
                    log(f"    {name}: {reason}")
                shown = list(waiting)
            sleep(poll)


def _settled(point_dir: Path, attempts_at_start: int) -> bool:
    """Done, or failed since this worker started (the next round retries it)."""
    return results.point_state(point_dir) == "done" or attempts(point_dir) > attempts_at_start


def _claim(point_dir: Path, ttl_s: float) -> lease.Lease | str:
    """The point's claim, or the one-line reason it is held."""
    try:
        return lease.acquire(point_dir / CLAIM, HOLDER, ttl_s)
    except lease.HeldError as e:
        return str(e)
