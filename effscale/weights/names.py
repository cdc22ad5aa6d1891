"""How a source names and lays out effscale's variables: the per-format part of an import."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from effscale.weights.imported import Path


@dataclasses.dataclass(frozen=True)
class Format:
    """A source format: its key for each effscale variable, its layouts, and how to read its top."""

    name: str  # for messages, e.g. "Keras legacy HDF5"
    key: Callable[[Path], str]  # effscale path -> source key
    to_ours: Callable[[Path, np.ndarray], np.ndarray]  # source layout -> effscale layout
    head_key: str  # source key of the classifier kernel: tells whether the file has a top
    head_classes: Callable[[np.ndarray], int]
    ignorable: Callable[[str], bool]  # source keys that carry no model weight (BN counters, ...)
    block_pattern: str  # regex whose group 1 names one block, to count the file's blocks


def join(path: Path) -> str:
    return "/".join(path)


def first(items: list[str], n: int = 6) -> str:
    """The first `n` items, comma-separated, and how many more there are."""
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
