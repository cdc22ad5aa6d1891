"""A run's setup: the resolved config, mesh, batch sizes, phases and modules, made once and frozen.

`make_setup` does every check that needs no compile (config fields, batch sizes against the
devices, the dataset's size, the phases' freeze specifications) and builds each phase's
optimizer and module up front, so nothing later in the run decides or caches anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding

from effscale import model, parallel, spec
from effscale.augment import checks
from effscale.training.phases import Phase, PhaseParts, phase_of, phase_parts, resolve_phases
from effscale.training.resolve import resolve


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Everything a run is made of before it has a state; `parts[k]` belongs to `phases[k]`."""

    config: ml_collections.ConfigDict  # resolved: model.num_classes filled in
    info: Any  # effscale.data.DatasetInfo
    net: spec.NetworkSpec
    module: model.EfficientNet  # initialisation and evaluation
    mesh: Mesh
    replicated: NamedSharding
    batch_sharding: NamedSharding
    devices: int
    processes: int
    local_batch: int  # this process's share of train.batch_size
    local_eval_batch: int  # and of train.eval_batch_size
    steps_per_epoch: int
    phases: tuple[Phase, ...]
    parts: tuple[PhaseParts, ...]

    @property
    def total_steps(self) -> int:
        return self.phases[-1].end

    def phase_of(self, step: int) -> Phase:
        """The phase whose optimizer a checkpoint at `step` holds."""
        return phase_of(self.phases, step)

    def parts_of(self, phase: Phase) -> PhaseParts:
        return self.parts[phase.index]


def make_setup(config: ml_collections.ConfigDict) -> RunSetup:
    """Resolves and checks `config` for this job's devices; raises ValueError before anything compiles."""
    config, info, net = resolve(config)
    t = config.train
    devices, processes = jax.device_count(), jax.process_count()
    # Both batch sizes are checked before anything is compiled or read.
    local_batch = parallel.check_batch_size("train.batch_size", t.batch_size, devices, processes)
    local_eval_batch = parallel.check_batch_size("train.eval_batch_size", t.eval_batch_size, devices, processes)
    checks.check_train(t, devices)
    steps_per_epoch = info.train_examples // t.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"train.batch_size={t.batch_size} exceeds the {info.train_examples} training examples of {info.name}."
        )
    phases = resolve_phases(config, net, steps_per_epoch)
    module = model.create(net, config.model)
    # Freeze labels follow the parameter tree: its shapes only, and only when a phase freezes something.
    freezes = any(p.freeze != "none" for p in phases)
    params = model.abstract_variables(module)["params"] if freezes else None
    parts = tuple(
        phase_parts(p, config=config, net=net, module=module, params=params, steps_per_epoch=steps_per_epoch)
        for p in phases
    )
    mesh = parallel.make_mesh()
    return RunSetup(
        config=config,
        info=info,
        net=net,
        module=module,
        mesh=mesh,
        replicated=parallel.replicated(mesh),
        batch_sharding=parallel.batch_sharding(mesh),
        devices=devices,
        processes=processes,
        local_batch=local_batch,
        local_eval_batch=local_eval_batch,
        steps_per_epoch=steps_per_epoch,
        phases=phases,
        parts=parts,
    )
