"""JAX's persistent compilation cache: compiled programs kept on disk for the next process that needs them.

A sweep compiles the same programs again and again: every repeat of a point, every rerun after a
preemption, every host of a multi-host run. With the cache on, XLA's output is written under a
key of the program, its compile options, the devices and the jax version, and a later compile of
the same program loads it instead. The cache directory can be shared by hosts (any path etils
understands, gs:// included); hosts with other devices or jax versions get keys of their own.

    compile_cache.enable(compile_cache.directory(sweep_workdir))  # once, before anything compiles

Nothing here acts on import: `enable` changes jax's configuration when called, and `counting`
listens only inside its `with` block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

SWEEP_DIR = ".jax_cache"  # under a sweep's workdir: shared by its shards, removed with it
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


def directory(workdir: str | os.PathLike[str]) -> str:
    """The cache directory of a sweep in `workdir`: $JAX_COMPILATION_CACHE_DIR when the user set it, else
    `<workdir>/.jax_cache`."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(os.fspath(workdir), SWEEP_DIR)


def enable(path: str | os.PathLike[str]) -> None:
    """Turns on JAX's persistent compilation cache in `path`, for programs of any size and compile time.

    Call it before the first compile of the process: jax decides whether a process uses the cache
    on its first compile, and later calls change nothing.
    """
    import jax

    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    # The defaults skip programs that compile in under a second: small networks would never be cached.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass
class Counts:
    """Compiles the persistent cache served (`hits`) and those it could not (`misses`)."""

    hits: int = 0
    misses: int = 0


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Counts the persistent-cache hits and misses of the compiles inside the block (both stay 0 with the cache off)."""
    import jax

    counts = Counts()

    def listen(event: str, **kwargs) -> None:
        if event == _HIT:
            counts.hits += 1
        elif event == _MISS:
            counts.misses += 1

    jax.monitoring.register_event_listener(listen)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_listener(listen)
