"""Keras applications EfficientNets (``keras.applications.EfficientNetB0`` ... ``B7``), from a file or a model.

Weights map by layer name (stem_conv, block2a_expand_conv, block2a_se_reduce, top_conv,
predictions, ...); see `effscale.weights.keras_files` for the file layouts and
`effscale.weights.normalization` for the preprocessing Keras keeps inside its models.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from effscale.spec import NetworkSpec
from effscale.weights import normalization
from effscale.weights.assemble import assemble
from effscale.weights.imported import ImportedWeights, WeightImportError
from effscale.weights.keras_files import read_keras_h5
from effscale.weights.keras_names import NORMALIZATION, keras_format, layer_class, layer_classes


def load_keras(path: str | os.PathLike, spec: NetworkSpec, *, top: str = "auto") -> ImportedWeights:
    """Imports a Keras applications EfficientNet weights file into effscale variables for `spec`.

    Args:
      path: a legacy ``.h5`` (as Keras ships them, or ``model.save('x.h5')``), a Keras 3
        ``.weights.h5`` or a ``.keras`` archive.
      spec: the network to fill; its structure (preset / width / depth) must match the file's.
      top: 'auto' loads the file's classifier when the model has a top with the same class
        count and drops it otherwise (logged); 'load' insists on loading it (error otherwise);
        'drop' never loads it.

    Returns:
      `ImportedWeights`; merge into fresh variables with `effscale.weights.merge.merge_imported`
      when the top was dropped. `normalization` tells the mean/std (for [0, 1] pixels) that
      reproduce the Keras model, which applied them inside the model.
    """
    source, layout = read_keras_h5(path)
    if any(k.startswith(("conv_stem", "blocks.")) for k in source):
        raise WeightImportError(f"{os.fspath(path)!r} holds timm (PyTorch) names: use effscale.convert.load_timm.")
    norm = _normalization(source)
    return assemble(spec, source, keras_format(layout), top, repr(os.fspath(path)), layout=layout, normalization=norm)


def load_keras_model(model: Any, spec: NetworkSpec, *, top: str = "auto") -> ImportedWeights:
    """Imports the weights of an in-memory Keras EfficientNet (a `keras.Model`), same rules as `load_keras`."""
    classes = layer_classes()
    source: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = layer_class(layer.name, classes)
        if kind is None:
            raise WeightImportError(f"Keras layer {layer.name!r} is not part of an EfficientNet.")
        for w in layer.weights:
            name = NORMALIZATION if kind == NORMALIZATION else layer.name
            source[f"{name}/{w.path.split('/')[-1]}"] = np.asarray(w.numpy())
    norm = _normalization(source)
    origin = f"Keras model {model.name!r}"
    return assemble(spec, source, keras_format("Keras model"), top, origin, layout="keras-model", normalization=norm)


def _normalization(source: dict[str, np.ndarray]) -> normalization.InputNormalization | None:
    """Takes the input Normalization layer's weights out of `source`: the preprocessing they describe, if any."""
    mean, variance = source.pop("normalization/mean", None), source.pop("normalization/variance", None)
    source.pop("normalization/count", None)
    if mean is None or variance is None:
        return None
    return normalization.from_keras(mean, variance)
