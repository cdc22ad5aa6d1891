"""What a weight import returns, and how it fails."""

from __future__ import annotations

import dataclasses
from typing import Any

from effscale.weights.normalization import InputNormalization

TOP_MODES = ("auto", "load", "drop")
SOURCE_BN_EPSILON = 1e-3  # Keras' default and timm's tf_ models; the weights were trained with it

Path = tuple[str, ...]  # ('params', 'block2a', 'expand_conv', 'kernel')


class WeightImportError(ValueError):
    """Weights that cannot be imported into the model as asked (never a partial load)."""


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
    """Imported variables plus what the caller must know about them.

    `variables` is ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays,
    nested like the model's. When the top was dropped (or the file had none) it
    lacks ``params/predictions``, listed in `missing`: merge it into freshly
    initialised variables with `effscale.weights.merge.merge_imported`.
    """

    variables: dict[str, Any]
    source: str
    dropped_top: bool
    file_num_classes: int | None  # None: the file has no top
    missing: tuple[str, ...]
    normalization: InputNormalization | None


def check_top_mode(top: str, field: str = "top") -> None:
    if top not in TOP_MODES:
        raise ValueError(f"{field} must be one of {TOP_MODES}, got {top!r}.")
