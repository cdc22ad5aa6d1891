"""The trainer's public face: `train_and_evaluate(config, workdir) -> RunRecord`, `evaluate`, and the names
scripts and tests import. The trainer itself is the package effscale.training, one job per module.
"""

from effscale.training.errors import ConfigError, Interrupted, NonFiniteLossError
from effscale.training.eval_mode import evaluate
from effscale.training.fingerprint import fingerprint
from effscale.training.loop import train_and_evaluate
from effscale.training.phases import PHASE_TRAIN_KEYS, Phase, resolve_phases
from effscale.training.resolve import resolve
from effscale.training.steps import TrainState, cross_entropy, ema_decay, eval_step, init_state, train_step

__all__ = [
    "PHASE_TRAIN_KEYS",
    "ConfigError",
    "Interrupted",
    "NonFiniteLossError",
    "Phase",
    "TrainState",
    "cross_entropy",
    "ema_decay",
    "eval_step",
    "evaluate",
    "fingerprint",
    "init_state",
    "resolve",
    "resolve_phases",
    "train_and_evaluate",
    "train_step",
]
