"""The train and eval steps of a run, compiled ahead of time over its mesh.

State replicated, batches sharded along the batch axis, the state's buffers donated. A batch
of another shape is an error, never a silent recompile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from effscale.augment import mix
from effscale.training.phases import Phase
from effscale.training.setup import RunSetup
from effscale.training.state import abstract_state
from effscale.training.steps import Batch, TrainState, eval_step, train_step

TrainFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
EvalFn = Callable[[Any, Batch], dict[str, jax.Array]]


def _abstract_batch(setup: RunSetup, batch: int, masked: bool) -> dict[str, jax.ShapeDtypeStruct]:
    r, c, sharding = setup.net.resolution, setup.net.in_channels, setup.batch_sharding
    out = {
        "image": jax.ShapeDtypeStruct((batch, r, r, c), jnp.float32, sharding=sharding),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding),
    }
    if masked:
        out["mask"] = jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=sharding)
    return out


def compile_train(setup: RunSetup, phase: Phase) -> TrainFn:
    """`phase`'s train step for global batches of train.batch_size."""
    t = setup.config.train
    parts = setup.parts_of(phase)
    # The logged learning rate is the phase's schedule at the phase's own step.
    lr = parts.lr if phase.start == 0 else (lambda step: parts.lr(step - phase.start))
    fn = functools.partial(
        train_step,
        module=parts.module,
        tx=parts.tx,
        lr=lr,
        num_classes=setup.net.num_classes,
        label_smoothing=float(t.label_smoothing),
        ema=float(t.ema_decay),
        labels=parts.labels,
        frozen_bn=parts.frozen_bn,
        **mix.options(t, setup.devices),
    )
    jitted = jax.jit(
        fn,
        in_shardings=(setup.replicated, setup.batch_sharding, setup.replicated),
        out_shardings=(setup.replicated, setup.replicated),
        donate_argnums=0,
    )
    # The seed is an argument, not a constant of the program: repeats of a network with other seeds
    # compile to the same program, which the persistent compilation cache then serves.
    abstract_seed = jax.ShapeDtypeStruct((), jnp.int32, sharding=setup.replicated)
    batch = _abstract_batch(setup, t.batch_size, False)
    compiled = jitted.lower(abstract_state(setup, phase), batch, abstract_seed).compile()
    seed = jax.device_put(jnp.int32(t.seed), setup.replicated)
    return lambda state, batch: compiled(state, batch, seed)


def compile_eval(setup: RunSetup) -> EvalFn:
    """The eval step for padded global batches of train.eval_batch_size (any phase's weights)."""
    fn = functools.partial(eval_step, module=setup.module, num_classes=setup.net.num_classes)
    jitted = jax.jit(fn, in_shardings=(setup.replicated, setup.batch_sharding), out_shardings=setup.replicated)
    abstract = abstract_state(setup, setup.phases[0])
    variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
    return jitted.lower(variables, _abstract_batch(setup, setup.config.train.eval_batch_size, True)).compile()
