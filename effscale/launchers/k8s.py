"""A Kubernetes Indexed Job: completion index k runs shard k; a preempted index restarts and resumes."""

from __future__ import annotations

import json
import posixpath

from effscale.launchers import job_name, launch_args
from effscale.shard import NUM_SHARDS_ENV

# The repository's directory in the image (the container's working directory).
REPO_IN_IMAGE = "/effscale"
GRACE_S = 120  # SIGTERM to SIGKILL: the trainer's last step and checkpoint save


def _q(value: str | int) -> str:
    """A YAML scalar for `value` (JSON strings are YAML flow scalars)."""
    return json.dumps(str(value))


def render(config_arg: str, workdir: str, shards: int, sweep: str) -> str:
    """A batch/v1 Job of `shards` indexes, each running launch.py --sweep_shard=auto."""
    name = job_name(sweep, limit=50)  # pods are named <job>-<index>-<suffix>: leave room under 63
    command = ["python", *launch_args(config_arg, workdir), "--sweep_shard=auto"]
    storage, mounts, volumes = _workdir_storage(workdir)
    return f"""# {name}: {shards} indexes, index k runs shard k of {shards}.
# EDIT before `kubectl apply -f`: IMAGE (an image holding the repository at {REPO_IN_IMAGE} and
# its environment), {storage},
# and the resources your cluster needs (requests, GPUs or TPUs, node selectors).
# restartPolicy Never: a failed or evicted pod is replaced by a new pod of the same index, which
# resumes from the checkpoints in the workdir; evictions and preemptions (DisruptionTarget) do not
# count against backoffLimitPerIndex, and exit status 2 (a bad config or command line) fails its
# index at once. backoffLimitPerIndex needs Kubernetes 1.29 or later.
apiVersion: batch/v1
kind: Job
metadata:
  name: {_q(name)}
spec:
  completionMode: Indexed
  completions: {shards}
  parallelism: {shards}
  backoffLimitPerIndex: 3
  podFailurePolicy:
    rules:
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
      - action: FailIndex
        onExitCodes:
          operator: In
          values: [2]
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: {GRACE_S}
      containers:
        - name: effscale
          image: IMAGE
          workingDir: {_q(REPO_IN_IMAGE)}
          command: [{", ".join(_q(c) for c in command)}]
          env:
            - name: {NUM_SHARDS_ENV}
              value: {_q(shards)}
{mounts}{volumes}"""


def _workdir_storage(workdir: str) -> tuple[str, str, str]:
    """The EDIT note, the container's volumeMounts and the pod's volumes for `workdir`.

    A bucket (a URL such as gs://...) needs no volume, only credentials in the pods; a path is a
    PersistentVolumeClaim mounted there (relative paths under the repository, the working directory).
    """
    if "://" in workdir:
        return "credentials that let the pods write the workdir's bucket (e.g. Workload Identity)", "", ""
    mount = posixpath.join(REPO_IN_IMAGE, workdir)  # an absolute workdir stays as it is
    mounts = f"""          volumeMounts:
            - name: workdir
              mountPath: {_q(mount)}
"""
    volumes = """      volumes:
        - name: workdir
          persistentVolumeClaim:
            claimName: effscale-workdir
"""
    return "the PersistentVolumeClaim (ReadWriteMany: every index writes the one workdir)", mounts, volumes
