"""Leases: a file saying which process holds something (a run's workdir, a sweep point) and until when.

A lease file is JSON: {holder, host, pid, started, renewed, expires, token} (times in seconds since
the epoch). `acquire` creates it exclusively, so of two processes asking at once exactly one gets
it; the other gets a HeldError naming the holder. A `Lease` renews itself from a daemon thread
every ttl/3, so a live holder's lease never expires; a holder killed with kill -9 stops renewing,
and once `expires` has passed the next `acquire` takes the lease over. Sooner on the holder's own
machine: a lease whose process no longer exists there (same boot, same pid namespace) is taken
over at once. Hosts sharing a directory need clocks that agree to well within the TTL (NTP does).

Taking over is safe against races: a taker first creates ``.<name>.takeover`` exclusively, so of
several takers one goes on (the others get HeldError naming it); it replaces the lease only if
the file still holds the expired lease it read. Nothing else writes an expired lease: its holder
neither renews nor releases it once it has expired. A holder whose lease was taken over while it
stalled for longer than the TTL finds out at its next renewal: `Lease.check()` then raises
LostError. (A taker killed within the few milliseconds of a takeover leaves its marker, which
expires like a lease and is then removed.)

All file access goes through the small functions at the end (`create_exclusive`, `_read`,
`_replace`, `_rename`, `_remove`), which effscale.storage serves for local files and gs:// objects
alike: on gs:// `create_exclusive` is an upload with ifGenerationMatch=0 and `_rename` deletes its
source only if it is still the generation it copied, so the races above resolve as they do locally.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from effscale import storage

TTL_ENV = "EFFSCALE_LEASE_TTL"
DEFAULT_TTL_S = 120.0  # renewed every 40 s; a killed holder's lease is taken over at most 2 min later
WRITER = "writer.lease"  # in a run's workdir: the one process that writes it

Clock = Callable[[], float]
_log = logging.getLogger("effscale")


class HeldError(ValueError):
    """The lease is held by a live holder; the message names it and when its hold expires."""


class LostError(RuntimeError):
    """This process's lease expired or was taken over: another process may now hold what it held."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """What a lease file records."""

    holder: str  # what holds it, e.g. 'trainer' or 'sweep worker'
    host: str
    pid: int
    started: float
    renewed: float
    expires: float
    token: str  # unique per acquisition: tells this holder's lease from a later one
    machine: str = ""  # boot and pid namespace: where `pid` names the holder's process

    def live(self, now: float) -> bool:
        """Whether the lease holds at `now`: not expired, and its process not gone from this machine."""
        return now < self.expires and not (self.machine and self.machine == this_machine() and _gone(self.pid))

    def describe(self) -> str:
        return f"{self.holder or 'a process'} (pid {self.pid} on {self.host}) since {utc(self.started)}"

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n").encode()


def utc(t: float) -> str:
    """`t` (seconds since the epoch) as a UTC time people on any host read alike."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def parse(raw: bytes) -> Holder:
    """The holder recorded in `raw`; a file that does not parse reads as a lease that has expired."""
    try:
        obj = json.loads(raw)
        fields = [f.name for f in dataclasses.fields(Holder) if f.name in obj or f.default is dataclasses.MISSING]
        return Holder(**{name: obj[name] for name in fields})
    except (ValueError, TypeError, KeyError):
        return Holder("unreadable lease", "?", 0, 0.0, 0.0, 0.0, "")


def this_machine() -> str:
    """This boot of this machine and this process's pid namespace ('' where unknown, e.g. off Linux).

    A pid means the same process only within both: containers sharing a host name have their own.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    """Whether no process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, as another user's
        return False
    return False


def ttl_from_env(default: float = DEFAULT_TTL_S) -> float:
    """The lease time-to-live in seconds: EFFSCALE_LEASE_TTL when set (tests shorten it), else `default`."""
    text = os.environ.get(TTL_ENV, "").strip()
    if not text:
        return default
    try:
        ttl = float(text)
    except ValueError:
        ttl = float("nan")
    if not ttl > 0 or ttl == float("inf"):
        raise ValueError(
            f"{TTL_ENV}={text}: must be a number of seconds > 0 (the lease lifetime; default {default:g})."
        )
    return ttl


def held_message(path: str | os.PathLike[str], holder: Holder) -> str:
    """One line: who holds `path`, since when, and what to do."""
    return (
        f"{path} is held by {holder.describe()}: wait for it to finish, or if that process is gone "
        f"the hold expires at {utc(holder.expires)} and the next start takes it over."
    )


def acquire(
    path: str | os.PathLike[str],
    holder: str = "",
    ttl_s: float | None = None,
    *,
    clock: Clock = time.time,
    renew: bool = True,
) -> Lease:
    """Takes the lease at `path` (creating its directory), or raises HeldError when a live one exists.

    An expired lease is taken over (one winner among racing takers). `ttl_s` defaults to
    `ttl_from_env()`; `renew=False` leaves renewing to the caller (`Lease.renew`).
    """
    path = os.fspath(path)
    ttl = ttl_from_env() if ttl_s is None else float(ttl_s)
    if not ttl > 0:
        raise ValueError(f"ttl_s={ttl_s}: a lease's lifetime must be > 0 seconds.")
    machine = this_machine()
    for _ in range(16):  # each round, another process made progress (created, released or took over)
        now = clock()
        mine = Holder(holder, socket.gethostname(), os.getpid(), now, now, now + ttl, secrets.token_hex(16), machine)
        if create_exclusive(path, mine.to_bytes()):
            return Lease(path, mine, ttl, clock, renew)
        raw = _read(path)
        if raw is None:  # released since: try again
            continue
        current = parse(raw)
        if current.live(now):
            raise HeldError(held_message(path, current))
        if _take_over(path, raw, mine, now):
            _log.warning("Took over %s from %s, which stopped renewing it at %s.", path, current.describe(),
                         utc(current.renewed))  # fmt: skip
            return Lease(path, mine, ttl, clock, renew)
    raise HeldError(f"{path}: other processes kept taking this lease; try again.")


def _take_over(path: str, expired: bytes, mine: Holder, now: float) -> bool:
    """Replaces the expired lease `expired` at `path` by `mine`; False when another process got there first."""
    marker = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.takeover")
    if not create_exclusive(marker, mine.to_bytes()):
        raw = _read(marker)
        if raw is None:  # that takeover just ended: look again
            return False
        taker = parse(raw)
        if taker.live(now):
            raise HeldError(held_message(path, taker))
        _remove_if(marker, lambda seen: seen == raw)  # its taker was killed mid-takeover
        return False
    try:
        if _read(path) != expired:  # released, or taken over by a takeover that just ended
            return False
        _replace(path, mine.to_bytes())
        return True
    finally:
        _remove(marker)


class Lease:
    """A held lease: renewed from a daemon thread every ttl/3 (unless `renew=False`), released by `release`."""

    def __init__(self, path: str, holder: Holder, ttl_s: float, clock: Clock, renew: bool = True):
        self.path, self.holder, self.ttl_s = path, holder, ttl_s
        self.lost: str | None = None  # why this process no longer holds it
        self._released = False
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if renew:
            self._thread = threading.Thread(target=self._renew_every, name=f"lease {path}", daemon=True)
            self._thread.start()

    def renew(self) -> bool:
        """Extends the lease by its TTL if it is still this process's, else records it lost; returns whether held."""
        with self._lock:
            if self.lost is not None or self._released:
                return False
            now = self._clock()
            raw = _read(self.path)
            current = None if raw is None else parse(raw)
            if current is None or current.token != self.holder.token:
                by = "its file was removed" if current is None else f"it was taken over by {current.describe()}"
                self.lost = f"{self.path}: this process lost its lease ({by})"
            elif now >= self.holder.expires:  # a taker may be replacing it right now: never overwrite
                self.lost = f"{self.path}: this process's lease expired at {utc(self.holder.expires)} before renewal"
            else:
                renewed = dataclasses.replace(self.holder, renewed=now, expires=now + self.ttl_s)
                _replace(self.path, renewed.to_bytes())
                self.holder = renewed
            return self.lost is None

    def _renew_every(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    _log.warning("%s; another process may now write what it held.", self.lost)
                    return
            except OSError as e:  # storage hiccup: the next round tries again; expiry decides
                _log.warning("Could not renew %s: %s", self.path, e)

    def check(self) -> None:
        """Raises LostError when this process no longer holds the lease."""
        if self.lost is not None:
            raise LostError(f"{self.lost}; another process may now write what it held.")

    def release(self) -> None:
        """Stops renewing and removes the lease file if it is still this process's (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            # An expired lease is left alone: a taker may be replacing it right now.
            if self.lost is None and not self._released and self.holder.live(self._clock()):
                token = self.holder.token
                try:
                    _remove_if(self.path, lambda raw: parse(raw).token == token)
                except OSError as e:  # raised from a `finally`, it would hide the error that ended the holder's work
                    _log.warning("Could not remove %s (%s); it expires at %s.", self.path, e, utc(self.holder.expires))
            self._released = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class NotHeld:
    """Stands in for a lease where none is taken (processes other than 0 of a multi-process run)."""

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass

    def __enter__(self) -> NotHeld:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def hold_writer(workdir: str | os.PathLike[str], enabled: bool = True) -> Lease | NotHeld:
    """The run's one-writer lease `<workdir>/writer.lease` (HeldError when another process holds it)."""
    if not enabled:
        return NotHeld()
    return acquire(os.path.join(os.fspath(workdir), WRITER), "a trainer")


def read_holder(path: str | os.PathLike[str]) -> Holder | None:
    """The holder recorded at `path`, or None when there is no lease (for status displays)."""
    raw = _read(os.fspath(path))
    return None if raw is None else parse(raw)


def _remove_if(path: str, matches: Callable[[bytes], bool]) -> bool:
    """Removes the file at `path` if its content `matches`; True when this call removed it.

    The file is first renamed to a unique name, so of several callers one at most gets it; a
    caller whose rename caught a file that does not match puts it back (never over a newer one).
    """
    if (raw := _read(path)) is None or not matches(raw):
        return False
    aside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(8)}")
    if not _rename(path, aside):
        return False
    raw = _read(aside)
    if raw is not None and matches(raw):
        _remove(aside)
        return True
    if raw is not None and not create_exclusive(path, raw):
        _log.warning("Lease %s changed while it was set aside; the newer holder keeps it.", path)
    _remove(aside)
    return False


# ----------------------------------------------------------------------------- storage
# Local files or gs:// objects alike, through effscale.storage (which says how each commits).


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> bool:
    """Creates `path` holding `data` unless it exists; True when this call created it.

    Locally a synced temporary file hard-linked to `path`; on gs:// an upload with
    ifGenerationMatch=0. Either way a reader never sees a partial file.
    """
    return storage.create_exclusive(path, data)


def _read(path: str) -> bytes | None:
    try:
        return storage.read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _replace(path: str, data: bytes) -> None:
    storage.write_atomic(path, data)


def _rename(src: str, dst: str) -> bool:
    return storage.rename(src, dst)


def _remove(path: str) -> None:
    storage.remove(path)
