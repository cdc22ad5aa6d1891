"""What a workdir's checkpoints are of; effscale.checkpoint.guard refuses a run of anything else."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from effscale import spec, storage


def fingerprint(net: spec.NetworkSpec, dataset: str, config: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
    """The full network description and the dataset.

    With `config`, also the data subset, the validation split, the augmentation, initial weights and freezing / phases,
    but only when they differ from the defaults: workdirs of ordinary runs keep the fingerprint
    they had, and a run never resumes another recipe's checkpoints half-way.
    """
    out: dict[str, Any] = {"dataset": dataset, "network": dataclasses.asdict(net)}
    if config is None:
        return out
    d = config.data
    if d.get("classes") or d.get("train_examples"):
        out["subset"] = {"classes": d.classes, "train_examples": d.train_examples}
    if d.get("validation", "none") != "none":
        # A carved validation split takes its examples from training: another carve is other training data.
        out["validation"] = [d.validation, d.get("validation_examples")]
    augment = _augmentation(config)
    if augment:
        out["augment"] = augment
    init = config.get("init")
    if init is not None and init.weights:
        weights = os.fspath(storage.path(init.weights, "config.init.weights"))  # local: absolute; gs://: as given
        out["init"] = {"weights": weights, "source": init.source, "top": init.top}
    tr = config.get("transfer")
    if tr is not None and (tr.freeze != "none" or tr.phases or tr.batchnorm != "frozen"):
        out["transfer"] = {"freeze": tr.freeze, "batchnorm": tr.batchnorm, "phases": [plain(p) for p in tr.phases]}
    return out


def plain(phase: Any) -> dict[str, Any]:
    """A phase of `config.transfer.phases` (a ConfigDict or a dict) as a plain dict."""
    return phase.to_dict() if isinstance(phase, ml_collections.ConfigDict) else dict(phase)


def _augmentation(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The augmentation fields that are on (policy, erasing, mixing); empty when all are off."""
    d, t = config.data, config.train
    out: dict[str, Any] = {}
    if d.get("augment", "none") != "none":
        out["policy"] = d.augment
        if d.augment == "randaugment":
            out["randaugment"] = [d.randaugment_layers, d.randaugment_magnitude]
    if d.get("random_erasing", 0.0) > 0:
        out["random_erasing"] = [d.random_erasing, list(d.random_erasing_area), list(d.random_erasing_aspect),
                                 d.random_erasing_mode]  # fmt: skip
    if t.get("mixup_alpha", 0.0) > 0 or t.get("cutmix_alpha", 0.0) > 0:
        out["mixing"] = [t.mixup_alpha, t.cutmix_alpha, t.mix_prob, t.switch_prob]
    return out
