"""Cloud TPU: one queued resource (a TPU slice) per shard; every host of a slice runs that shard.

On a multi-host slice the hosts of one shard form one jax.distributed job (--multihost, started on
every worker with --worker=all); shards are separate slices. Each slice's command names its shard as
i/n: the hosts of a slice share no variable that numbers slices (TPU_WORKER_ID numbers hosts).
"""

from __future__ import annotations

import shlex

from effscale.launchers import job_name, launch_args


def render(config_arg: str, workdir: str, shards: int, sweep: str) -> str:
    """A bash script of gcloud commands: create `shards` slices, wait for each, start its shard on all hosts."""
    name = job_name(sweep)
    creates, starts = [], []
    for i in range(shards):
        node = f"{name}-{i}"
        creates.append(
            f'gcloud compute tpus queued-resources create {node} --node-id={node} --zone="$ZONE" '
            f'--accelerator-type="$TPU_TYPE" --runtime-version="$RUNTIME" $SPOT'
        )
        remote = shlex.join(["python", *launch_args(config_arg, workdir), f"--sweep_shard={i}/{shards}", "--multihost"])
        log = f"{node}.log"
        # nohup and no open terminal: the run outlives the ssh session, which returns at once.
        remote = f"nohup {remote} > {log} 2>&1 < /dev/null &"
        # `&&`: a slice that never becomes ACTIVE skips its start, not the other slices' (set -e spares an && list).
        starts.append(
            f'wait_active {node} && gcloud compute tpus tpu-vm ssh {node} --zone="$ZONE" --worker=all '
            f'--command="$SETUP && "{shlex.quote(remote)}'
        )
    return f"""#!/bin/bash
# {name}: {shards} TPU slices, slice {name}-k runs shard k of {shards}.
# The workdir must be a filesystem every host of every slice mounts at the same path (e.g. NFS).
# A preempted slice: delete its queued resource, then rerun its create and its wait_active line;
# the shard resumes from its checkpoints. Logs: <repository>/{name}-k.log on each host.
set -euo pipefail

# EDIT: zone, slice type, software version and pricing for your project's quota.
ZONE=us-central2-b
TPU_TYPE=v4-8
RUNTIME=tpu-ubuntu2204-base
SPOT=--spot  # empty for on-demand slices
# EDIT: how a host reaches the repository and its environment (run on every host before python).
SETUP='cd effscale && source .venv/bin/activate'

wait_active() {{  # a queued resource's hosts exist once it is ACTIVE
  local state
  while state=$(gcloud compute tpus queued-resources describe "$1" --zone="$ZONE" --format='value(state.state)'); do
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED) echo "$1 is $state: delete it and rerun its two lines" >&2; return 1 ;;
    esac
    sleep 30
  done
  return 1
}}

{chr(10).join(creates)}

{chr(10).join(starts)}
"""
