"""Importing pretrained EfficientNet weights into effscale's variables tree.

Two sources are understood, for every preset B0-B7 and any width / depth that
both sides agree on, with or without the classification top:

* Keras applications (`keras.applications.EfficientNetB0` ... `B7`), mapped by
  layer name (stem_conv, block2a_expand_conv, block2a_se_reduce, top_conv,
  predictions, ...). Three file layouts:
    - legacy HDF5 (``.h5``): the files Keras ships (``efficientnetb0.h5``,
      ``efficientnetb0_notop.h5``), ``model.save('x.h5')`` (weights under a
      ``model_weights`` group) and Keras 3's
      ``legacy_h5_format.save_weights_to_hdf5_group``. One group per layer whose
      ``weight_names`` attribute lists ``layer/weight`` (``:0`` suffixed in
      files written by TF 2.x Keras).
    - Keras 3 ``.weights.h5`` (``model.save_weights``): groups
      ``layers/<class_snake_name>[_N]/vars/<i>`` holding the layer's weights in
      creation order, the layer's name in the ``vars`` group's ``name``
      attribute. Files without that attribute are matched by class and order,
      which Keras numbers in the order the layers were created.
    - Keras 3 ``.keras`` archives (a zip holding ``model.weights.h5``).
* timm PyTorch state dicts of ``tf_efficientnet_b*`` (TF 'SAME' padding and
  BatchNorm epsilon 1e-3, as here): a mapping of names to arrays or tensors, or
  a ``.safetensors`` / ``.pth`` / ``.bin`` / ``.npz`` file.
  ``efficientnet_b*`` (no ``tf_``) weights are refused: they were trained with
  PyTorch's symmetric padding (and BatchNorm epsilon 1e-5), which this model does
  not implement, and their state dicts cannot be told apart from the tf_ ones by
  their keys alone, hence the required `arch` argument.

Layouts: Keras kernels are HWIO like Flax's except the depthwise kernel, stored
(kh, kw, C, 1) by Keras and (kh, kw, 1, C) here; PyTorch convolutions are OIHW
(depthwise: (C, 1, kh, kw)) and Linear weights (out, in).

Input preprocessing. effscale normalises images outside the model: pixels in
[0, 1], then ``(x - mean) / std`` per channel (``config.data.mean/std``,
ImageNet's by default). Keras puts it inside: ``Rescaling(1/255)`` then
``Normalization`` computing ``(x - mean) / sqrt(variance)`` with mean and
variance stored in the weights file. The files Keras ships store the ImageNet
*standard deviations* [0.229, 0.224, 0.225] as the "variance" (tensorflow#49930),
so Keras 3 adds a third layer, ``Rescaling(1 / sqrt(std))``, to models built with
``weights='imagenet'``; with it, the whole chain is ``(x / 255 - mean) / std``,
exactly effscale's preprocessing with the ImageNet mean and std. Models built
with ``weights=None`` lack that layer and divide by ``sqrt(variance)`` only.
`ImportedWeights.normalization` reports the (mean, std) in [0, 1] pixel units
that reproduces the source model: for the shipped variance values (the std
quirk) it is ImageNet's mean and std; for any other stored variance it is
``sqrt(variance)`` (a model built with ``weights=None``). timm models normalise
outside the model too: ImageNet mean / std, except the AdvProp (``ap``) weights,
which expect mean = std = 0.5.

Guarantees: every effscale parameter and BatchNorm statistic is filled from the
file except a top that is deliberately dropped, and every weight in the file is
used except that top; anything else (wrong preset, shapes, layout, class count
with ``top='load'``, missing or truncated file) raises `WeightImportError`
naming what was expected.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from effscale import scaling
from effscale import spec as spec_lib
from effscale.spec import NetworkSpec

LOG = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
SOURCE_BN_EPSILON = 1e-3  # Keras' default and timm's tf_ models; the weights were trained with it
TOP_MODES = ("auto", "load", "drop")
HEAD_MODULE = "predictions"

Path = tuple[str, ...]  # ('params', 'block2a', 'expand_conv', 'kernel')


class WeightImportError(ValueError):
    """Weights that cannot be imported into the model as asked (never a partial load)."""


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """Per-channel normalisation of [0, 1] pixels, ``(x - mean) / std``, that the source model expects."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
    """Imported variables plus what the caller must know about them.

    `variables` is ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays,
    nested like the model's. When the top was dropped (or the file had none) it
    lacks ``params/predictions``, listed in `missing`: merge it into freshly
    initialised variables with `effscale.transfer.merge_imported`.
    """

    variables: dict[str, Any]
    source: str
    dropped_top: bool
    file_num_classes: int | None  # None: the file has no top
    missing: tuple[str, ...]
    normalization: InputNormalization | None


# --------------------------------------------------------------------------------------------------
# What the model expects.


def expected_shapes(spec: NetworkSpec) -> dict[Path, tuple[int, ...]]:
    """Shape of every model variable, keyed by (collection, module..., name); read from the module itself.

    Built with `jax.eval_shape`, so nothing is computed and the names cannot drift from model.py.
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from effscale.model import EfficientNet

    # Shapes do not depend on resolution; a small input keeps tracing cheap.
    model = EfficientNet(spec, depthwise="xla")
    x = jax.ShapeDtypeStruct((1, 32, 32, spec.in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    flat = traverse_util.flatten_dict(jax.tree.map(lambda s: tuple(s.shape), dict(shapes)))
    return dict(flat)


BASE_TOP_LEVEL = ("stem_conv", "stem_bn", "top_conv", "top_bn")  # plus the blocks: what include_top=False keeps
_BLOCK_NAME = re.compile(r"^block\d+[a-z]+$")


def is_base_module(name: str) -> bool:
    """Whether a top-level module belongs to the base (stem, blocks, head convolution), not to the head."""
    return name in BASE_TOP_LEVEL or bool(_BLOCK_NAME.match(name))


def _join(path: Path) -> str:
    return "/".join(path)


def _is_bn(module: Path) -> bool:
    return module[-1] == "bn" or module[-1].endswith("_bn")


# --------------------------------------------------------------------------------------------------
# Shared assembly: a source (key -> array) plus a per-format name map -> effscale variables.


@dataclasses.dataclass(frozen=True)
class _Format:
    name: str  # for messages, e.g. "Keras legacy HDF5"
    key: Callable[[Path], str]  # effscale path -> source key
    to_ours: Callable[[Path, np.ndarray], np.ndarray]  # source layout -> effscale layout
    head_key: str  # source key of the classifier kernel: tells whether the file has a top
    head_classes: Callable[[np.ndarray], int]
    ignorable: Callable[[str], bool]  # source keys that carry no model weight (BN counters, ...)
    block_pattern: str  # regex whose group 1 names one block, to count the file's blocks


def _assemble(
    spec: NetworkSpec, source: Mapping[str, np.ndarray], fmt: _Format, top: str, origin: str
) -> tuple[dict[str, Any], bool, int | None, tuple[str, ...]]:
    from flax import traverse_util

    if top not in TOP_MODES:
        raise ValueError(f"top must be one of {TOP_MODES}, got {top!r}.")
    if not np.isclose(spec.bn_epsilon, SOURCE_BN_EPSILON):
        raise WeightImportError(
            f"{origin}: the imported weights were trained with BatchNorm epsilon {SOURCE_BN_EPSILON}, "
            f"but the model uses {spec.bn_epsilon}: set model.bn_epsilon={SOURCE_BN_EPSILON}."
        )
    expected = expected_shapes(spec)
    file_top = fmt.head_key in source
    file_classes = fmt.head_classes(source[fmt.head_key]) if file_top else None
    _check_structure(spec, source, fmt, origin, file_classes)
    model_top = spec.include_top
    load_top = file_top and model_top and file_classes == spec.num_classes and not spec.head_hidden
    if top == "load" and not load_top:
        if not file_top:
            why = "the file has no top (saved with include_top=False)"
        elif not model_top:
            why = "the model has no top (model.include_top=False)"
        elif spec.head_hidden:
            why = f"the model's head has hidden layers {spec.head_hidden} that the file's classifier never saw"
        else:
            why = f"the file's top has {file_classes} classes and the model {spec.num_classes}"
        raise WeightImportError(f"{origin}: top='load' but {why}.")
    if top == "drop":
        load_top = False
    if file_top and not load_top:
        if top == "drop":
            why = "top='drop'"
        elif not model_top:
            why = "the model has no top"
        elif spec.head_hidden:
            why = f"the model's new head has hidden layers {spec.head_hidden}"
        else:
            why = f"the model has {spec.num_classes} classes; its new head keeps its fresh initialisation"
        LOG.info("%s: dropping the file's %d-class top (%s).", origin, file_classes, why)
    elif model_top and not file_top:
        LOG.info(
            "%s: the file has no top; the model's %d-class head stays freshly initialised.", origin, spec.num_classes
        )
    if load_top and spec.pooling != "avg":
        LOG.warning(
            "%s: the imported classifier was trained on average-pooled features; the model pools with %r.",
            origin,
            spec.pooling,
        )

    out: dict[Path, np.ndarray] = {}
    missing: list[str] = []
    used: set[str] = set()
    mismatched: list[str] = []
    for path, shape in expected.items():
        # Head layers: the classifier comes from the file only when its top is loaded; other head layers
        # (a hidden dense layer, ...) never exist in the source models.
        if not is_base_module(path[1]) and (path[1] != HEAD_MODULE or not load_top):
            missing.append(_join(path))
            continue
        key = fmt.key(path)
        if key not in source:
            continue  # reported below, all at once
        used.add(key)
        value = fmt.to_ours(path, np.asarray(source[key]))
        if tuple(value.shape) != tuple(shape):
            mismatched.append(f"{_join(path)} expects {tuple(shape)}, file {key!r} gives {tuple(value.shape)}")
            continue
        out[path] = value.astype(np.float32)
    if file_top and not load_top:  # a dropped top counts as used even when the model has no head
        used.update(fmt.key(("params", HEAD_MODULE, leaf)) for leaf in ("kernel", "bias"))
    absent = [
        f"{_join(p)} (from {fmt.key(p)!r})"
        for p in expected
        if p not in out and _join(p) not in missing and fmt.key(p) not in source
    ]
    unused = sorted(k for k in source if k not in used and not fmt.ignorable(k))
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + _head(mismatched))
    if absent:
        problems.append(f"{len(absent)} model variables not in the file: " + _head(absent))
    if unused:
        problems.append(f"{len(unused)} file weights with no place in the model: " + _head(unused))
    if problems:
        raise WeightImportError(f"{origin} ({fmt.name}) does not fit the model: " + "; ".join(problems))
    variables = traverse_util.unflatten_dict(out)
    return variables, file_top and not load_top, file_classes, tuple(missing)


def _head(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


@dataclasses.dataclass(frozen=True)
class _Shape:
    """The few numbers that tell EfficientNet variants apart."""

    stem: int | None
    head: int | None
    blocks: int
    classes: int | None = None

    def describe(self) -> str:
        text = f"stem {self.stem} channels, head {self.head} channels, {self.blocks} blocks"
        return text + (f", {self.classes} classes" if self.classes else "")


def _preset_shapes() -> dict[str, _Shape]:
    out = {}
    for name in scaling.PRESETS:
        s = spec_lib.build({"preset": name})
        out[name] = _Shape(s.stem_channels, s.head_channels, len(s.blocks))
    return out


def _guess_preset(shape: _Shape) -> str:
    matches = [
        n for n, s in _preset_shapes().items() if (s.stem, s.head, s.blocks) == (shape.stem, shape.head, shape.blocks)
    ]
    return f" (that is EfficientNet-{matches[0].upper()})" if matches else ""


def _check_structure(
    spec: NetworkSpec,
    source: Mapping[str, np.ndarray],
    fmt: _Format,
    origin: str,
    file_classes: int | None,
) -> None:
    """Compares the coarse structure first, so a file of another preset gets one clear sentence."""
    stem_key = fmt.key(("params", "stem_conv", "kernel"))
    head_key = fmt.key(("params", "top_conv", "kernel"))
    if stem_key not in source or head_key not in source:
        raise WeightImportError(
            f"{origin} has no {stem_key!r} / {head_key!r}: not an EfficientNet in the {fmt.name} layout "
            f"(first keys: {_head(sorted(source)[:6])})."
        )
    stem = fmt.to_ours(("params", "stem_conv", "kernel"), np.asarray(source[stem_key])).shape
    head = fmt.to_ours(("params", "top_conv", "kernel"), np.asarray(source[head_key])).shape
    file_blocks = len({m.group(1) for k in source if (m := re.match(fmt.block_pattern, k))})
    theirs = _Shape(stem[-1], head[-1], file_blocks, file_classes)
    ours = _Shape(
        spec.stem_channels, spec.head_channels, len(spec.blocks), spec.num_classes if spec.include_top else None
    )
    if (theirs.stem, theirs.head, theirs.blocks) != (ours.stem, ours.head, ours.blocks) or stem[2] != spec.in_channels:
        raise WeightImportError(
            f"{origin} holds a different network: {theirs.describe()}{_guess_preset(theirs)}, {stem[2]} input "
            f"channels; the model expects {ours.describe()}{_guess_preset(ours)}, {spec.in_channels} input channels. "
            "Choose the matching model.preset (or width/depth)."
        )


# --------------------------------------------------------------------------------------------------
# Keras.

_KERAS_BN = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def keras_layer_name(path: Path) -> str:
    """Keras layer name of an effscale module path: ('block2a', 'se', 'se_reduce') -> 'block2a_se_reduce'."""
    return "_".join(p for p in path if p != "se")


def _keras_key(path: Path) -> str:
    module, leaf = path[1:-1], path[-1]
    weight = _KERAS_BN[leaf] if _is_bn(module) else leaf
    return f"{keras_layer_name(module)}/{weight}"


def _keras_to_ours(path: Path, value: np.ndarray) -> np.ndarray:
    if path[-2] == "dwconv" and value.ndim == 4:
        return np.transpose(value, (0, 1, 3, 2))  # (kh, kw, C, 1) -> (kh, kw, 1, C)
    return value


_KERAS_FORMAT_BASE = dict(
    key=_keras_key,
    to_ours=_keras_to_ours,
    head_key="predictions/kernel",
    head_classes=lambda kernel: int(kernel.shape[-1]),
    ignorable=lambda key: False,
    block_pattern=r"^(block\d+[a-z]+)_dwconv/",
)

# Keras 3 .weights.h5 keeps a layer's weights by position; the order of each layer kind's weights.
_KERAS_VARS = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "normalization": ("mean", "variance", "count"),
}


def _layer_kind(name: str) -> str | None:
    """Keras class (snake case) of an EfficientNet layer, from its name."""
    if re.fullmatch(r"normalization(_\d+)?", name):
        return "normalization"
    if name.endswith("_bn"):
        return "batch_normalization"
    if name.endswith("dwconv"):
        return "depthwise_conv2d"
    if name.endswith("conv") or name.endswith("se_reduce") or name.endswith("se_expand"):
        return "conv2d"
    if name == "predictions":
        return "dense"
    return None


def keras_layer_order(spec: NetworkSpec, include_top: bool = True) -> list[str]:
    """Names of the weighted Keras layers in the order Keras creates them (for files without names)."""
    names = ["normalization", "stem_conv", "stem_bn"]
    for b in spec.blocks:
        p = b.name + "_"
        if b.expand != 1:
            names += [p + "expand_conv", p + "expand_bn"]
        names += [p + "dwconv", p + "bn"]
        if b.se_channels:
            names += [p + "se_reduce", p + "se_expand"]
        names += [p + "project_conv", p + "project_bn"]
    names += ["top_conv", "top_bn"] + (["predictions"] if include_top else [])
    return names


def _open_h5(path: str | os.PathLike, expected: str):
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No weights file at {path!r} (expected {expected}).")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if "model.weights.h5" in names:  # a Keras 3 .keras archive
                    return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r"), "Keras 3 .keras archive"
        except zipfile.BadZipFile as e:
            raise WeightImportError(f"{path!r} is a damaged zip archive ({e}); expected {expected}.") from e
        raise WeightImportError(
            f"{path!r} is a zip archive without model.weights.h5, e.g. a PyTorch checkpoint (use "
            f"effscale.convert.load_timm for timm weights); expected {expected}."
        )
    try:
        return h5py.File(path, "r"), None
    except OSError as e:
        raise WeightImportError(
            f"Cannot read {path!r} as HDF5 ({e}): the file is truncated or not HDF5; expected {expected}."
        ) from e


def read_keras_h5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Reads a Keras weights file into ``{'layer_name/weight': array}`` and names its layout.

    Understands legacy HDF5 (.h5, also a whole model saved with ``model.save('x.h5')``),
    Keras 3 ``.weights.h5`` and ``.keras`` archives. Weights of models nested in the
    saved model (a base inside a transfer model) keep their own layer names.
    """
    expected = "a Keras EfficientNet weights file (.h5, .weights.h5 or .keras)"
    f, layout = _open_h5(path, expected)
    try:
        if "layers" in f and isinstance(f["layers"], _h5_group()) and "layer_names" not in f.attrs:
            return _read_keras3(f["layers"], path), layout or "Keras 3 .weights.h5"
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            return _read_legacy(root), layout or "Keras legacy HDF5"
        keys = list(f.keys())[:8]
        raise WeightImportError(
            f"{os.fspath(path)!r} is HDF5 but neither a Keras legacy weights file (no 'layer_names' attribute) nor "
            f"a Keras 3 .weights.h5 (no 'layers' group); top-level keys: {keys}. Expected {expected}."
        )
    except OSError as e:  # h5py reports truncated datasets only when they are read
        raise WeightImportError(f"Cannot read {os.fspath(path)!r}: {e} (truncated file?); expected {expected}.") from e
    finally:
        f.close()


def _h5_group():
    import h5py

    return h5py.Group


def _decode(x: Any) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _read_legacy(root) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for layer in root.attrs["layer_names"]:
        layer = _decode(layer)
        group = root[layer]
        for weight_name in group.attrs.get("weight_names", []):
            weight_name = _decode(weight_name)
            parts = weight_name.split(":")[0].split("/")
            # 'stem_conv/kernel:0' (TF 2.x), 'stem_conv/kernel' (Keras 3), 'base/stem_conv/kernel' (nested).
            owner = parts[-2] if len(parts) > 1 else layer
            # Keras numbers a second model's Normalization layer normalization_1, ...: one per file all the same.
            owner = "normalization" if re.fullmatch(r"normalization(_\d+)?", owner) else owner
            key = f"{owner}/{parts[-1]}"
            if key in out:
                raise WeightImportError(f"Weight {key!r} appears twice in the file (two models with the same layers?).")
            out[key] = np.asarray(group[weight_name])
    return out


def _read_keras3(layers, path: Any) -> dict[str, np.ndarray]:
    """Reads ``layers/<key>/vars/<i>`` groups, naming them by the 'name' attribute or by creation order."""
    by_kind: dict[str, list[tuple[int, str]]] = {}
    named: dict[str, Any] = {}
    unnamed: list[str] = []
    for key in layers:
        vars_group = layers[key].get("vars")
        if vars_group is None or len(vars_group) == 0:
            continue
        name = vars_group.attrs.get("name")
        if name is not None:
            named[_decode(name)] = vars_group
        else:
            unnamed.append(key)
            m = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
            by_kind.setdefault(m.group(1), []).append((int(m.group(2) or 0), key))
    if unnamed:
        # Keras numbers each layer kind in creation order (conv2d, conv2d_1, ...), which for this network is
        # the order keras_layer_order() lists; the count per kind also tells the preset apart.
        for kind, entries in by_kind.items():
            entries.sort()
            names = [n for n in _all_keras_names_for(kind, len(entries), by_kind) if n]
            for (_, key), name in zip(entries, names, strict=False):
                named[name] = layers[key]["vars"]
    out: dict[str, np.ndarray] = {}
    for name, group in named.items():
        kind = _layer_kind(name)
        if kind is None:
            raise WeightImportError(f"{os.fspath(path)!r}: layer {name!r} is not part of an EfficientNet.")
        weights = _KERAS_VARS[kind]
        if len(group) > len(weights):
            raise WeightImportError(
                f"{os.fspath(path)!r}: layer {name!r} holds {len(group)} weights, expected {weights}."
            )
        for i in range(len(group)):
            out[f"{'normalization' if kind == 'normalization' else name}/{weights[i]}"] = np.asarray(group[str(i)])
    return out


def _all_keras_names_for(kind: str, count: int, by_kind: Mapping[str, list]) -> list[str]:
    """Layer names of one kind in creation order, for the preset whose layer counts match the file."""
    for preset in scaling.PRESETS:
        s = spec_lib.build({"preset": preset})
        counts = {}
        for include_top in (True, False):
            order = keras_layer_order(s, include_top)
            for k in by_kind:
                counts[k] = sum(1 for n in order if _layer_kind(n) == k)
            if all(counts[k] == len(v) for k, v in by_kind.items()):
                return [n for n in order if _layer_kind(n) == kind]
    raise WeightImportError(
        "A Keras 3 .weights.h5 without layer names whose layer counts match no EfficientNet preset "
        f"({ {k: len(v) for k, v in by_kind.items()} }); re-save it with a recent Keras."
    )


def _keras_normalization(source: dict[str, np.ndarray]) -> InputNormalization | None:
    """The [0, 1]-pixel normalisation that reproduces the Keras model (see the module docstring)."""
    mean, variance = source.pop("normalization/mean", None), source.pop("normalization/variance", None)
    source.pop("normalization/count", None)
    if mean is None or variance is None:
        return None
    mean, variance = np.asarray(mean, np.float64).ravel(), np.asarray(variance, np.float64).ravel()
    # The shipped-weights quirk: "variance" holds the std, and Keras' weights='imagenet' graph divides
    # by sqrt(std) twice, i.e. by std. Any other variance: a weights=None graph, dividing by sqrt(variance).
    quirk = np.allclose(variance, IMAGENET_STD, atol=1e-6)
    std = np.asarray(IMAGENET_STD) if quirk else np.sqrt(variance)
    return InputNormalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))


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
      `ImportedWeights`; merge into fresh variables with `effscale.transfer.merge_imported`
      when the top was dropped. `normalization` tells the mean/std (for [0, 1] pixels) that
      reproduce the Keras model, which applied them inside the model.
    """
    source, layout = read_keras_h5(path)
    if any(k.startswith(("conv_stem", "blocks.")) for k in source):
        raise WeightImportError(f"{os.fspath(path)!r} holds timm (PyTorch) names: use effscale.convert.load_timm.")
    normalization = _keras_normalization(source)
    fmt = _Format(name=layout, **_KERAS_FORMAT_BASE)
    variables, dropped, classes, missing = _assemble(spec, source, fmt, top, repr(os.fspath(path)))
    return ImportedWeights(variables, layout, dropped, classes, missing, normalization)


def load_keras_model(model: Any, spec: NetworkSpec, *, top: str = "auto") -> ImportedWeights:
    """Imports the weights of an in-memory Keras EfficientNet (a `keras.Model`), same rules as `load_keras`."""
    source: dict[str, np.ndarray] = {}
    for layer in model.layers:
        kind = _layer_kind(layer.name)
        if kind is None or not layer.weights:
            if layer.weights:
                raise WeightImportError(f"Keras layer {layer.name!r} is not part of an EfficientNet.")
            continue
        for w in layer.weights:
            name = "normalization" if kind == "normalization" else layer.name
            source[f"{name}/{w.path.split('/')[-1]}"] = np.asarray(w.numpy())
    normalization = _keras_normalization(source)
    fmt = _Format(name="Keras model", **_KERAS_FORMAT_BASE)
    variables, dropped, classes, missing = _assemble(spec, source, fmt, top, f"Keras model {model.name!r}")
    return ImportedWeights(variables, "keras-model", dropped, classes, missing, normalization)


# --------------------------------------------------------------------------------------------------
# timm.

_TIMM_ARCH = re.compile(r"^(tf_)?efficientnet_(b[0-7])(?:_(ns|ap))?(?:\.([a-z0-9_]+))?$")
_TIMM_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def timm_key(path: Path, spec: NetworkSpec) -> str:
    """timm state-dict key of an effscale variable path."""
    module, leaf = path[1:-1], path[-1]
    bn = _is_bn(module)
    param = _TIMM_BN[leaf] if bn else ("weight" if leaf == "kernel" else leaf)
    top_level = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2"}
    if module[0] in top_level:
        return f"{top_level[module[0]]}.{param}"
    if module[0] == HEAD_MODULE:
        return f"classifier.{param}"
    block = _block_index(spec)[module[0]]
    stage, j = block.stage - 1, _index_in_stage(spec, block)
    # timm builds expand-1 blocks as DepthwiseSeparableConv (conv_dw, bn1, se, conv_pw, bn2) and the
    # others as InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3).
    names = (
        {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"}
        if block.expand == 1
        else {
            "expand_conv": "conv_pw",
            "expand_bn": "bn1",
            "dwconv": "conv_dw",
            "bn": "bn2",
            "project_conv": "conv_pwl",
            "project_bn": "bn3",
        }
    )
    sub = (
        "se." + {"se_reduce": "conv_reduce", "se_expand": "conv_expand"}[module[2]]
        if module[1] == "se"
        else names[module[1]]
    )
    return f"blocks.{stage}.{j}.{sub}.{param}"


def _block_index(spec: NetworkSpec) -> dict[str, spec_lib.BlockSpec]:
    return {b.name: b for b in spec.blocks}


def _index_in_stage(spec: NetworkSpec, block: spec_lib.BlockSpec) -> int:
    return sum(1 for b in spec.blocks if b.stage == block.stage and b.index < block.index)


def _timm_to_ours(path: Path, value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO; depthwise (C, 1, kh, kw) -> (kh, kw, 1, C)
    if value.ndim == 2:
        return value.T  # Linear (out, in) -> Dense (in, out)
    return value


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A PyTorch state dict as numpy arrays: from a mapping, or a .safetensors / .pth / .pt / .bin / .npz file."""
    if not isinstance(source, Mapping):
        path = os.fspath(source)
        expected = "a timm state dict (.safetensors, .pth, .pt, .bin or .npz)"
        if not os.path.exists(path):
            raise FileNotFoundError(f"No weights file at {path!r} (expected {expected}).")
        if path.endswith(".safetensors"):
            try:
                from safetensors.numpy import load_file
            except ImportError as e:
                raise WeightImportError(f"Reading {path!r} needs the 'safetensors' package.") from e
            try:
                source = load_file(path)
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise WeightImportError(f"Cannot read {path!r} as safetensors ({e}); expected {expected}.") from e
        elif path.endswith(".npz"):
            try:
                with np.load(path) as z:
                    source = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
                raise WeightImportError(f"Cannot read {path!r} as .npz ({e}); expected {expected}.") from e
        elif path.endswith((".pth", ".pt", ".bin", ".ckpt")):
            try:
                import torch
            except ImportError as e:
                raise WeightImportError(
                    f"Reading {path!r} needs torch; or save the state dict with safetensors / numpy and load that."
                ) from e
            try:
                source = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch raises many error types for bad files
                raise WeightImportError(f"Cannot read {path!r} with torch.load ({e}); expected {expected}.") from e
        elif path.endswith(".h5") or path.endswith(".keras"):
            raise WeightImportError(f"{path!r} looks like a Keras file: use effscale.convert.load_keras.")
        else:
            raise WeightImportError(f"Unknown file type {path!r}; expected {expected}.")
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if wrapper in source and isinstance(source[wrapper], Mapping):
            source = source[wrapper]
            break
    out = {}
    for k, v in source.items():
        out[k[len("module.") :] if k.startswith("module.") else k] = _to_numpy(v)
    return out


def timm_normalization(arch: str) -> InputNormalization:
    """The normalisation a timm tf_efficientnet checkpoint expects: ImageNet's, or 0.5 / 0.5 for AdvProp."""
    m = _TIMM_ARCH.match(arch)
    advprop = m is not None and (m.group(3) == "ap" or (m.group(4) or "").startswith("ap"))
    return (
        InputNormalization(INCEPTION_MEAN, INCEPTION_STD)
        if advprop
        else InputNormalization(IMAGENET_MEAN, IMAGENET_STD)
    )


def load_timm(
    state_dict: str | os.PathLike | Mapping[str, Any], spec: NetworkSpec, *, arch: str, top: str = "auto"
) -> ImportedWeights:
    """Imports a timm ``tf_efficientnet_b*`` state dict into effscale variables for `spec`.

    Args:
      state_dict: a mapping of names to arrays / torch tensors (``model.state_dict()``), or a
        file (.safetensors, .pth / .pt / .bin, .npz).
      spec: the network to fill; its structure must match the checkpoint's.
      arch: the timm model name, e.g. 'tf_efficientnet_b3' or 'tf_efficientnet_b3.ns_jft_in1k'.
        Required because tf_ (TF 'SAME' padding, like this model) and plain efficientnet_b*
        (symmetric padding) checkpoints have identical keys; the latter are refused.
      top: as in `load_keras`.
    """
    m = _TIMM_ARCH.match(arch.strip())
    if m is None:
        raise WeightImportError(
            f"Unknown timm architecture {arch!r}: expected 'tf_efficientnet_b0' ... 'tf_efficientnet_b7' "
            "(optionally with a pretrained tag, e.g. 'tf_efficientnet_b0.ns_jft_in1k')."
        )
    if not m.group(1):
        raise WeightImportError(
            f"{arch!r} was trained with PyTorch's symmetric padding (and BatchNorm epsilon 1e-5); effscale "
            f"implements TF 'SAME' padding only. Use the 'tf_{arch}' weights instead."
        )
    source = read_state_dict(state_dict)
    if any(k.startswith(("stem_conv/", "block1a_")) for k in source):
        raise WeightImportError(f"{arch}: these are Keras layer names: use effscale.convert.load_keras.")
    fmt = _Format(
        name=f"timm {arch}",
        key=lambda path: timm_key(path, spec),
        to_ours=_timm_to_ours,
        head_key="classifier.weight",
        head_classes=lambda w: int(w.shape[0]),
        ignorable=lambda key: key.endswith("num_batches_tracked"),
        block_pattern=r"^blocks\.(\d+\.\d+)\.",
    )
    origin = f"timm state dict for {arch}" if isinstance(state_dict, Mapping) else repr(os.fspath(state_dict))
    _check_timm_blocks(source, spec, origin)
    variables, dropped, classes, missing = _assemble(spec, source, fmt, top, origin)
    return ImportedWeights(variables, "timm", dropped, classes, missing, timm_normalization(arch))


def _check_timm_blocks(source: Mapping[str, np.ndarray], spec: NetworkSpec, origin: str) -> None:
    """timm keys blocks by (stage, index): a preset mismatch shows as a different count per stage."""
    theirs: dict[int, set[int]] = {}
    for k in source:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", k)
        if m:
            theirs.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not theirs:
        return  # not timm-shaped at all: _check_structure names what is missing
    file_repeats = [len(theirs.get(s, ())) for s in range(max(theirs) + 1)]
    ours = [st.repeats for st in spec.stages]
    if file_repeats != ours:
        stem = source.get("conv_stem.weight")
        head = source.get("conv_head.weight")
        shape = _Shape(
            None if stem is None else int(stem.shape[0]),
            None if head is None else int(head.shape[0]),
            sum(file_repeats),
        )
        model = _Shape(spec.stem_channels, spec.head_channels, len(spec.blocks))
        raise WeightImportError(
            f"{origin} holds a different network: blocks per stage {file_repeats}, {shape.describe()}"
            f"{_guess_preset(shape)}; the model has {ours}, {model.describe()}{_guess_preset(model)}. "
            "Choose the matching model.preset (or width/depth)."
        )


def to_timm_state_dict(variables: Mapping[str, Any], spec: NetworkSpec) -> dict[str, np.ndarray]:
    """effscale variables -> a timm tf_efficientnet state dict (numpy, PyTorch layouts); the inverse of `load_timm`.

    Used to test the mapping without torch, and to hand weights trained here to PyTorch users.
    """
    from flax import traverse_util

    out = {}
    for path, value in traverse_util.flatten_dict(dict(variables)).items():
        value = np.asarray(value, np.float32)
        if value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))
        elif value.ndim == 2:
            value = value.T
        out[timm_key(path, spec)] = value
    return out


# ----------------------------------------------------------------------------- initial weights


def load_initial(init: Any, net: NetworkSpec) -> ImportedWeights | dict[str, Any]:
    """The initial weights `config.init` names, for `net` (numpy arrays).

    The one entry point for initial weights: a Keras file, a timm state dict or another
    effscale workdir (`init.source`, or told from the path when 'auto'). Raises ValueError
    (WeightImportError) when they cannot be used.
    """
    path, source = str(init.weights), init.source
    if source == "auto":
        if os.path.isdir(path):
            source = "effscale"
        elif path.endswith((".h5", ".keras")):
            source = "keras"
        elif path.endswith((".safetensors", ".pth", ".pt", ".bin", ".npz")):
            source = "timm"
        else:
            raise ValueError(
                f"config.init.weights={path!r}: cannot tell the format from the name; set config.init.source to "
                "'keras', 'timm' or 'effscale'."
            )
    if source == "keras":
        return load_keras(path, net, top=init.top)
    if source == "timm":
        if not init.timm_arch:
            raise ValueError("config.init.source='timm' needs config.init.timm_arch, e.g. 'tf_efficientnet_b0'.")
        return load_timm(path, net, arch=init.timm_arch, top=init.top)
    if source == "effscale":
        return _load_workdir(path, net, init.top)
    raise ValueError(f"config.init.source must be 'auto', 'keras', 'timm' or 'effscale', got {source!r}.")


def _load_workdir(workdir: str, net: NetworkSpec, top: str) -> dict[str, Any]:
    """The raw weights and BatchNorm statistics of an effscale workdir's latest checkpoint, top per `top`."""
    if top not in TOP_MODES:
        raise ValueError(f"config.init.top must be one of {TOP_MODES}, got {top!r}.")
    import jax

    from effscale import checkpoint  # the trainer's checkpoints; imported here to keep convert light

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
    head = variables["params"].get(HEAD_MODULE)
    if head is not None:
        theirs = int(np.shape(head["kernel"])[-1])
        same = net.include_top and theirs == net.num_classes
        if top == "load" and not same:
            raise WeightImportError(
                f"{workdir}: its top has {theirs} classes, the model {net.num_classes if net.include_top else 'none'}."
            )
        if top == "drop" or not same:
            del variables["params"][HEAD_MODULE]
            LOG.info("Dropped the %d-class top of %s: the new head starts fresh.", theirs, workdir)
    elif top == "load":
        raise WeightImportError(f"{workdir}: top='load' but its checkpoint has no top.")
    return variables
