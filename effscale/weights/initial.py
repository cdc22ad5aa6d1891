"""A run's initial weights, as `config.init` names them: a Keras file, a timm state dict or an effscale workdir."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from effscale import layers, storage
from effscale.spec import NetworkSpec
from effscale.weights.imported import ImportedWeights, WeightImportError, check_top_mode
from effscale.weights.keras import load_keras
from effscale.weights.timm import STATE_DICT_FILES, load_timm

LOG = logging.getLogger(__name__)


def load_initial(init: Any, net: NetworkSpec) -> ImportedWeights | dict[str, Any]:
    """The initial weights `config.init` names, for `net` (numpy arrays).

    The one entry point for initial weights: a Keras file, a timm state dict or another
    effscale workdir (`init.source`, or told from the path when 'auto'), local or gs://. Raises
    ValueError (WeightImportError) when they cannot be used: an unsupported scheme or a bucket that
    cannot be reached in one line naming the field, before anything is read.
    """
    path = _checked(init.weights)
    source = _source_of(path) if init.source == "auto" else init.source
    if source == "keras":
        return load_keras(path, net, top=init.top)
    if source == "timm":
        if not init.timm_arch:
            raise ValueError("config.init.source='timm' needs config.init.timm_arch, e.g. 'tf_efficientnet_b0'.")
        return load_timm(path, net, arch=init.timm_arch, top=init.top)
    if source == "effscale":
        return _load_workdir(path, net, init.top)
    raise ValueError(f"config.init.source must be 'auto', 'keras', 'timm' or 'effscale', got {source!r}.")


def _checked(weights: Any) -> str:
    """`config.init.weights` as the loaders take it: a local path as given, or a gs:// URL whose bucket answers."""
    checked = storage.path(weights, "config.init.weights")
    if not storage.is_object_store(checked):
        return os.fspath(weights)
    storage.check_reachable(checked, "config.init.weights")
    return os.fspath(checked)


def _source_of(path: str) -> str:
    if storage.is_dir(path):
        return "effscale"
    if path.endswith((".h5", ".keras")):
        return "keras"
    if path.endswith(STATE_DICT_FILES):
        return "timm"
    raise ValueError(
        f"config.init.weights={path!r}: cannot tell the format from the name; set config.init.source to "
        "'keras', 'timm' or 'effscale'."
    )


def _load_workdir(workdir: str, net: NetworkSpec, top: str) -> dict[str, Any]:
    """The raw weights and BatchNorm statistics of an effscale workdir's latest checkpoint, top per `top`."""
    check_top_mode(top, "config.init.top")
    import jax

    from effscale import checkpoint  # the trainer's checkpoints; imported here to keep weight import light

    if not checkpoint.has_checkpoint(workdir):
        raise WeightImportError(f"config.init.weights={workdir!r}: no effscale checkpoint there.")
    manager = checkpoint.Manager(workdir, 1, 1000, asynchronous=False)
    try:
        restored = manager.restore(None)
    finally:
        manager.close()
    variables = {
        "params": jax.tree.map(np.asarray, dict(restored["params"])),
        "batch_stats": jax.tree.map(np.asarray, dict(restored["batch_stats"])),
    }
    _apply_top_mode(variables, workdir, net, top)
    return variables


def _apply_top_mode(variables: dict[str, Any], workdir: str, net: NetworkSpec, top: str) -> None:
    """Drops the checkpoint's classifier from `variables` unless `top` and the class counts say to keep it."""
    head = variables["params"].get(layers.HEAD_MODULE)
    if head is None:
        if top == "load":
            raise WeightImportError(f"{workdir}: top='load' but its checkpoint has no top.")
        return
    theirs = int(np.shape(head["kernel"])[-1])
    same = net.include_top and theirs == net.num_classes
    if top == "load" and not same:
        raise WeightImportError(
            f"{workdir}: its top has {theirs} classes, the model {net.num_classes if net.include_top else 'none'}."
        )
    if top == "drop" or not same:
        del variables["params"][layers.HEAD_MODULE]
        LOG.info("Dropped the %d-class top of %s: the new head starts fresh.", theirs, workdir)
