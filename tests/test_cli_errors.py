"""Every bad command line is one line `effscale: error: ...`, exit status 2, before JAX starts, nothing written.

Each probe runs launch.py in a subprocess as a user would, with a `jax` package on PYTHONPATH that
raises when imported: a check that waited for JAX would fail with that traceback instead.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_collections
import pytest

from effscale import cli
from effscale.shard import parse_shard

ROOT = Path(__file__).resolve().parents[1]
JAX_TRAP = "effscale test: jax was imported"
B0 = ["--config", "configs/efficientnet.py:b0"]
WIDTH_SWEEP = ["--config", "configs/sweeps/width.py"]
NOBODY = 65534


@pytest.fixture(scope="module")
def trap(tmp_path_factory) -> Path:
    """A directory whose `jax` package fails on import."""
    root = tmp_path_factory.mktemp("jax_trap")
    (root / "jax").mkdir()
    (root / "jax" / "__init__.py").write_text(f"raise ImportError({JAX_TRAP!r})\n")
    return root


def launch(trap: Path, *args: str, user: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(trap), os.environ.get("PYTHONPATH")]))}
    prefix = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        # launch.py restarts itself once for huge pages; another user may not be allowed to exec this Python again.
        env["EFFSCALE_HUGEPAGES"] = "0"
    cmd = [*prefix, sys.executable, "launch.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, tuple[str, bytes | None, int]]:
    """Every path below `root` with its kind, bytes and permission bits."""
    out = {}
    for path in sorted(root.rglob("*")):
        kind = "dir" if path.is_dir() else "file"
        out[str(path.relative_to(root))] = (kind, path.read_bytes() if kind == "file" else None, path.stat().st_mode)
    return out


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and JAX_TRAP not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("effscale: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def test_the_trap_catches_a_command_that_reaches_jax(trap):
    """The probes below mean something only if a command that gets as far as JAX fails under the trap."""
    proc = launch(trap, *B0, "--mode=info", "--noxla")
    assert proc.returncode != 0 and JAX_TRAP in proc.stderr


SHARDS = [("3/2", "0 <= i < n"), ("-1/2", "i/n"), ("a/b", "i/n"), ("0/0", "0 <= i < n")]


@pytest.mark.parametrize("mode", ["train", "status"])
@pytest.mark.parametrize("shard,allowed", SHARDS)
def test_bad_sweep_shard(trap, tmp_path, mode, shard, allowed):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.csv").write_text("point\n")
    before = snapshot(tmp_path)
    proc = launch(trap, *WIDTH_SWEEP, f"--workdir={tmp_path / 'sweep'}", f"--mode={mode}", f"--sweep_shard={shard}")
    assert_one_error_line(proc, f"--sweep_shard={shard}", allowed)
    assert snapshot(tmp_path) == before


# (command line after the config file, the words the error line must hold)
CONFIG_PROBES = {
    "missing file": (["--config", "configs/no_such_config.py"], ["--config=configs/no_such_config.py", "does not"]),
    "missing file with override": (
        ["--config", "configs/no_such.py", "--config.model.width=2"],
        ["--config=configs/no_such.py", "does not exist"],
    ),
    "config is a directory": (["--config", "configs"], ["--config=configs", "is a directory"]),
    "no config": ([], ["--config is missing", "configs/efficientnet.py"]),
    "misspelt field": ([*B0, "--config.model.widht=2"], ["--config.model.widht", 'Did you mean "width"?']),
    "unknown field": ([*B0, "--config.model.zzzz=2"], ["--config.model.zzzz", "no field 'zzzz'", "width"]),
    "unknown group": ([*B0, "--config.nope.x=1"], ["--config.nope.x", "no field 'nope'", "model, train"]),
    "field below a value": ([*B0, "--config.model.width.x=1"], ["--config.model.width.x", "is a value"]),
    "bad value": ([*B0, "--config.model.width=abc"], ["--config.model.width=abc", "float"]),
    "unknown preset": (["--config", "configs/efficientnet.py:b9"], ["preset 'b9'", "b0, b1"]),
    "unknown mode": ([*B0, "--mode=bogus"], ["--mode=bogus", "info|train|eval"]),
    "positional argument": ([*B0, "b1"], ["unexpected arguments: b1"]),
    "shard of a single run": ([*B0, "--sweep_shard=0/2"], ["--sweep_shard=0/2", "configs/sweeps/"]),
    "sweep mode of a single run": ([*B0, "--mode=status"], ["--mode=status", "configs/sweeps/"]),
}


@pytest.mark.parametrize("probe", CONFIG_PROBES)
def test_bad_config_or_flag(trap, tmp_path, probe):
    args, needles = CONFIG_PROBES[probe]
    assert_one_error_line(launch(trap, *args, f"--workdir={tmp_path / 'run'}"), *needles)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["train", "eval", "status"])
def test_workdir_that_is_a_file(trap, tmp_path, mode):
    workdir = tmp_path / "run"
    workdir.write_bytes(b"not a directory\n")
    before = snapshot(tmp_path)
    config = WIDTH_SWEEP if mode == "status" else B0
    proc = launch(trap, *config, f"--workdir={workdir}", f"--mode={mode}")
    assert_one_error_line(proc, f"--workdir={workdir}", "is a file, not a directory")
    assert snapshot(tmp_path) == before


def test_workdir_below_a_file(trap, tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    before = snapshot(tmp_path)
    proc = launch(trap, *B0, f"--workdir={tmp_path / 'file' / 'run'}")
    assert_one_error_line(proc, f"{tmp_path / 'file'} is a file", "another path")
    assert snapshot(tmp_path) == before


@pytest.fixture
def readable_tmp():
    """A temporary directory other users can enter (pytest's tmp_path lies below a private one)."""
    base = Path(tempfile.mkdtemp(prefix="effscale_cli_"))
    base.chmod(0o755)
    yield base
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755)  # so that the read-only directory can be removed
    shutil.rmtree(base)


@pytest.mark.parametrize("mode,new", [("train", False), ("eval", False), ("train", True)])
def test_read_only_workdir(trap, readable_tmp, mode, new):
    """A workdir (or, for a new one, its parent) the user cannot write to.

    Root writes through permission bits, so as root the probe runs as user nobody (setpriv).
    """
    user = None
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permission bits do not stop root's writes")
        user = NOBODY
    base = readable_tmp
    readonly = base / "ro"
    readonly.mkdir()
    (readonly / "result.json").write_text("{}\n")
    readonly.chmod(0o555)
    before = snapshot(base)
    workdir = readonly / "run" if new else readonly
    proc = launch(trap, *B0, f"--workdir={workdir}", f"--mode={mode}", user=user)
    assert_one_error_line(proc, f"--workdir={workdir}", f"{readonly} is not writable")
    assert snapshot(base) == before


# ----------------------------------------------------------------------------- the checks, in process


def test_parse_shard():
    assert parse_shard(None) == parse_shard("") == (0, 1)
    assert parse_shard("2/8") == (2, 8) and parse_shard(" 0 / 1 ") == (0, 1)
    for text in ("2/2", "-1/2", "a/b", "1/0", "1", "1/2/3", "1.0/2"):
        with pytest.raises(ValueError, match="--sweep_shard="):
            parse_shard(text)


def test_config_argument_and_overrides():
    argv = ["launch.py", "--config", "a.py:x", "--config.model.width=2", "--noconfig.train.ema", "--config=b.py"]
    assert cli.config_argument(argv) == "b.py"
    assert cli.config_argument(["launch.py", "--mode=info"]) is None
    assert cli.override_paths(argv) == ["model.width", "train.ema"]


def test_unknown_field():
    config = ml_collections.ConfigDict({"model": {"width": 1.0, "depth": 1.0}, "train": {"steps": 1}})
    assert cli.unknown_field(config, "model.width") is None
    assert cli.unknown_field(config, "model.widht") == (
        "config.model has no field 'widht'. Did you mean \"width\"? Its fields: depth, width."
    )
    assert cli.unknown_field(config, "optim.lr") == "config has no field 'optim'. Its fields: model, train."
    assert cli.unknown_field(config, "train.steps.x") == "config.train.steps is a value, not a group of fields"


def test_one_line_puts_the_config_files_own_error_in_place_of_its_traceback():
    """absl wraps ml_collections' error, which wraps the config file's own: the chain as Python builds it."""
    wrapped = ValueError("Error whilst parsing config file:\n\nTraceback ...")
    wrapped.__context__ = ValueError("Unknown preset 'b9':\n  choose b0")
    outer = RuntimeError("flag --config=c.py:b9: Error whilst parsing config file:\n\nTraceback ...")
    outer.__context__ = wrapped
    assert cli.one_line(outer) == "--config=c.py:b9: Unknown preset 'b9': choose b0"
    plain = ValueError("flag --mode=x: value should be one of <a|b>")
    assert cli.one_line(plain) == "--mode=x: value should be one of <a|b>"


def test_check_workdir(tmp_path):
    cli.check_workdir(str(tmp_path), writes=True, flag="--workdir")
    cli.check_workdir(str(tmp_path / "new" / "run"), writes=True, flag="--workdir")
    (tmp_path / "file").write_text("")
    with pytest.raises(cli.CommandLineError, match="is a file, not a directory"):
        cli.check_workdir(str(tmp_path / "file"), writes=False, flag="--workdir")
    with pytest.raises(cli.CommandLineError, match="is a file, so no directory"):
        cli.check_workdir(str(tmp_path / "file" / "run"), writes=True, flag="--workdir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
