"""effscale's command line: one config, one mode.

python launch.py --config configs/efficientnet.py:b3 --mode=info
python launch.py --config configs/compound_phi2.py --mode=info --json
python launch.py --config configs/compound_phi2.py --workdir runs/phi2
python launch.py --config configs/compound_phi2.py --workdir runs/phi2 --mode=eval

Without --workdir a run goes to runs/<config file name>[_<config argument>]. A second
run with the same workdir resumes from its latest checkpoint. Multi-host: pass
--multihost (or run under a launcher that sets JAX_COORDINATOR_ADDRESS, SLURM or
Open MPI variables, or on a Cloud TPU slice); each process runs the same command. A sharded
sweep's tasks and SLURM array tasks are independent jobs: they join one only with --multihost.
A sweep on a cluster: --mode=launch --launcher=slurm|k8s|tpu prints what to submit.
Exit status: 0 done, 1 the loss diverged or a write failed for want of space or permission (disk
full, read-only, quota: the last good checkpoint is kept; rerun to resume once fixed), 2 a bad
command line, config or workdir, or no checkpoint of the workdir restores (each one line
`effscale: error: ...`, before JAX starts where the command line alone shows it), 128 + signal
number after a save on SIGINT / SIGTERM (rerun to resume).
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from effscale import cli, host

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with an argument: file.py:arg.")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["info", "train", "eval", "status", "collect", "plot", "report", "launch"],
    "info: describe the network; train / eval: one run (or every point of a sweep config); "
    "status / collect / plot / report: a sweep's progress, results tables, figures and the paper's claims judged; "
    "launch: print what to submit to run a sweep on a cluster (--launcher).",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, result.json).")
_JSON = flags.DEFINE_bool("json", False, "--mode=info: print one JSON object instead of a table.")
_XLA = flags.DEFINE_bool("xla", True, "--mode=info: also compile the forward pass for XLA's FLOP count.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost",
    None,
    "Join a multi-process JAX job (jax.distributed.initialize) before anything runs. "
    "Default: detected from the environment (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, Cloud TPU slice), "
    "except that a sharded sweep (--sweep_shard) and a SLURM array task never join without --multihost.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "--multihost: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "--multihost: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "--multihost: this process's index.")
_SWEEP_SHARD = flags.DEFINE_string(
    "sweep_shard",
    None,
    "Sweep configs (configs/sweeps/): run only share i/n of the points, 0 <= i < n (point k of the "
    "declared order belongs to shard k % n); 'auto': i/n from the scheduler (SLURM array, Kubernetes "
    "Indexed Job, EFFSCALE_SHARD); 'claim': take the next unclaimed point until none is left. "
    "A sharded sweep's processes are independent jobs: they join a multi-host job only with --multihost.",
)
_LAUNCHER = flags.DEFINE_string(
    "launcher",
    None,
    "--mode=launch: slurm (an sbatch array script), k8s (a Kubernetes Indexed Job) or tpu (gcloud commands, "
    "one TPU slice per shard). Printed to stdout; edit the values marked EDIT, then submit.",
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards",
    None,
    "--mode=launch: how many tasks share the sweep's points (1 to the number of points). "
    "Default: one per point, at most 64.",
)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (which loads the config file), a mistake in it one line and exit status 2."""
    try:
        return cli.parse_flags(argv, flags.FLAGS)
    except cli.CommandLineError as e:
        print(f"effscale: error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> int:
    config = _CONFIG.value
    is_sweep = "sweep" in config  # configs/sweeps/*.py: named points over a base config
    workdir = _WORKDIR.value or _default_workdir(is_sweep)
    try:
        cli.check_command(
            argv[1:], _MODE.value, is_sweep, _SWEEP_SHARD.value, workdir, bool(_WORKDIR.value), _LAUNCHER.value
        )
    except cli.CommandLineError as e:
        print(f"effscale: error: {e}", file=sys.stderr)
        return 2
    if _MODE.value == "launch":  # prints text only: no JAX
        return _launch(config, workdir)
    if is_sweep:
        return _sweep(config, _MODE.value, workdir)
    if _MODE.value == "info":
        return _info(config)
    return _train_or_eval(config, _MODE.value, workdir)


def _info(config) -> int:
    """Prints the network a config trains, resolved as the trainer resolves it (dataset metadata, no data read)."""
    import json

    from effscale import info, train

    _quiet_libraries()
    try:
        _, _, net = train.resolve(config)
    except ValueError as e:  # an impossible config: say which field, before anything compiles
        print(f"effscale: error: {e}", file=sys.stderr)
        return 2
    desc = info.describe(net, xla=_XLA.value, origin=info.sources(config.model, config.get("data")))
    print(json.dumps(desc, indent=2) if _JSON.value else info.format_table(desc))
    return 0


def _default_workdir(is_sweep: bool) -> str:
    """runs/<config file stem>[_<argument>] (sweeps/... for a sweep), e.g. runs/compound_phi2, sweeps/width."""
    filename = config_flags.get_config_filename(flags.FLAGS["config"])
    path, _, arg = filename.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in arg)
    return os.path.join("sweeps" if is_sweep else "runs", name)


def _launch(config, workdir: str) -> int:
    """Prints the --launcher's script or manifest for this sweep config and workdir."""
    from effscale import launchers, sweep

    overrides = cli.override_paths(sys.argv)
    try:
        if overrides:  # the printed command carries the config argument only: they would be lost
            raise ValueError(
                f"--config.{overrides[0]}: --mode=launch does not carry --config.* overrides into the tasks' "
                "command; put the change in the config file or its argument (file.py:arg)."
            )
        shards = launchers.num_shards(_NUM_SHARDS.value, len(config.sweep.points), _SWEEP_SHARD.value)
        argument = config_flags.get_config_filename(flags.FLAGS["config"])
        print(launchers.render(_LAUNCHER.value, argument, workdir, shards, sweep.sweep_name(config)), end="")
    except ValueError as e:
        print(f"effscale: error: {e}", file=sys.stderr)
        return 2
    return 0


def _sweep(config, mode: str, workdir: str) -> int:
    """Every point of a sweep (or this process' --sweep_shard of them), its status, table or figures."""
    from effscale import sweep

    if mode != "train":
        return sweep.main(config, workdir, mode, _SWEEP_SHARD.value)
    # Each shard is a job of its own: `srun -n 8 ... --sweep_shard=auto` is eight sweeps, not one multi-host job.
    _start_jax(sweep_shard=_SWEEP_SHARD.value)
    from effscale import compile_cache, train

    # Repeats of a network (seeds, reruns, other shards and hosts) load its compiled steps from here.
    compile_cache.enable(compile_cache.directory(workdir))
    try:
        return sweep.main(config, workdir, mode, _SWEEP_SHARD.value)
    except train.Interrupted as e:  # a signal or preemption: the point resumes on the next run
        print(f"effscale: {e}", file=sys.stderr)
        return 128 + (e.signum or signal.SIGTERM)


def _start_jax(sweep_shard: str | None = None) -> None:
    """Joins a multi-host job when asked or detected (the rule: parallel.multihost_from_env), and routes
    the trainer's progress to stderr."""
    import logging

    from effscale import parallel

    if parallel.multihost_from_env(sweep_shard=sweep_shard, explicit=_MULTIHOST.value):  # before anything touches jax
        parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

    import jax

    _quiet_libraries()
    # Orbax logs a failed background save with a traceback from every thread it touched before
    # re-raising it, which effscale then reports in one line.
    from effscale import checkpoint

    logging.getLogger("absl").addFilter(checkpoint.not_orbax_error)
    checkpoint.quiet_abandoned_reads()
    progress = logging.getLogger("effscale")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
    progress.propagate = False


def _quiet_libraries() -> None:
    """Orbax and TFDS log every step of their work at INFO through absl; effscale's progress has its own logger.

    gcsfs logs a whole traceback for each request GCS refuses before it raises the error, which
    effscale then reports in one line (or with its traceback, when it is no storage failure).
    """
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def _train_or_eval(config, mode: str, workdir: str) -> int:
    _start_jax()
    import jax

    from effscale import train
    from effscale.training import errors

    try:
        run = train.train_and_evaluate if mode == "train" else train.evaluate
        out = run(config, workdir)
    except train.ConfigError as e:  # validation only: other ValueErrors keep their traceback
        print(f"effscale: error: {e}", file=sys.stderr)
        return 2
    except train.NonFiniteLossError as e:
        print(f"effscale: error: {e}", file=sys.stderr)
        return 1
    except train.Interrupted as e:
        print(f"effscale: {e}", file=sys.stderr)
        return 128 + (e.signum or signal.SIGTERM)
    # A full or read-only disk is one line whichever writer meets it (orbax, the metrics log, TensorFlow's
    # TensorBoard writer, which raises its own error types); any other failure keeps its traceback.
    except Exception as e:
        from effscale import checkpoint

        kept = checkpoint.newest_step_or_none(checkpoint.checkpoints_of(workdir))
        storage = errors.as_storage_error(e, workdir, kept)
        if storage is None:
            raise
        return _storage_failed(storage)
    if jax.process_index() == 0:
        print(_summary(out))
    return 0


def _storage_failed(error: Exception) -> int:
    """Prints a failed write's one line and ends the process with status 1."""
    print(f"effscale: error: {error}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # A failed background save leaves orbax's signalling threads (not daemons) waiting for signals
    # that never come, and its coroutines unawaited: a normal exit would wait on them for ever.
    # What the run wrote is on disk already (records are written atomically), so nothing is lost.
    os._exit(1)


def _summary(record) -> str:
    """The run's headline figures on one line, from a RunRecord (or the dict of earlier versions)."""
    keys = ("eval_top1", "eval_top1_ema", "eval_top5", "eval_top5_ema", "steps", "train_images_per_sec")
    values = {k: record.get(k) if isinstance(record, dict) else getattr(record, k, None) for k in keys}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


if __name__ == "__main__":
    host.configure_process()  # XLA flags and huge pages: before jax's backend starts (may restart the process once)
    app.run(main, flags_parser=_parse_flags)
