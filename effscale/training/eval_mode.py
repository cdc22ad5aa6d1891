"""`--mode=eval`: the latest checkpoint of a workdir evaluated again (test and validation), as <workdir>/eval.json."""

from __future__ import annotations

import os
import time

import ml_collections

from effscale import checkpoint, compile_cache, parallel, record, storage
from effscale.training import evaluation, recording
from effscale.training.compiled import compile_eval
from effscale.training.errors import config_errors
from effscale.training.evaluation import run_eval
from effscale.training.fingerprint import fingerprint
from effscale.training.setup import make_setup
from effscale.training.state import abstract_state


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> record.RunRecord:
    """Evaluates the newest checkpoint of `workdir` that restores (raw and EMA weights) on the test split, and
    on the validation split when the config has one; returns and writes the record.

    Raises ConfigError when `workdir` holds no checkpoint, checkpoints of another network, or
    none that restores (CheckpointsDamagedError); newer damaged ones are moved aside with a warning.
    """
    wall_start = time.perf_counter()
    with config_errors():
        setup = make_setup(config)
        if not checkpoint.has_checkpoint(workdir):
            raise ValueError(f"No checkpoint in {workdir}: train first (--mode=train) or point --workdir at a run.")
        checkpoint.guard(workdir, fingerprint(setup.net, setup.info.name, setup.config), write=False)
    t = setup.config.train
    ckpt = checkpoint.Manager(workdir, t.checkpoint_every_steps, t.keep_checkpoints)
    try:
        # has_checkpoint held, so this is a state or CheckpointsDamagedError.
        step, state = ckpt.restore_newest(lambda s: abstract_state(setup, setup.phase_of(s)))
        began = time.perf_counter()
        with compile_cache.counting() as cache:
            eval_fn = compile_eval(setup)
        compile_time = time.perf_counter() - began
        parallel.barrier(f"effscale:compiled-eval:{os.fspath(storage.path(workdir))}")
        result = run_eval(setup, eval_fn, state)
        held_out = evaluation.in_run_split(setup) == evaluation.VALIDATION
        validation = run_eval(setup, eval_fn, state, evaluation.VALIDATION) if held_out else None
    finally:
        ckpt.close()
    out = recording.run_record(
        setup,
        "evaluated",
        step,
        result,
        validation=validation,
        compile_time_s=compile_time,
        compile_cache_hits=cache.hits,
        wall_time_s=time.perf_counter() - wall_start,
    )
    recording.publish(workdir, record.EVAL, out)
    return out
