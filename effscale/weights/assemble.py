"""A source's weights (key -> array, in a `Format`) put into effscale's variables tree, checked.

The steps: check the request (top mode, BatchNorm epsilon), compare the coarse structure,
decide about the top, map every model variable to its source weight, then report everything
that does not fit at once. Nothing is returned unless every variable fits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from effscale import layers
from effscale.spec import NetworkSpec
from effscale.weights import structure
from effscale.weights.imported import (
    SOURCE_BN_EPSILON,
    ImportedWeights,
    Path,
    WeightImportError,
    check_top_mode,
)
from effscale.weights.names import Format, first, join
from effscale.weights.normalization import InputNormalization

LOG = logging.getLogger(__name__)
HEAD_MODULE = layers.HEAD_MODULE


def expected_shapes(spec: NetworkSpec) -> dict[Path, tuple[int, ...]]:
    """Shape of every model variable, keyed by (collection, module..., name); read from the module itself.

    Abstract (`model.abstract_variables`): nothing is computed and the names cannot drift from the model.
    """
    import jax
    from flax import traverse_util

    from effscale.model import EfficientNet, abstract_variables

    shapes = abstract_variables(EfficientNet(spec, depthwise="xla"))
    return dict(traverse_util.flatten_dict(jax.tree.map(lambda s: tuple(s.shape), dict(shapes))))


@dataclasses.dataclass(frozen=True)
class _Top:
    """The source's top and what this import does with it."""

    in_file: bool
    classes: int | None
    load: bool

    @property
    def dropped(self) -> bool:
        return self.in_file and not self.load


def assemble(
    spec: NetworkSpec,
    source: Mapping[str, np.ndarray],
    fmt: Format,
    top: str,
    origin: str,
    *,
    layout: str,
    normalization: InputNormalization | None,
) -> ImportedWeights:
    """effscale variables for `spec` from `source`, or `WeightImportError` listing everything that does not fit.

    `origin` names the source in messages; `layout` goes into the result (`ImportedWeights.source`).
    """
    from flax import traverse_util

    _check_request(spec, top, origin)
    in_file = fmt.head_key in source
    classes = fmt.head_classes(source[fmt.head_key]) if in_file else None
    structure.check(spec, source, fmt, origin, classes)
    plan = _decide_top(spec, top, in_file, classes, origin)
    expected = expected_shapes(spec)
    missing = tuple(join(p) for p in expected if not _from_source(p, plan))
    out, mismatched = _map_values(expected, source, fmt, plan)
    _report(expected, source, fmt, plan, out, missing, mismatched, origin)
    return ImportedWeights(traverse_util.unflatten_dict(out), layout, plan.dropped, classes, missing, normalization)


def _check_request(spec: NetworkSpec, top: str, origin: str) -> None:
    check_top_mode(top)
    if not np.isclose(spec.bn_epsilon, SOURCE_BN_EPSILON):
        raise WeightImportError(
            f"{origin}: the imported weights were trained with BatchNorm epsilon {SOURCE_BN_EPSILON}, "
            f"but the model uses {spec.bn_epsilon}: set model.bn_epsilon={SOURCE_BN_EPSILON}."
        )


def _decide_top(spec: NetworkSpec, top: str, in_file: bool, classes: int | None, origin: str) -> _Top:
    """Whether the file's classifier is loaded: errors for an impossible top='load', logs what is dropped."""
    fits = in_file and spec.include_top and classes == spec.num_classes and not spec.head_hidden
    if top == "load" and not fits:
        raise WeightImportError(f"{origin}: top='load' but {_why_not_loadable(spec, in_file, classes)}.")
    plan = _Top(in_file, classes, fits and top != "drop")
    if plan.dropped:
        LOG.info("%s: dropping the file's %d-class top (%s).", origin, classes, _why_dropped(spec, top))
    elif spec.include_top and not in_file:
        LOG.info(
            "%s: the file has no top; the model's %d-class head stays freshly initialised.", origin, spec.num_classes
        )
    if plan.load and spec.pooling != "avg":
        LOG.warning(
            "%s: the imported classifier was trained on average-pooled features; the model pools with %r.",
            origin,
            spec.pooling,
        )
    return plan


def _why_not_loadable(spec: NetworkSpec, in_file: bool, classes: int | None) -> str:
    if not in_file:
        return "the file has no top (saved with include_top=False)"
    if not spec.include_top:
        return "the model has no top (model.include_top=False)"
    if spec.head_hidden:
        return f"the model's head has hidden layers {spec.head_hidden} that the file's classifier never saw"
    return f"the file's top has {classes} classes and the model {spec.num_classes}"


def _why_dropped(spec: NetworkSpec, top: str) -> str:
    if top == "drop":
        return "top='drop'"
    if not spec.include_top:
        return "the model has no top"
    if spec.head_hidden:
        return f"the model's new head has hidden layers {spec.head_hidden}"
    return f"the model has {spec.num_classes} classes; its new head keeps its fresh initialisation"


def _from_source(path: Path, plan: _Top) -> bool:
    """Base variables come from the source; of the head only the classifier, and only when the top is loaded.

    Other head layers (a hidden dense layer, ...) never exist in the source models.
    """
    return layers.is_base_module(path[1]) or (path[1] == HEAD_MODULE and plan.load)


def _map_values(
    expected: Mapping[Path, tuple[int, ...]], source: Mapping[str, np.ndarray], fmt: Format, plan: _Top
) -> tuple[dict[Path, np.ndarray], list[str]]:
    """The source's value for each expected variable that it holds in the right shape, and the shape mismatches."""
    out: dict[Path, np.ndarray] = {}
    mismatched: list[str] = []
    for path, shape in expected.items():
        key = fmt.key(path) if _from_source(path, plan) else None
        if key is None or key not in source:
            continue  # absent ones are reported by _report, all at once
        value = fmt.to_ours(path, np.asarray(source[key]))
        if tuple(value.shape) != tuple(shape):
            mismatched.append(f"{join(path)} expects {tuple(shape)}, file {key!r} gives {tuple(value.shape)}")
            continue
        out[path] = value.astype(np.float32)
    return out, mismatched


def _report(
    expected: Mapping[Path, Any],
    source: Mapping[str, np.ndarray],
    fmt: Format,
    plan: _Top,
    out: Mapping[Path, np.ndarray],
    missing: tuple[str, ...],
    mismatched: list[str],
    origin: str,
) -> None:
    """One error naming the shape mismatches, the model variables the source lacks and the source weights left over."""
    wanted = [p for p in expected if _from_source(p, plan)]
    used = {fmt.key(p) for p in wanted}
    if plan.dropped:  # a dropped top counts as used even when the model has no head
        used.update(fmt.key(("params", HEAD_MODULE, leaf)) for leaf in ("kernel", "bias"))
    absent = [f"{join(p)} (from {fmt.key(p)!r})" for p in wanted if p not in out and fmt.key(p) not in source]
    unused = sorted(k for k in source if k not in used and not fmt.ignorable(k))
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + first(mismatched))
    if absent:
        problems.append(f"{len(absent)} model variables not in the file: " + first(absent))
    if unused:
        problems.append(f"{len(unused)} file weights with no place in the model: " + first(unused))
    if problems:
        raise WeightImportError(f"{origin} ({fmt.name}) does not fit the model: " + "; ".join(problems))
