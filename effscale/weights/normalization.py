"""The input normalisation a source model expects, in effscale's convention.

effscale normalises images outside the model: pixels in [0, 1], then ``(x - mean) / std`` per
channel (``config.data.mean/std``, ImageNet's by default). Keras puts it inside:
``Rescaling(1/255)`` then ``Normalization`` computing ``(x - mean) / sqrt(variance)`` with mean
and variance stored in the weights file. The files Keras ships store the ImageNet *standard
deviations* [0.229, 0.224, 0.225] as the "variance" (tensorflow#49930), so Keras 3 adds a third
layer, ``Rescaling(1 / sqrt(std))``, to models built with ``weights='imagenet'``; with it, the
whole chain is ``(x / 255 - mean) / std``, exactly effscale's preprocessing with the ImageNet
mean and std. Models built with ``weights=None`` lack that layer and divide by
``sqrt(variance)`` only. timm models normalise outside the model too: ImageNet mean / std,
except the AdvProp (``ap``) weights, which expect mean = std = 0.5.
"""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """Per-channel normalisation of [0, 1] pixels, ``(x - mean) / std``, that the source model expects."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def from_keras(mean: np.ndarray, variance: np.ndarray) -> InputNormalization:
    """The [0, 1]-pixel normalisation that reproduces a Keras model with these Normalization weights."""
    mean, variance = np.asarray(mean, np.float64).ravel(), np.asarray(variance, np.float64).ravel()
    # The shipped-weights quirk: "variance" holds the std, and Keras' weights='imagenet' graph divides
    # by sqrt(std) twice, i.e. by std. Any other variance: a weights=None graph, dividing by sqrt(variance).
    quirk = np.allclose(variance, IMAGENET_STD, atol=1e-6)
    std = np.asarray(IMAGENET_STD) if quirk else np.sqrt(variance)
    return InputNormalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def for_timm(advprop: bool) -> InputNormalization:
    """ImageNet's mean and std, or 0.5 / 0.5 for timm's AdvProp weights."""
    if advprop:
        return InputNormalization(INCEPTION_MEAN, INCEPTION_STD)
    return InputNormalization(IMAGENET_MEAN, IMAGENET_STD)
