"""Training and evaluation of one network, one job per module.

    errors       ConfigError, NonFiniteLossError, Interrupted: what launch.py and the sweep driver catch
    resolve      the config validated, with the dataset's class count filled in (no devices)
    fingerprint  what a workdir's checkpoints are of
    phases       transfer phases and each one's optimizer, schedule, freeze and module
    setup        RunSetup: the resolved config, mesh, batch sizes and phases of a run, made once, frozen
    steps        the pure parts: TrainState, train_step, eval_step
    state        abstract, fresh and next-phase train states
    weights      initial weights (config.init), checked before any compile
    compiled     the train / eval steps compiled over the mesh
    evaluation   the eval split through the raw and EMA weights, as fractions
    recording    the run record (effscale.record.RunRecord) of training and --mode=eval
    signals      SIGINT / SIGTERM as a request to stop with a checkpoint
    progress     pending metrics, step time, log lines
    loop         train_and_evaluate
    eval_mode    evaluate (--mode=eval)

`effscale.train` re-exports the public names.
"""
