"""--sweep_shard=auto against the variables each scheduler sets, and the rule for joining a multi-host job."""

from __future__ import annotations

import json
import textwrap

import pytest
from train_support import launch

from effscale import parallel, shard, sweep

POINTS = list(range(7))


def _slurm(task: int, low: int, high: int, step: int, count: bool = True) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_STEP": str(step)}
    if count:
        env["SLURM_ARRAY_TASK_COUNT"] = str(len(range(low, high + 1, step)))
    else:
        env["SLURM_ARRAY_TASK_MAX"] = str(high)
    return env


@pytest.mark.parametrize(("low", "high", "step"), [(0, 3, 1), (1, 4, 1), (5, 11, 2)])
@pytest.mark.parametrize("count", [True, False])
def test_slurm_arrays_from_any_minimum_and_step_cover_every_point_once(low, high, step, count):
    tasks = range(low, high + 1, step)
    shares = [shard.from_environment(_slurm(t, low, high, step, count)) for t in tasks]
    assert shares == [(k, len(tasks)) for k in range(len(tasks))]
    covered = sorted(p for i, n in shares for p in sweep.share(POINTS, i, n))
    assert covered == POINTS


def test_kubernetes_indexed_job_and_the_generic_variable():
    env = {"JOB_COMPLETION_INDEX": "2", shard.NUM_SHARDS_ENV: "3"}
    assert shard.from_environment(env) == (2, 3)
    # A TPU slice's hosts run one shard together: their worker index is not a shard.
    assert shard.from_environment({"TPU_WORKER_ID": "1", shard.SHARD_ENV: "0/4"}) == (0, 4)
    assert shard.from_environment({shard.SHARD_ENV: "1/5"}) == (1, 5)
    assert shard.resolve_shard("auto", {shard.SHARD_ENV: "1/5"}) == (1, 5)
    assert shard.resolve_shard("3/8", {}) == (3, 8)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "EFFSCALE_NUM_SHARDS", "EFFSCALE_SHARD=i/n", "launch"]),
        ({"JOB_COMPLETION_INDEX": "1"}, ["EFFSCALE_NUM_SHARDS=None", "whole number"]),
        ({"JOB_COMPLETION_INDEX": "3", "EFFSCALE_NUM_SHARDS": "3"}, ["shard 3 of 3"]),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, ["SLURM_ARRAY_TASK_ID='x'"]),
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            ["not on the array"],
        ),  # fmt: skip
        ({"SLURM_ARRAY_TASK_ID": "0"}, ["SLURM_ARRAY_TASK_COUNT or _MAX"]),
        ({"EFFSCALE_SHARD": "2/2"}, ["EFFSCALE_SHARD='2/2'", "0 <= i < n"]),
    ],
)
def test_what_is_missing_or_wrong_is_named(env, words):
    with pytest.raises(ValueError) as err:
        shard.from_environment(env)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_claim_has_no_share():
    with pytest.raises(ValueError, match="claims points one at a time"):
        shard.resolve_shard("claim", {})


def test_auto_without_a_scheduler_is_one_line_before_jax_starts(tmp_path):
    proc = launch("--config", "configs/sweeps/width.py", f"--workdir={tmp_path}", "--sweep_shard=auto")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "effscale: error: --sweep_shard=auto found no shard" in err and "SLURM_ARRAY_TASK_ID" in err
    assert not any(tmp_path.iterdir())


_SWEEP_CONFIG = textwrap.dedent(
    """
    import train_support
    from effscale import sweep

    def get_config():
        c = train_support.tiny_config(steps=1)
        c.sweep = sweep.block("tiny", [sweep.point(f"w{k}", "width", {"model.width": 1.0 + k / 4}) for k in range(3)])
        return c
    """
)


_SRUN_8 = {"SLURM_NTASKS": "8", "SLURM_PROCID": "3"}  # one of eight processes of an srun step


@pytest.mark.parametrize(
    ("env", "sweep_shard", "explicit", "joins"),
    [
        ({}, None, None, False),
        (_SRUN_8, None, None, True),  # a single run (or a whole sweep) over eight processes
        (_SRUN_8, "0/1", None, True),  # one shard of one is the whole sweep
        (_SRUN_8, "3/8", None, False),
        (_SRUN_8, "auto", None, False),
        (_SRUN_8, "claim", None, False),
        ({**_SRUN_8, "SLURM_ARRAY_TASK_ID": "2"}, None, None, False),  # array tasks are independent jobs
        ({**_SRUN_8, "SLURM_ARRAY_TASK_ID": "2"}, "auto", True, True),  # --multihost decides when given
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, None, False, False),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "2/4", None, False),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, None, None, True),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, None, None, True),
        ({"TPU_WORKER_HOSTNAMES": "t0"}, None, None, False),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "1/2", True, True),  # the TPU launcher's command on a slice
    ],
)
def test_the_rule_for_joining_a_multihost_job(env, sweep_shard, explicit, joins):
    assert parallel.multihost_from_env(env, sweep_shard=sweep_shard, explicit=explicit) is joins


def test_shards_started_as_one_srun_stay_independent_jobs(tmp_path):
    """srun -n 8 inside an array task: SLURM_NTASKS=8 also reads as one multi-host job; sharded, it must not,
    unless --multihost says so."""
    (tmp_path / "tiny_sweep.py").write_text(_SWEEP_CONFIG)
    probe = tmp_path / "initialize_called"
    # The subprocess's jax.distributed.initialize leaves a mark and ends the process (status 7) instead of
    # waiting for a coordinator.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, jax\n"
        "def _mark(*a, **k):\n"
        f"    open({str(probe)!r}, 'w').close()\n"
        "    os._exit(7)\n"
        "jax.distributed.initialize = _mark\n"
    )  # fmt: skip
    env = {"PYTHONPATH": f"{tmp_path}:{launch.__globals__['ROOT'] / 'tests'}", **_SRUN_8, "SLURM_JOB_ID": "4242",
           "SLURM_STEP_NODELIST": "node[1-8]", "SLURM_LOCALID": "0", "SLURM_ARRAY_TASK_ID": "6",
           "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}  # fmt: skip
    args = ("--config", str(tmp_path / "tiny_sweep.py"), f"--workdir={tmp_path / 'sweep'}", "--sweep_shard=auto")
    sharded = launch(*args, env=env)
    _, err = sharded.communicate(timeout=300)
    assert not probe.exists(), "a shard joined a multi-host job"
    assert sharded.returncode == 0, err[-3000:]
    done = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/result.json"))
    assert done == ["w1"], err[-3000:]  # array task 6 of 5..7: shard 1 of 3, the second point only
    assert json.loads((tmp_path / "sweep" / "w1" / "result.json").read_text())["process_count"] == 1

    explicit = launch(*args, "--multihost", env=env)
    _, err = explicit.communicate(timeout=300)
    assert explicit.returncode == 7 and probe.exists(), err[-3000:]
