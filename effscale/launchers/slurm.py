"""A SLURM array script: one array task per shard, requeued after its time-limit notice."""

from __future__ import annotations

import shlex

from effscale.launchers import job_name, launch_args

# SLURM's notice, to the batch shell only (B:), NOTICE_S before the time limit. USR1 and not TERM:
# `scancel` and preemption send TERM to every process of the job, and must not requeue the task.
NOTICE, NOTICE_S = "USR1", 120
# The trainer saves a checkpoint on SIGTERM and exits 128 + 15 (128 + 2 after SIGINT): effscale.training.signals.
STOP, SAVED_STATUSES = "TERM", (143, 130)


def render(config_arg: str, workdir: str, shards: int, sweep: str) -> str:
    """A bash sbatch script running `shards` array tasks of launch.py --sweep_shard=auto."""
    name = job_name(sweep)
    command = shlex.join(["python", *launch_args(config_arg, workdir), "--sweep_shard=auto"])
    saved = " || ".join(f'[ "$status" -eq {s} ]' for s in SAVED_STATUSES)
    return f"""#!/bin/bash
# {name}: {shards} array tasks, task k runs shard k of {shards}.
# Submit from the repository root: sbatch this-file.sh   (logs: {name}-<job>_<task>.out there)
# Add your site's lines (#SBATCH --partition, --gres=gpu:1, --time, --cpus-per-task) below.
#SBATCH --job-name={name}
#SBATCH --array=0-{shards - 1}
#SBATCH --requeue
#SBATCH --signal=B:{NOTICE}@{NOTICE_S}
#SBATCH --output=%x-%A_%a.out
#SBATCH --open-mode=append

# EDIT: activate the environment that holds effscale, e.g. source .venv/bin/activate

# The time-limit notice ({NOTICE}) comes to this shell only: pass it on to python as {STOP}, on which
# the trainer finishes its step, saves and exits; then queue this task again to resume from there.
# `scancel` and preemption send TERM to every process instead: python saves, this task is not requeued
# here (SLURM requeues a preempted task itself: --requeue).
notice=0
trap 'notice=1; kill -{STOP} "$child" 2>/dev/null' {NOTICE}
{command} &
child=$!
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do  # the trap interrupted wait: wait for the save to finish
  wait "$child"
  status=$?
done
if [ "$notice" -eq 1 ] && {{ {saved}; }}; then
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit "$status"
"""
