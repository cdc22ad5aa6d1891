"""SIGINT / SIGTERM as a request to stop after the current step, with a checkpoint."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

import jax

log = logging.getLogger("effscale")


class StopRequest:
    """Turns SIGINT / SIGTERM into a flag checked between steps (single-process runs).

    Across processes a local flag would be seen at different steps and deadlock the
    collectives, so multi-process runs rely on the cluster's preemption notice
    (orbax's `reached_preemption`, synchronised by jax.distributed) instead.
    The handlers are installed on entering and the previous ones restored on leaving; a request
    that came too late to stop the run (in its last step, or while it wrote its record) passes to
    an enclosing StopRequest (the sweep driver's), so the sweep stops before its next point.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if jax.process_count() == 1:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("Received %s: saving a checkpoint at the end of this step.", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
            outer = getattr(handler, "__self__", None)
            if isinstance(outer, StopRequest) and self.signum is not None and outer.signum is None:
                outer.signum = self.signum
        self._previous = {}
