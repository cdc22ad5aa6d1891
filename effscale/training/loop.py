"""The training loop: `train_and_evaluate(config, workdir) -> RunRecord`.

The compiled steps (effscale.training.compiled) are pure; this loop around them owns every side
effect: data, checkpoints, logs, signals and the final, atomically written result.json.

Resume: the step is the data position and the dropout key is derived from (seed, step), so a
run resumed from a checkpoint continues exactly as an uninterrupted one would. The metrics log
is rewound to the checkpoint, so it reads as one run; the train metrics a stop fetched but did not
log travel in it to the resume (record.CARRY), so its next log line averages the same steps.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections

from effscale import checkpoint, compile_cache, host, lease, parallel, record, storage
from effscale.training import evaluation, memory, progress, recording
from effscale.training.compiled import EvalFn, TrainFn, compile_eval, compile_train
from effscale.training.errors import Interrupted, NonFiniteLossError, config_errors
from effscale.training.evaluation import EvalResult, run_eval
from effscale.training.fingerprint import fingerprint
from effscale.training.phases import Phase
from effscale.training.setup import RunSetup, make_setup
from effscale.training.signals import StopRequest
from effscale.training.state import abstract_state, enter_phase, fresh_state
from effscale.training.steps import TrainState
from effscale.training.weights import initial_weights


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the loop works with and never changes."""

    setup: RunSetup
    workdir: str
    ckpt: checkpoint.Manager
    writer: record.MetricsWriter
    eval_fn: EvalFn
    start_step: int
    stop_at_step: int | None
    eval_every: int
    logged: dict[str, Any] | None  # the rewound log's last train event: a run resumed at its end has no other

    @property
    def lead(self) -> bool:
        return self.writer.enabled


@dataclasses.dataclass
class _Loop:
    """What the loop carries from step to step."""

    state: TrainState
    phase: Phase
    train_fn: TrainFn
    compile_time: float
    cache_hits: int  # of the compiles, those JAX's persistent compilation cache served
    evals: list[tuple[int, EvalResult]]  # (step, result), the rewound log's first
    pending: progress.Pending = dataclasses.field(default_factory=progress.Pending)
    clock: progress.Clock = dataclasses.field(default_factory=progress.Clock)
    train_metrics: Mapping[str, float] | None = None
    tick: float = 0.0  # when the steps since the last log point began
    tick_step: int = 0
    waited: float = 0.0  # of the time since `tick`, seconds blocked on the input pipeline


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None
) -> record.RunRecord:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, returns the run record.

    The record is also written atomically to `<workdir>/result.json` by process 0.
    Raises ConfigError for a bad config, an incompatible workdir or one another process is training
    (its `<workdir>/writer.lease`, see effscale.lease; all before any compile),
    NonFiniteLossError when the loss diverges, Interrupted after a save on SIGINT /
    SIGTERM / preemption, or at `stop_at_step` (a time slice: a later call continues the
    same run, exactly as if it had not stopped).
    """
    # SIGINT / SIGTERM are a stop request from the first line: one that comes while validating,
    # restoring or compiling stops the run before its first step, the lease released, instead of
    # killing it holding the lease (the state is still the one saved: nothing to save).
    with StopRequest() as stop:
        return _validated_run(config, workdir, stop_at_step, stop, time.perf_counter())


def _validated_run(
    config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None, stop: StopRequest, wall_start: float
) -> record.RunRecord:
    """train_and_evaluate's body: validates everything, then takes the lease, trains and publishes."""
    lead = jax.process_index() == 0
    with config_errors():
        setup = make_setup(config)
        what = fingerprint(setup.net, setup.info.name, setup.config)
        checkpoint.guard(workdir, what, write=False)
        # A resumed run has its weights in the checkpoint.
        imported = None if checkpoint.has_checkpoint(workdir) else initial_weights(setup)
        # One writer per workdir, the first thing written and only after every check: another process's
        # live writer.lease refuses this run like a bad config.
        _stop_if_requested(stop, workdir)
        held = lease.hold_writer(workdir, enabled=lead)
    # Everything is validated: only now is anything written, so a refused run leaves the workdir as it was.
    with held:  # renewed while the run lasts, released however it ends
        if lead:
            checkpoint.write_fingerprint(workdir, what)
        t = setup.config.train
        ckpt = checkpoint.Manager(workdir, t.checkpoint_every_steps, t.keep_checkpoints, t.async_checkpoints)
        writer = record.MetricsWriter(workdir, enabled=lead)
        try:
            run, loop = _start(setup, workdir, ckpt, writer, imported, stop_at_step)
            _stop_if_requested(stop, workdir)
            _train(run, loop, stop)
            ckpt.wait()
            out = _finish(run, loop, time.perf_counter() - wall_start)
            held.check()  # a process that lost its lease (stalled past the TTL) leaves the record to the new holder
            recording.publish(workdir, record.RESULT, out)
            return out
        finally:
            writer.close()
            ckpt.close()


def _stop_if_requested(stop: StopRequest, workdir: str) -> None:
    """Raises Interrupted, with nothing to save, for a signal that came before the first step."""
    if stop.signum is not None:
        raise Interrupted(0, stop.signum, workdir, saved=False)


def _start(
    setup: RunSetup,
    workdir: str,
    ckpt: checkpoint.Manager,
    writer: record.MetricsWriter,
    imported: Any,
    stop_at_step: int | None,
) -> tuple[_Run, _Loop]:
    """Restores the newest usable checkpoint (or initialises the state), compiles, and rewinds the metrics log to it."""
    # Before compiling: the step a damaged newest checkpoint falls back to decides the phase.
    memory.reset_host_peak()  # the record's host peak is this run's, not an earlier point's of the same sweep
    restored = ckpt.restore_newest(lambda step: abstract_state(setup, setup.phase_of(step)))
    start_step, state = restored or (0, None)
    phase = setup.phase_of(start_step)
    began = time.perf_counter()
    with compile_cache.counting() as cache:
        train_fn, eval_fn = compile_train(setup, phase), compile_eval(setup)
    compile_time = time.perf_counter() - began
    host.return_freed_memory()
    # Hosts finish compiling at different times; the first collective must not time out on them.
    parallel.barrier(f"effscale:compiled:{os.fspath(storage.path(workdir))}:{start_step}")
    if restored is None:  # the initialiser is a program too (the largest): its compile counts with the steps'
        began = time.perf_counter()
        with compile_cache.counting() as init_cache:
            state = fresh_state(setup, imported)
        compile_time += time.perf_counter() - began
        cache.hits += init_cache.hits
    if writer.enabled:
        progress.log_start(setup, start_step, imported is not None)
        if len(setup.phases) > 1 or phase.freeze != "none":
            progress.log_phase(setup, phase)
    events = writer.rewind(start_step)
    split = evaluation.in_run_split(setup)
    evals = [(e["step"], EvalResult.from_metrics(e)) for e in events if e["kind"] == "eval"]
    evals = [(step, result) for step, result in evals if result.split == split]  # best is chosen among these
    carried = [progress.carried(e) for e in events if e["kind"] == record.CARRY and e["step"] == start_step]
    logged = next((e for e in reversed(events) if e["kind"] == "train"), None)
    eval_every = max(1, int(round(setup.config.train.eval_every_epochs * setup.steps_per_epoch)))
    run = _Run(setup, workdir, ckpt, writer, eval_fn, start_step, stop_at_step, eval_every, logged)
    loop = _Loop(state, phase, train_fn, compile_time, cache.hits, evals, progress.Pending(*carried))
    # A run stopped on an eval point saved without evaluating (stopping is urgent): evaluate now.
    if start_step and start_step % eval_every == 0 and start_step not in {s for s, _ in evals}:
        _evaluate(run, loop, start_step)
    return run, loop


def _train(run: _Run, loop: _Loop, stop: StopRequest) -> None:
    """Steps from the start step to the end, switching phases on their boundaries."""
    from effscale import data

    setup = run.setup
    batches = data.train_batches(
        setup.config.data,
        setup.net.resolution,
        setup.local_batch,
        setup.config.train.seed,
        start_step=run.start_step,
        process_index=jax.process_index(),
        process_count=setup.processes,
    )
    loop.tick, loop.tick_step = time.perf_counter(), run.start_step
    for step in range(run.start_step + 1, setup.total_steps + 1):
        if step > loop.phase.end:
            _next_phase(run, loop, step)
        began = time.perf_counter()
        batch = parallel.global_batch(next(batches), setup.batch_sharding)
        loop.waited += time.perf_counter() - began
        loop.state, metrics = loop.train_fn(loop.state, batch)
        loop.pending.add(step, metrics)
        _after_step(run, loop, step, stop.signum)


def _next_phase(run: _Run, loop: _Loop, step: int) -> None:
    """The next phase: its optimizer, its compiled step."""
    setup = run.setup
    loop.phase = setup.phases[loop.phase.index + 1]
    began = time.perf_counter()
    with compile_cache.counting() as cache:
        loop.train_fn = compile_train(setup, loop.phase)
    loop.compile_time += time.perf_counter() - began
    loop.cache_hits += cache.hits
    host.return_freed_memory()
    parallel.barrier(f"effscale:compiled:{os.fspath(storage.path(run.workdir))}:{step}")
    loop.state = enter_phase(setup, loop.phase, loop.state)
    if run.lead:
        progress.log_phase(setup, loop.phase)
    loop.tick += time.perf_counter() - began  # the compile is not step time


def _after_step(run: _Run, loop: _Loop, step: int, signum: int | None) -> None:
    """At log, eval and save points: checks the loss, logs, saves, stops or evaluates."""
    is_last = step == run.setup.total_steps
    stopping = signum is not None or run.ckpt.reached_preemption(step) or step == run.stop_at_step
    stopping = stopping and not is_last
    log_now = step % run.setup.config.train.log_every_steps == 0 or is_last
    eval_now = (step % run.eval_every == 0 or is_last) and not stopping
    save_now = is_last or stopping or run.ckpt.should_save(step)
    if not (log_now or eval_now or save_now):
        return
    # Fetching the metrics waits for the step: the NaN check comes before any save.
    fetched = loop.pending.fetch()
    _check_finite(run, fetched)
    loop.train_metrics = progress.means(fetched) or loop.train_metrics
    first = loop.tick_step == run.start_step
    loop.clock.add(time.perf_counter() - loop.tick, step - loop.tick_step, first=first, waited=loop.waited)
    if log_now:
        progress.log_train(run.writer, step, run.setup, loop.train_metrics, loop.clock)
    if stopping and not _flushes_uninterrupted(run, step):
        # Written before the save: a checkpoint at `step` always has what its resume must average in.
        run.writer.write(step, record.CARRY, progress.carry(fetched))
    if save_now:
        run.ckpt.save(step, loop.state)
    if stopping:
        run.ckpt.wait()
        raise Interrupted(step, signum, run.workdir, "stop_at_step" if step == run.stop_at_step else "preemption")
    if eval_now:
        _evaluate(run, loop, step)
    loop.tick, loop.tick_step, loop.waited = time.perf_counter(), step, 0.0


def _flushes_uninterrupted(run: _Run, step: int) -> bool:
    """Whether a run not stopped at `step` fetches its train metrics there (a log, eval or save point)."""
    t = run.setup.config.train
    return step % t.log_every_steps == 0 or step % run.eval_every == 0 or step % max(1, t.checkpoint_every_steps) == 0


def _check_finite(run: _Run, fetched: progress.Fetched) -> None:
    """Raises NonFiniteLossError on a NaN / inf loss, after deleting the checkpoints that led to it.

    The loss of step k is computed from the state saved at step k - 1: that state, and any
    saved since, are poisoned. What remains trains from a rerun with a sane learning rate.
    """
    bad = progress.first_non_finite(fetched)
    if bad is None:
        return
    step, loss = bad
    run.ckpt.wait()
    poisoned = [s for s in run.ckpt.steps() if s >= step - 1]
    for s in poisoned:
        run.ckpt.delete(s)
    raise NonFiniteLossError(progress.diverged(step, loss, run.ckpt.latest_step(), poisoned, run.workdir))


def _evaluate(run: _Run, loop: _Loop, step: int) -> None:
    """Evaluates the state at `step` on validation (the test split without one) and logs it.

    A new best on validation below the last step is measured on the test split too, now: its
    weights are gone by the end (`_finish` measures one at the last step).
    """
    setup = run.setup
    result = run_eval(setup, run.eval_fn, loop.state, evaluation.in_run_split(setup))
    held_out = result.split == evaluation.VALIDATION
    if held_out and step != setup.total_steps and evaluation.is_new_best(loop.evals, result):
        result = evaluation.with_test_of_better(setup, run.eval_fn, loop.state, result)
    loop.evals.append((step, result))
    progress.log_eval(run.writer, step, step / setup.steps_per_epoch, result)


def _finish(run: _Run, loop: _Loop, wall_time: float) -> record.RunRecord:
    """The run record: the last step on validation and on the test split (final, EMA and best-on-validation weights)."""
    total = run.setup.total_steps
    if not loop.evals or loop.evals[-1][0] != total:  # resumed at the end, before its last evaluation
        _evaluate(run, loop, total)
    last = loop.evals[-1][1]
    held_out = last.split == evaluation.VALIDATION
    test = run_eval(run.setup, run.eval_fn, loop.state, evaluation.TEST) if held_out else last
    best_step, best = evaluation.best_of(loop.evals)
    step_time, input_wait = progress.pace(loop.clock, run.logged)
    # Without validation the best is chosen on the test split itself: best_eval_top1 keeps that old meaning.
    test_best = None
    if held_out:
        test_best = test.top1_of(best.better_weights) if best_step == total else best.best_test_top1
    return recording.run_record(
        run.setup,
        "finished",
        total,
        test,
        best_eval_top1=test_best if held_out else best.best_top1,
        validation=last if held_out else None,
        best_val=(best_step, best.best_top1) if held_out else None,
        test_top1_best=test_best,
        train=loop.train_metrics or run.logged,
        step_time_s=step_time,
        input_wait=input_wait,
        resumed_from_step=run.start_step,
        compile_time_s=loop.compile_time,
        compile_cache_hits=loop.cache_hits,
        wall_time_s=wall_time,
    )
