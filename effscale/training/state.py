"""The train state of a run: its shapes (to restore into and compile for), a fresh one, a new phase's."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from effscale import convert
from effscale.training.phases import Phase
from effscale.training.setup import RunSetup
from effscale.training.steps import TrainState, init_state, start_state
from effscale.weights.merge import merge_imported


def _init(setup: RunSetup, phase: Phase, seed: Any = 0) -> TrainState:
    return init_state(setup.module, setup.parts_of(phase).tx, seed, setup.net)


def abstract_state(setup: RunSetup, phase: Phase | None = None) -> TrainState:
    """The state's shapes and shardings in `phase` (default: the last, that of a finished run)."""
    phase = setup.phases[-1] if phase is None else phase
    shapes = jax.eval_shape(functools.partial(_init, setup, phase))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=setup.replicated), shapes)


def fresh_state(setup: RunSetup, imported: convert.ImportedWeights | dict[str, Any] | None = None) -> TrainState:
    """Step 0 of the first phase: initialised weights, with `imported` (effscale.training.weights) merged in."""
    # The seed is an argument, not a constant of the program: repeats of a network with other seeds
    # reuse its compiled initialisation from the persistent compilation cache.
    init = jax.jit(functools.partial(_init, setup, setup.phases[0]), out_shardings=setup.replicated)
    state = init(jnp.int32(setup.config.train.seed))
    if imported is None:
        return state
    merged = merge_imported({"params": state.params, "batch_stats": state.batch_stats}, imported)
    merged = jax.device_put(merged, setup.replicated)
    tx = setup.parts[0].tx
    # The EMA starts at the imported weights.
    start = lambda v: start_state(v["params"], v["batch_stats"], tx)  # noqa: E731
    return jax.jit(start, out_shardings=setup.replicated)(merged)


def enter_phase(setup: RunSetup, phase: Phase, state: TrainState) -> TrainState:
    """`state` with `phase`'s optimizer, freshly initialised (a new optimizer, as Keras' recompile gives)."""
    tx = setup.parts_of(phase).tx
    return jax.jit(lambda s: s.replace(opt_state=tx.init(s.params)), out_shardings=setup.replicated)(state)
