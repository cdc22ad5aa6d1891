"""effscale.host: process settings applied only on request (XLA flags, huge pages, returning freed memory)."""

import json
import os
import subprocess
import sys

import pytest

from effscale import host

HELPS = host.hugepages_help()

# glibc's malloc directly, as XLA allocates (numpy asks for huge pages for its own arrays).
FAULTS = """
import ctypes, json, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # as XLA's per-step temporaries: a large block allocated, written, freed
    block = libc.malloc(256 << 20)
    ctypes.memset(block, 1, 256 << 20)
    libc.free(block)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

REEXEC = """
import json, os, sys
from effscale import host
starts = int(os.environ.get("STARTS", "0")) + 1
os.environ["STARTS"] = str(starts)
host.reexec_with_hugepages()
print(json.dumps({"starts": starts, "argv": sys.argv[1:], "tunables": os.environ.get("GLIBC_TUNABLES", "")}))
"""


def _run(code, env, *args):
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS", host.OPT_OUT)}
    return {**env, **extra}


def test_with_hugepages_adds_once_and_keeps_other_tunables():
    assert host.with_hugepages({})["GLIBC_TUNABLES"] == host.TUNABLE
    env = host.with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{host.TUNABLE}", "X": "1"}
    assert host.with_hugepages(env) == env
    # The user's own hugetlb choice wins.
    own = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert host.with_hugepages(own) == own


@pytest.mark.skipif(not HELPS, reason="needs glibc >= 2.35 and transparent huge pages in 'madvise' mode")
def test_tunable_cuts_page_faults_of_large_blocks():
    """Three 256 MiB blocks: ~196,000 faults of 4 KiB pages without it, a few hundred 2 MiB pages with it."""
    plain = _run(FAULTS, _env())["faults"]
    huge = _run(FAULTS, host.with_hugepages(_env()))["faults"]
    assert plain > 150_000 and huge < plain / 20, (plain, huge)


def test_reexec_restarts_once_with_the_same_arguments():
    got = _run(REEXEC, _env(), "--config", "x.py")
    assert got["argv"] == ["--config", "x.py"]
    if HELPS:
        assert got["starts"] == 2 and host.TUNABLE in got["tunables"]
    else:
        assert got["starts"] == 1 and got["tunables"] == ""
    # Opted out, or already set: no restart.
    assert _run(REEXEC, _env(**{host.OPT_OUT: "0"}))["starts"] == 1
    assert _run(REEXEC, host.with_hugepages(_env()))["starts"] == 1


# Every effscale module imported after jax and TensorFlow (which set variables of their own on import).
IMPORT_ALL = """
import importlib, json, os, pkgutil
import jax, tensorflow
before = dict(os.environ)
import effscale
for m in pkgutil.walk_packages(effscale.__path__, "effscale."):
    importlib.import_module(m.name)
print(json.dumps(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))))
"""

# A computation after set_xla_flags: XLA aborts the process on a flag it does not know.
XLA_READS = """
import json, os
from effscale import host
host.set_xla_flags()
import jax.numpy as jnp
jnp.ones(3).sum().block_until_ready()
print(json.dumps({"flags": os.environ["XLA_FLAGS"]}))
"""

# Freed 1 KiB blocks (on the heap, below the mmap threshold) behind one still in use: free() cannot
# shrink the heap past that one, so only malloc_trim gives their pages back.
TRIM = """
import ctypes, json, os
from effscale import host
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
blocks = [libc.malloc(1024) for _ in range(200_000)]
for b in blocks:
    ctypes.memset(b, 1, 1024)
top = blocks.pop()
for b in blocks:
    libc.free(b)
before = rss()
host.return_freed_memory()
print(json.dumps({"before": before, "after": rss()}))
"""


def test_importing_effscale_changes_no_environment_variable():
    assert _run(IMPORT_ALL, _env()) == []


def test_with_xla_flags_adds_the_scheduler_flag_once_and_the_user_wins():
    flag = f"{host.SCHEDULER_FLAG}=false"
    assert host.with_xla_flags({})["XLA_FLAGS"] == flag
    env = host.with_xla_flags({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "X": "1"})
    assert env == {"XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {flag}", "X": "1"}
    assert host.with_xla_flags(env) == env
    own = {"XLA_FLAGS": f"{host.SCHEDULER_FLAG}=true"}
    assert host.with_xla_flags(own) == own


def test_set_xla_flags_gives_xla_a_flag_it_knows():
    assert _run(XLA_READS, _env())["flags"] == f"{host.SCHEDULER_FLAG}=false"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_return_freed_memory_gives_freed_heap_back():
    got = _run(TRIM, _env())
    assert got["before"] - got["after"] > 150 << 20, got
