"""Peak memory of a run: the accelerators' (from their allocator) and the host process's (resident set).

XLA:CPU keeps no allocator statistics, so on a CPU the host peak is the one that tells whether a
larger network fits. On Linux the host peak is reset when a run starts (a sweep trains its points
one after another in one process: without the reset each point would report the largest so far).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import jax

_CLEAR_REFS = Path("/proc/self/clear_refs")  # writing "5" resets the peak resident set (Linux 4.0+)
_STATUS = Path("/proc/self/status")


def reset_host_peak() -> bool:
    """Starts the host's peak resident memory afresh; False where the system cannot (the peak then
    covers the process's life)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def host_peak_bytes() -> int:
    """The process's peak resident memory in bytes since `reset_host_peak` (Linux) or since it started."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def device_peak_bytes() -> int | None:
    """The largest peak allocation of this process's devices; None where the backend keeps no statistics."""
    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except (RuntimeError, NotImplementedError):
            stats = None
        if stats and stats.get("peak_bytes_in_use") is not None:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None
