"""--mode=launch: each launcher's text parses (yaml, bash -n), runs against stand-ins for the scheduler's
commands, and leads its tasks to shards that cover every point of a sweep exactly once."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from effscale import launchers, shard, sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/sweeps/width.py:seeds=2"  # an argument, so the config string is more than a path
WORKDIR = "/shared/sweeps/width with space"  # a value that needs quoting


def _points() -> list[str]:
    config = importlib.import_module("configs.sweeps.width").get_config("seeds=2")
    return [p.name for p in sweep.points_of(config)]


def _covered(shares: list[tuple[int, int]], n: int) -> list[str]:
    """Every point the tasks' shares run, checked to be n distinct shards of n."""
    assert sorted(shares) == [(i, n) for i in range(n)]
    return sorted(p for i, count in shares for p in sweep.share(_points(), i, count))


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_k8s_indexed_job_parses_and_its_indexes_cover_the_sweep(n):
    (manifest,) = yaml.safe_load_all(launchers.render("k8s", CONFIG, WORKDIR, n, "width"))
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == n
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[shard.NUM_SHARDS_ENV] == str(n)
    assert container["command"] == [
        "python",
        "launch.py",
        "--config",
        CONFIG,
        "--workdir",
        WORKDIR,
        "--sweep_shard=auto",
    ]
    assert container["volumeMounts"][0]["mountPath"] == WORKDIR  # the tasks share the workdir
    shares = [shard.from_environment({**env, "JOB_COMPLETION_INDEX": str(k)}) for k in range(n)]
    assert _covered(shares, n) == sorted(_points())


def test_k8s_bucket_workdir_mounts_no_volume():
    (manifest,) = yaml.safe_load_all(launchers.render("k8s", CONFIG, "gs://bucket/sweeps/width", 2, "width"))
    pod = manifest["spec"]["template"]["spec"]
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]
    assert pod["containers"][0]["command"][5] == "gs://bucket/sweeps/width"


@pytest.mark.parametrize("n", [1, 4, 10])
def test_slurm_script_is_bash_and_its_array_covers_the_sweep(n):
    script = launchers.render("slurm", CONFIG, WORKDIR, n, "width")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    low, high = map(int, re.search(r"^#SBATCH --array=(\d+)-(\d+)$", script, re.M).groups())
    ids = range(low, high + 1)
    assert len(ids) == n
    shares = [
        shard.from_environment(
            {"SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_MAX": str(high),
             "SLURM_ARRAY_TASK_COUNT": str(n), "SLURM_ARRAY_TASK_STEP": "1"}
        )
        for t in ids
    ]  # fmt: skip
    assert _covered(shares, n) == sorted(_points())


def _slurm_task(tmp_path: Path, python_body: str) -> tuple[subprocess.Popen, Path]:
    """The slurm script started as array task 77_3 in a session of its own (SLURM signals the job's
    processes), with `python` and `scontrol` replaced by recorders."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    _executable(bin_dir / "python", f'#!/bin/bash\nprintf "%s\\n" "$@" > "$LOG/args"\n{python_body}\n')
    _executable(bin_dir / "scontrol", '#!/bin/bash\nprintf "%s\\n" "$@" > "$LOG/scontrol"\n')
    script = tmp_path / "task.sh"
    script.write_text(launchers.render("slurm", CONFIG, WORKDIR, 5, "width"))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LOG": str(log),
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "3",
    }
    return subprocess.Popen(["bash", str(script)], env=env, start_new_session=True), log


# The stand-in saves on SIGTERM as the trainer does: exit 128 + 15.
_SAVES_ON_TERM = (
    'trap \'echo TERM >> "$LOG/signal"; exit 143\' TERM\ntouch "$LOG/started"\nwhile true; do sleep 0.05; done'
)


def _started(task: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 20
    while not (log / "started").exists():
        assert time.time() < deadline and task.poll() is None, "python never started"
        time.sleep(0.05)


def test_slurm_time_limit_notice_saves_and_requeues_the_task(tmp_path):
    task, log = _slurm_task(tmp_path, _SAVES_ON_TERM)
    _started(task, log)
    task.send_signal(signal.SIGUSR1)  # what `--signal=B:USR1@120` sends: to the batch shell only
    assert task.wait(timeout=20) == 143
    assert (log / "signal").read_text() == "TERM\n"
    assert (log / "scontrol").read_text().split() == ["requeue", "77_3"]
    assert (log / "args").read_text().splitlines() == [
        "launch.py", "--config", CONFIG, "--workdir", WORKDIR, "--sweep_shard=auto"
    ]  # fmt: skip


def test_slurm_scancel_saves_without_requeueing(tmp_path):
    task, log = _slurm_task(tmp_path, _SAVES_ON_TERM)
    _started(task, log)
    os.killpg(task.pid, signal.SIGTERM)  # scancel: TERM to every process of the job
    task.wait(timeout=20)
    deadline = time.time() + 20
    while not (log / "signal").exists():  # the stand-in python saved
        assert time.time() < deadline, "python never got TERM"
        time.sleep(0.05)
    time.sleep(0.5)  # room for a wrong requeue to show
    assert not (log / "scontrol").exists()


@pytest.mark.parametrize("status", [0, 1, 143])
def test_slurm_script_requeues_only_after_the_notice(tmp_path, status):
    task, log = _slurm_task(tmp_path, f"exit {status}")
    assert task.wait(timeout=20) == status
    assert not (log / "scontrol").exists()


def _run_tpu_script(tmp_path: Path, n: int, failed: str = "") -> tuple[list[list[str]], subprocess.CompletedProcess]:
    """The tpu script run against a stand-in gcloud that records each call (arguments NUL-separated) and
    reports every queued resource ACTIVE but `failed`."""
    script = launchers.render("tpu", CONFIG, WORKDIR, n, "width")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    _executable(
        bin_dir / "gcloud",
        '#!/bin/bash\nprintf "%s\\0" "$@" > "$LOG/call-$(ls "$LOG" | wc -l)"\n'
        'if [ "$4" = describe ]; then if [ "$5" = "$FAILED" ]; then echo FAILED; else echo ACTIVE; fi; fi\n',
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LOG": str(log), "FAILED": failed}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    calls = [(log / f"call-{k}").read_text().rstrip("\0").split("\0") for k in range(len(list(log.iterdir())))]
    return calls, done


def _sshes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"]]


def test_tpu_script_starts_one_multihost_shard_per_slice(tmp_path):
    n = 4
    calls, done = _run_tpu_script(tmp_path, n)
    assert done.returncode == 0, done.stderr
    sshes = _sshes(calls)
    creates = [c for c in calls if c[:4] == ["compute", "tpus", "queued-resources", "create"]]
    assert [c[4] for c in creates] == [c[4] for c in sshes] and len(set(c[4] for c in creates)) == n
    shares = []
    for call in sshes:
        assert "--worker=all" in call  # every host of the slice runs the shard
        (command,) = [a.removeprefix("--command=") for a in call if a.startswith("--command=")]
        setup = "cd effscale && source .venv/bin/activate && "  # the script's SETUP, run on the host first
        assert command.startswith(setup)
        words = shlex.split(command.removeprefix(setup))
        assert words[:7] == ["nohup", "python", "launch.py", "--config", CONFIG, "--workdir", WORKDIR]
        assert "--multihost" in words  # the hosts of one slice are one JAX job
        (value,) = [w.removeprefix("--sweep_shard=") for w in words if w.startswith("--sweep_shard=")]
        shares.append(shard.resolve_shard(value, {}))
    assert _covered(shares, n) == sorted(_points())


def test_tpu_slice_that_fails_skips_only_its_own_shard(tmp_path):
    calls, done = _run_tpu_script(tmp_path, 3, failed="effscale-width-1")
    assert [c[4] for c in _sshes(calls)] == ["effscale-width-0", "effscale-width-2"]
    assert done.returncode == 0 and "effscale-width-1 is FAILED" in done.stderr


def test_number_of_shards_and_names():
    assert launchers.num_shards(None, 5) == 5
    assert launchers.num_shards(None, 200) == launchers.MAX_DEFAULT_SHARDS == 64
    assert launchers.num_shards(3, 5) == 3
    for bad in (0, 6):
        with pytest.raises(ValueError, match=f"--num_shards={bad}: the number of shards must be 1 to 5"):
            launchers.num_shards(bad, 5)
    assert launchers.num_shards(None, 5, "1/3") == 3  # --sweep_shard=i/n gives n
    assert launchers.num_shards(3, 5, "0/3") == 3
    for shard_text, words in (
        ("auto", "--sweep_shard=auto: --mode=launch gives each task its shard"),
        ("claim", "--sweep_shard=claim: --mode=launch gives each task its shard"),
        ("1/9", "--sweep_shard=1/9: the number of shards must be 1 to 5"),
    ):
        with pytest.raises(ValueError, match=words):
            launchers.num_shards(None, 5, shard_text)
    with pytest.raises(ValueError, match="--num_shards=4 and --sweep_shard=1/3 disagree"):
        launchers.num_shards(4, 5, "1/3")
    with pytest.raises(ValueError, match="--launcher=pbs: must be one of slurm, k8s, tpu"):
        launchers.render("pbs", CONFIG, WORKDIR, 2, "width")
    name = launchers.job_name("My Sweep/φ2 " + "x" * 80)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= 40
    assert name.startswith("effscale-my-sweep-2-")


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_launch_mode_prints_the_script_and_rejects_bad_commands(tmp_path):
    workdir = str(tmp_path / "W")
    # A jax that cannot be imported: --mode=launch prints text and must not start JAX.
    (tmp_path / "nojax" / "jax").mkdir(parents=True)
    (tmp_path / "nojax" / "jax" / "__init__.py").write_text("raise ImportError('--mode=launch imported jax')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "nojax")}
    for kind in launchers.KINDS:
        printed = _launch("--config", "configs/sweeps/width.py", "--workdir", workdir, "--mode=launch",
                          f"--launcher={kind}", env=env)  # fmt: skip
        assert printed.returncode == 0 and printed.stdout, printed.stderr
    ok = _launch("--config", "configs/sweeps/width.py", "--workdir", workdir, "--mode=launch", "--launcher=slurm")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("#!/bin/bash\n") and "#SBATCH --array=0-4\n" in ok.stdout  # 5 points
    assert f"--workdir {workdir} --sweep_shard=auto" in ok.stdout
    assert not Path(workdir).exists()  # printing writes nothing
    for args, words in (
        (["configs/sweeps/width.py", "--launcher=bogus"], "--launcher=bogus"),
        (["configs/sweeps/width.py"], "--launcher is missing"),
        (["configs/sweeps/width.py", "--launcher=k8s", "--num_shards=6"], "--num_shards=6"),
        (["configs/sweeps/width.py", "--launcher=k8s", "--sweep_shard=0/2", "--num_shards=3"], "disagree"),
        (["configs/sweeps/width.py", "--launcher=tpu", "--config.sweep.name=x"], "--config.sweep.name"),
        (["configs/efficientnet.py:b0", "--launcher=slurm"], "takes a sweep config"),
    ):
        bad = _launch("--config", *args, "--workdir", workdir, "--mode=launch")
        assert bad.returncode == 2 and bad.stdout == ""
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("effscale: error: ") and words in lines[0], bad.stderr
