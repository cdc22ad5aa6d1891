"""Weight import, under the names the configs, experiments and trainer use: the public face of `effscale.weights`.

Keras applications files and models (`load_keras`, `load_keras_model`, `read_keras_h5`), timm
``tf_efficientnet_b*`` state dicts (`load_timm`, `to_timm_state_dict`), effscale workdirs and the
one entry point for a run's initial weights (`load_initial`). See `effscale.weights` for the rules.
"""

from effscale.layers import HEAD_MODULE, is_base_module
from effscale.weights.assemble import expected_shapes
from effscale.weights.imported import SOURCE_BN_EPSILON, TOP_MODES, ImportedWeights, WeightImportError
from effscale.weights.initial import load_initial
from effscale.weights.keras import load_keras, load_keras_model
from effscale.weights.keras_files import read_keras_h5
from effscale.weights.keras_names import keras_layer_name, keras_layer_order
from effscale.weights.merge import merge_imported
from effscale.weights.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    InputNormalization,
)
from effscale.weights.timm import load_timm, read_state_dict, timm_key, timm_normalization, to_timm_state_dict

__all__ = [
    "HEAD_MODULE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "SOURCE_BN_EPSILON",
    "TOP_MODES",
    "ImportedWeights",
    "InputNormalization",
    "WeightImportError",
    "expected_shapes",
    "is_base_module",
    "keras_layer_name",
    "keras_layer_order",
    "load_initial",
    "load_keras",
    "load_keras_model",
    "load_timm",
    "merge_imported",
    "read_keras_h5",
    "read_state_dict",
    "timm_key",
    "timm_normalization",
    "to_timm_state_dict",
]
