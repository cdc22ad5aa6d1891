"""What a user submits to run a sweep on a cluster: --mode=launch --launcher=slurm|k8s|tpu.

Each launcher is a pure function of (config file argument, workdir, number of shards, sweep name)
returning the text to submit: a SLURM array script (`slurm`), a Kubernetes Indexed Job (`k8s`) or
the gcloud commands of one Cloud TPU slice per shard (`tpu`). Every task runs
``launch.py --sweep_shard`` on its share (effscale.shard); all of them write into the one workdir,
which must be a filesystem every task reaches.
"""

from __future__ import annotations

import re

from effscale.shard import AUTO, CLAIM, parse_shard

KINDS = ("slurm", "k8s", "tpu")
# One task per point keeps each task's wall time one point's; past 64 the scheduler's queue (and
# the quota of TPU slices) usually binds first, and a point per task buys no more speed.
MAX_DEFAULT_SHARDS = 64


def num_shards(requested: int | None, num_points: int, sweep_shard: str | None = None) -> int:
    """The number of tasks: --num_shards, else n of --sweep_shard=i/n, else one per point (at most
    MAX_DEFAULT_SHARDS)."""
    if sweep_shard in (AUTO, CLAIM):
        raise ValueError(
            f"--sweep_shard={sweep_shard}: --mode=launch gives each task its shard; set the number of tasks "
            "with --num_shards=N (or --sweep_shard=i/N)."
        )
    flag = f"--num_shards={requested}"
    if sweep_shard:
        n = parse_shard(sweep_shard)[1]
        if requested is not None and requested != n:
            raise ValueError(f"--num_shards={requested} and --sweep_shard={sweep_shard} disagree: give one of them.")
        requested, flag = n, f"--sweep_shard={sweep_shard}"
    if requested is None:
        return min(num_points, MAX_DEFAULT_SHARDS)
    if not 1 <= requested <= num_points:
        raise ValueError(
            f"{flag}: the number of shards must be 1 to {num_points}, the sweep's number of points "
            "(more shards than points would start tasks with nothing to run)."
        )
    return requested


def job_name(sweep: str, limit: int = 40) -> str:
    """'effscale-<sweep>' with only lowercase letters, digits and '-': valid for SLURM, Kubernetes and TPU names."""
    slug = re.sub(r"[^a-z0-9]+", "-", sweep.lower()).strip("-") or "sweep"
    return f"effscale-{slug}"[:limit].rstrip("-")


def launch_args(config_arg: str, workdir: str) -> list[str]:
    """The arguments of `python` that every task shares (the shard comes after them)."""
    return ["launch.py", "--config", config_arg, "--workdir", workdir]


def render(kind: str, config_arg: str, workdir: str, shards: int, sweep: str) -> str:
    """The text to submit for `kind` (one of KINDS): `shards` tasks of the sweep `sweep` into `workdir`."""
    if shards < 1:
        raise ValueError(f"--num_shards={shards}: must be at least 1.")
    if kind == "slurm":
        from effscale.launchers import slurm

        return slurm.render(config_arg, workdir, shards, sweep)
    if kind == "k8s":
        from effscale.launchers import k8s

        return k8s.render(config_arg, workdir, shards, sweep)
    if kind == "tpu":
        from effscale.launchers import tpu

        return tpu.render(config_arg, workdir, shards, sweep)
    raise ValueError(f"--launcher={kind}: must be one of {', '.join(KINDS)}.")
