"""Process settings for effscale's CPU work, applied only when called: importing effscale changes nothing.

- XLA:CPU's concurrency-optimised scheduler off (`with_xla_flags`): on EfficientNet train steps it
  doubled peak memory and cost speed. XLA reads XLA_FLAGS when its backend starts, so this has to
  run before the first jax computation; a value the user already put in XLA_FLAGS wins.
- glibc's malloc on transparent huge pages (`with_hugepages`): XLA:CPU mallocs each step's
  temporaries (gigabytes for a B0 train step at 224 px) and frees them after the step; blocks that
  large are fresh mmaps, so without huge pages the kernel faults in and zeroes them again every
  step, 4 KiB at a time. glibc (2.35+) reads the tunable only at start-up, so
  `reexec_with_hugepages` restarts the process once with it. EFFSCALE_HUGEPAGES=0 opts out.
- `return_freed_memory`: hands the heap that XLA's compiler freed back to the OS (glibc keeps it
  in its arenas otherwise), called by the trainer after compiling.

`configure_process()` applies the first two; launch.py and the benchmark call it first thing.
In a notebook, run `from effscale import host; host.set_xla_flags()` in the first cell, before
anything uses jax, and start Jupyter with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 for the huge
pages (a kernel cannot restart itself with them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "EFFSCALE_HUGEPAGES"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def with_xla_flags(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with XLA:CPU's concurrency-optimised scheduler turned off (a value already in XLA_FLAGS wins)."""
    flags = env.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return dict(env)
    return {**env, "XLA_FLAGS": f"{flags} {SCHEDULER_FLAG}=false".strip()}


def set_xla_flags() -> None:
    """Applies `with_xla_flags` to this process's environment; call it before jax's backend starts."""
    os.environ["XLA_FLAGS"] = with_xla_flags(os.environ)["XLA_FLAGS"]


def with_hugepages(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with glibc's malloc told to use transparent huge pages (a hugetlb tunable already there wins)."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, TUNABLE]))}


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), or None off Linux."""
    try:
        text = THP_MODE.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def hugepages_help() -> bool:
    """Whether the tunable changes anything here: glibc >= 2.35 and a kernel that gives huge pages on request.

    With THP 'always' the kernel already uses them for large mappings, and with 'never' not at all.
    """
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return False
    major, minor = (int(v) for v in version.split(".")[:2])
    return (major, minor) >= (2, 35) and thp_mode() == "madvise"


def reexec_with_hugepages() -> None:
    """Restarts this Python process with the same command line and `with_hugepages` applied, if that helps.

    Does nothing when the tunable is already set (so it runs at most once), when it would not
    help (`hugepages_help`), or with EFFSCALE_HUGEPAGES=0. Call it before any work starts.
    """
    if os.environ.get(OPT_OUT) == "0" or not hugepages_help():
        return
    env = with_hugepages(os.environ)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def configure_process(*, scheduler_flag: bool = True, hugepages: bool = True) -> None:
    """The process settings above, for a command-line entry point: call it before anything else runs.

    `hugepages` may restart the process (`reexec_with_hugepages`), so nothing before this call
    should have side effects that a restart would repeat.
    """
    if scheduler_flag:
        set_xla_flags()
    if hugepages:
        reexec_with_hugepages()


def return_freed_memory() -> None:
    """Returns the heap glibc's malloc holds free to the OS (`malloc_trim(0)`); a no-op without glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
