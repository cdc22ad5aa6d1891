"""The errors a run raises and its callers (launch.py, the sweep driver) catch."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class ConfigError(ValueError):
    """The config or the workdir cannot be used; raised before anything is compiled or trained."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class Interrupted(Exception):  # noqa: N818 (a state, not an error)
    """The run was stopped by a signal or preemption after saving a checkpoint; rerun to resume."""

    def __init__(self, step: int, signum: int | None, workdir: str, reason: str = "preemption"):
        self.step, self.signum, self.workdir = step, signum, workdir
        name = signal.Signals(signum).name if signum else reason
        super().__init__(f"Stopped by {name} at step {step}; checkpoint saved in {workdir}. Rerun to resume.")


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Marks the ValueErrors of validation (config fields, dataset, workdir) as ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e
