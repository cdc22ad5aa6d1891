"""Device mesh, batch sharding and multi-host initialisation (data parallel).

One mesh axis, 'data', over every device of every process. Parameters and
optimizer state are replicated; batches are split along their first axis. Under
`jax.jit` the BatchNorm statistics of a batch-sharded array are therefore taken
over the global batch. Each process feeds only its own share of a batch;
`global_batch` stitches the shares into one global array.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from effscale import shard

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several": set by the usual
# launchers (jax's own coordinator variable, SLURM, Open MPI) or by a Cloud TPU slice.
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def multihost_from_env(
    environ: Mapping[str, str] | None = None, *, sweep_shard: str | None = None, explicit: bool | None = None
) -> bool:
    """Whether this process joins a multi-process JAX job (jax.distributed) before anything runs.

    The rule, in order:
    1. `explicit` (--multihost / --nomultihost) decides when given.
    2. Independent tasks never join: a sharded sweep (`sweep_shard` 'auto', 'claim' or i/n with n > 1)
       and a SLURM array task (SLURM_ARRAY_TASK_ID set). `srun -n 8 ... --sweep_shard=auto` is eight
       sweeps, not one job of eight processes, though SLURM_NTASKS=8 is what a multi-host job sees too.
    3. Otherwise the environment decides (`_MULTIHOST_ENV`): SLURM_NTASKS or OMPI_COMM_WORLD_SIZE above
       1, JAX_COORDINATOR_ADDRESS set, or TPU_WORKER_HOSTNAMES naming more than one host.
    """
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    if _independent_shard(sweep_shard) or "SLURM_ARRAY_TASK_ID" in env:
        return False
    if env.get("SLURM_NTASKS", "1") not in ("", "1"):
        return True
    if env.get("OMPI_COMM_WORLD_SIZE", "1") not in ("", "1"):
        return True
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return bool(env.get("JAX_COORDINATOR_ADDRESS"))


def _independent_shard(text: str | None) -> bool:
    """--sweep_shard names one of several independent shares ('0/1' and no flag are the whole sweep)."""
    if not text:
        return False
    if text in (shard.AUTO, shard.CLAIM):
        return True
    return shard.parse_shard(text)[1] > 1


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process JAX job; call before any other JAX computation.

    Without arguments `jax.distributed.initialize` detects the cluster (Cloud TPU,
    SLURM, Open MPI, JAX_COORDINATOR_ADDRESS). On CPU the cross-process
    collectives need gloo, which must be chosen before initialising.
    """
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def make_mesh() -> jax.sharding.Mesh:
    """A one-axis ('data') mesh over all devices of all processes.

    Auto axis type: the compiler propagates the batch sharding through the model
    (jax's default Explicit type would demand sharding annotations inside flax layers).
    """
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Split along the leading (batch) axis, everything else whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every device holds the whole value (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(name: str, global_batch: int, device_count: int, process_count: int) -> int:
    """Validates a global batch size for the mesh and returns the per-process share.

    Raises ValueError naming the field and a valid choice, before anything compiles.
    """
    if global_batch < 1:
        raise ValueError(f"{name}={global_batch} must be at least 1.")
    if global_batch % device_count:
        fix = -(-global_batch // device_count) * device_count
        raise ValueError(
            f"{name}={global_batch} is a global batch size and must be divisible by the device count "
            f"({device_count}); use e.g. --config.{name}={fix}."
        )
    if global_batch % process_count:  # only reachable with unequal devices per process
        raise ValueError(f"{name}={global_batch} must be divisible by the process count ({process_count}).")
    return global_batch // process_count


def global_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's share of a batch into global, batch-sharded arrays."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def describe() -> dict[str, Any]:
    """Device kind and counts, for the run record."""
    return {
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def barrier(name: str, timeout_s: float = 1800.0) -> None:
    """Waits until every process reaches `name`; a no-op in a single-process run.

    Goes through the coordination service (gRPC, with this timeout) rather than a device
    collective: XLA:CPU creates its gloo context at the first cross-process collective and waits
    only 30 s for the peers there, which a host that compiles a minute longer than another
    exceeds. Call it after compiling, before the first step. `name` must be unique per call.
    """
    if jax.process_count() == 1:
        return
    # jax has no public barrier with a timeout; this is the client jax.distributed.initialize made.
    from jax._src import distributed

    client = distributed.global_state.client
    if client is not None:
        client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))
