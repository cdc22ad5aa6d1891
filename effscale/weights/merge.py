"""Imported weights put into freshly initialised variables (the head an import leaves out stays fresh)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from effscale import layers
from effscale.weights.imported import ImportedWeights


def merge_imported(fresh: Mapping[str, Any], imported: ImportedWeights | Mapping[str, Any]) -> dict[str, Any]:
    """Freshly initialised variables with every imported value put in; returns a new tree.

    Leaves missing from `imported` must be head leaves (the dropped top); a base leaf
    missing, any leaf the model lacks, or a shape mismatch is an error.
    """
    import jax.numpy as jnp
    from flax import traverse_util

    variables = imported.variables if isinstance(imported, ImportedWeights) else imported
    fresh_flat = traverse_util.flatten_dict(dict(fresh))
    new_flat = traverse_util.flatten_dict(dict(variables))
    extra = sorted("/".join(p) for p in new_flat if p not in fresh_flat)
    if extra:
        raise ValueError(f"Imported variables the model does not have: {', '.join(extra[:6])}.")
    out = {}
    missing_base = []
    for path, value in fresh_flat.items():
        if path not in new_flat:
            if len(path) > 1 and layers.is_base_module(path[1]):
                missing_base.append("/".join(path))
            out[path] = value
            continue
        new = new_flat[path]
        if tuple(np.shape(new)) != tuple(np.shape(value)):
            raise ValueError(f"{'/'.join(path)}: imported shape {np.shape(new)}, model {np.shape(value)}.")
        out[path] = jnp.asarray(new, dtype=value.dtype)
    if missing_base:
        raise ValueError(f"The imported weights leave base variables unset: {', '.join(missing_base[:6])}.")
    return traverse_util.unflatten_dict(out)
