"""Transfer phases: stretches of training with one freeze and one optimizer each.

`config.transfer.phases` lists them (e.g. the head alone, then the top blocks at a lower
learning rate); without it a run is one phase of train.num_epochs / num_steps with
transfer.freeze. Each phase has its own optimizer (state only for what trains, fresh at the
phase's start), its own compiled step and, for frozen BatchNorms, its own module: its
`PhaseParts`, built once per run by `phase_parts`. A checkpoint's phase is the one its step
falls in (phase k trains steps start_k+1 .. end_k; the boundaries are part of the workdir's
fingerprint, so they cannot change under a run), which is all a resume needs: the optimizer
state is restored in the shape of that phase.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import ml_collections
import optax

from effscale import model, optim, spec, transfer
from effscale.training.fingerprint import plain

# The train.* fields a phase may override: what builds its optimizer and schedule.
PHASE_TRAIN_KEYS = (
    "learning_rate", "lr_schedule", "warmup_epochs", "decay_epochs", "decay_rate",
    "optimizer", "momentum", "rmsprop_decay", "epsilon", "weight_decay",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of training with one freeze and one optimizer: it trains steps start+1 .. end."""

    index: int
    start: int
    end: int
    freeze: str
    train: Any  # config.train with the phase's overrides


@dataclasses.dataclass(frozen=True)
class PhaseParts:
    """What a phase compiles its step from."""

    module: model.EfficientNet
    tx: optax.GradientTransformation
    lr: optax.Schedule  # of the phase's own step count (its optimizer starts at 0)
    labels: Any  # param_labels, or None when everything trains
    frozen_bn: frozenset[str]


def resolve_phases(config: ml_collections.ConfigDict, net: spec.NetworkSpec, steps_per_epoch: int) -> tuple[Phase, ...]:
    """`config.transfer.phases` as `Phase`s (one phase of train.num_epochs / num_steps when empty).

    Raises ValueError for an unknown key, a bad length, or a freeze specification naming
    something the network lacks (the message lists the valid names).
    """
    tr = config.get("transfer")
    freeze = tr.freeze if tr is not None else "none"
    listed = [plain(p) for p in tr.phases] if tr is not None and tr.phases else []
    if tr is not None and tr.batchnorm not in transfer.BN_MODES:
        raise ValueError(f"transfer.batchnorm must be one of {transfer.BN_MODES}, got {tr.batchnorm!r}.")
    if not listed:
        transfer.frozen_count(net, freeze)  # validates
        return (Phase(0, 0, optim.total_steps(config.train, steps_per_epoch), freeze, config.train),)
    out, start = [], 0
    for k, p in enumerate(listed):
        phase = _listed_phase(config.train, net, k, p, start, freeze, steps_per_epoch)
        out.append(phase)
        start = phase.end
    return tuple(out)


def _listed_phase(
    train: ml_collections.ConfigDict,
    net: spec.NetworkSpec,
    k: int,
    p: dict[str, Any],
    start: int,
    freeze: str,
    steps_per_epoch: int,
) -> Phase:
    """Phase `k` of the list, starting after step `start`; `freeze` is its default."""
    unknown = sorted(set(p) - {"freeze", "epochs", "steps", *PHASE_TRAIN_KEYS})
    if unknown:
        raise ValueError(
            f"transfer.phases[{k}]: unknown keys {unknown}; expected freeze, epochs or steps, and any of "
            f"{', '.join(PHASE_TRAIN_KEYS)}."
        )
    if ("epochs" in p) == ("steps" in p):
        raise ValueError(f"transfer.phases[{k}] needs exactly one of 'epochs' and 'steps'.")
    steps = int(p["steps"]) if "steps" in p else int(math.ceil(float(p["epochs"]) * steps_per_epoch))
    if steps < 1:
        raise ValueError(f"transfer.phases[{k}] is shorter than one step.")
    t = copy.deepcopy(train)
    with t.unlocked():
        t.update({key: p[key] for key in PHASE_TRAIN_KEYS if key in p})
    optim.check(t)
    f = str(p.get("freeze", freeze))
    try:
        transfer.frozen_count(net, f)
    except ValueError as e:
        raise ValueError(f"transfer.phases[{k}]: {e}") from e
    return Phase(k, start, start + steps, f, t)


def phase_of(phases: tuple[Phase, ...], step: int) -> Phase:
    """The phase whose optimizer a checkpoint at `step` holds: the one that trained that step (0: the first)."""
    return next((p for p in phases if step <= p.end), phases[-1])


def phase_parts(
    phase: Phase,
    *,
    config: ml_collections.ConfigDict,
    net: spec.NetworkSpec,
    module: model.EfficientNet,
    params: Any,
    steps_per_epoch: int,
) -> PhaseParts:
    """`phase`'s optimizer, schedule, frozen parameters and module.

    `module` is the run's own (no frozen BatchNorm), used when the phase freezes none; `params`
    the (abstract) parameters the freeze labels, needed only when the phase freezes something.
    """
    lr = optim.schedule(phase.train, steps_per_epoch, phase.end - phase.start)
    tx = optim.create(phase.train, lr)
    mode = config.transfer.batchnorm if config.get("transfer") is not None else "frozen"
    frozen_bn = transfer.frozen_batchnorm(net, phase.freeze, mode=mode)
    labels = None
    if phase.freeze != "none":
        labels = transfer.param_labels(net, params, phase.freeze)
        tx = transfer.freeze_optimizer(tx, labels)
    if frozen_bn:
        module = model.create(net, config.model, frozen_bn)
    return PhaseParts(module, tx, lr, labels, frozen_bn)
