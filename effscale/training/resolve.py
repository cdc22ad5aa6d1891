"""The config as the trainer runs it: validated, with what it leaves to the dataset filled in."""

from __future__ import annotations

import copy
from typing import Any

import ml_collections

from effscale import model, optim, spec


def resolve(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, Any, spec.NetworkSpec]:
    """Validates `config` and fixes what it leaves to the dataset.

    Returns a copy with `model.num_classes` filled in (when None) from the dataset,
    the dataset's info and the network description. Raises ValueError on a bad field.
    Pure apart from reading the dataset's info: no devices, no mesh.
    """
    from effscale import data  # TensorFlow comes with it: only when a config is resolved

    config = copy.deepcopy(config)
    info = data.dataset_info(config.data)
    with config.unlocked():
        if config.model.num_classes is None:
            config.model.num_classes = int(info.num_classes)
    optim.check(config.train)
    model.check_runtime(config.model)
    net = spec.build(config.model)
    if net.include_top and net.num_classes != info.num_classes:
        raise ValueError(
            f"model.num_classes={net.num_classes} but {info.name} has {info.num_classes} classes; "
            "leave model.num_classes unset to take it from the dataset."
        )
    return config, info, net
