"""A run's initial weights (`config.init`): imported and checked against the model before any compile."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from effscale import convert, model
from effscale.training.setup import RunSetup
from effscale.weights.merge import merge_imported

log = logging.getLogger("effscale")


def initial_weights(setup: RunSetup) -> convert.ImportedWeights | dict[str, Any] | None:
    """config.init.weights (None when unset), checked to fit the model; raises ValueError when they cannot be used."""
    init = setup.config.get("init")
    if init is None or not init.weights:
        return None
    try:
        imported = convert.load_initial(init, setup.net)
    except OSError as e:  # a missing or unreadable file is a config error like any other
        raise ValueError(f"config.init.weights: {e}") from e
    abstract = model.abstract_variables(setup.module)
    fresh = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    merge_imported(fresh, imported)  # shapes and coverage, nothing kept
    _warn_on_normalization(imported, setup.config.data)
    dropped = getattr(imported, "dropped_top", True)
    log.info("Initial weights from %s (%s).", init.weights, "new head" if dropped else "with its top")
    return imported


def _warn_on_normalization(imported: Any, data: Any) -> None:
    norm = getattr(imported, "normalization", None)
    if norm is None:
        return
    if np.allclose(norm.mean, data.mean, atol=1e-3) and np.allclose(norm.std, data.std, atol=1e-3):
        return
    log.warning(
        "The imported weights expect inputs normalised with mean %s, std %s; config.data has mean %s, "
        "std %s. Set config.data.mean / std to match unless this is deliberate.",
        norm.mean,
        norm.std,
        tuple(data.mean),
        tuple(data.std),
    )
