"""Reading Keras weights files into ``{'layer_name/weight': array}``.

Three layouts:

- legacy HDF5 (``.h5``): the files Keras ships (``efficientnetb0.h5``, ``efficientnetb0_notop.h5``),
  ``model.save('x.h5')`` (weights under a ``model_weights`` group) and Keras 3's
  ``legacy_h5_format.save_weights_to_hdf5_group``. One group per layer whose ``weight_names``
  attribute lists ``layer/weight`` (``:0`` suffixed in files written by TF 2.x Keras).
- Keras 3 ``.weights.h5`` (``model.save_weights``): groups ``layers/<class_snake_name>[_N]/vars/<i>``
  holding the layer's weights in creation order, the layer's name in the ``vars`` group's ``name``
  attribute. Files without that attribute are matched by class and order, which Keras numbers in
  the order the layers were created.
- Keras 3 ``.keras`` archives (a zip holding ``model.weights.h5``).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from effscale import scaling, storage
from effscale import spec as spec_lib
from effscale.weights.imported import WeightImportError
from effscale.weights.keras_names import NORMALIZATION, VARS, keras_layer_order, layer_class, layer_classes

EXPECTED = "a Keras EfficientNet weights file (.h5, .weights.h5 or .keras)"


def read_keras_h5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Reads a Keras weights file into ``{'layer_name/weight': array}`` and names its layout.

    Understands legacy HDF5 (.h5, also a whole model saved with ``model.save('x.h5')``),
    Keras 3 ``.weights.h5`` and ``.keras`` archives. Weights of models nested in the
    saved model (a base inside a transfer model) keep their own layer names.
    """
    f, layout = _open_h5(path)
    try:
        if "layers" in f and isinstance(f["layers"], _h5_group()) and "layer_names" not in f.attrs:
            return _read_keras3(f["layers"], path), layout or "Keras 3 .weights.h5"
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            return _read_legacy(root), layout or "Keras legacy HDF5"
        keys = list(f.keys())[:8]
        raise WeightImportError(
            f"{os.fspath(path)!r} is HDF5 but neither a Keras legacy weights file (no 'layer_names' attribute) nor "
            f"a Keras 3 .weights.h5 (no 'layers' group); top-level keys: {keys}. Expected {EXPECTED}."
        )
    except OSError as e:  # h5py reports truncated datasets only when they are read
        raise WeightImportError(f"Cannot read {os.fspath(path)!r}: {e} (truncated file?); expected {EXPECTED}.") from e
    finally:
        f.close()


def _open_h5(path: str | os.PathLike):
    import h5py

    path = os.fspath(path)
    if not storage.exists(path):
        raise FileNotFoundError(f"No weights file at {path!r} (expected {EXPECTED}).")
    source, magic = _source(path)
    if magic[:2] == b"PK":
        try:
            with zipfile.ZipFile(source) as z:
                if "model.weights.h5" in z.namelist():  # a Keras 3 .keras archive
                    return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r"), "Keras 3 .keras archive"
        except zipfile.BadZipFile as e:
            raise WeightImportError(f"{path!r} is a damaged zip archive ({e}); expected {EXPECTED}.") from e
        raise WeightImportError(
            f"{path!r} is a zip archive without model.weights.h5, e.g. a PyTorch checkpoint (use "
            f"effscale.convert.load_timm for timm weights); expected {EXPECTED}."
        )
    try:
        return h5py.File(source, "r"), None
    except OSError as e:
        raise WeightImportError(
            f"Cannot read {path!r} as HDF5 ({e}): the file is truncated or not HDF5; expected {EXPECTED}."
        ) from e


def _source(path: str) -> tuple[str | io.BytesIO, bytes]:
    """What h5py and zipfile are to read, and its first bytes: a local file in place, a gs:// object from memory."""
    if storage.is_object_store(path):
        data = storage.read_bytes(path)  # h5py needs random access, which a bucket object has only at a request each
        return io.BytesIO(data), data[:8]
    with storage.path(path).open("rb") as f:
        return path, f.read(8)


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
            owner = NORMALIZATION if re.fullmatch(r"normalization(_\d+)?", owner) else owner
            key = f"{owner}/{parts[-1]}"
            if key in out:
                raise WeightImportError(f"Weight {key!r} appears twice in the file (two models with the same layers?).")
            out[key] = np.asarray(group[weight_name])
    return out


def _read_keras3(groups, path: Any) -> dict[str, np.ndarray]:
    """Reads ``layers/<key>/vars/<i>`` groups, naming them by the 'name' attribute or by creation order."""
    classes = layer_classes()
    named = _name_keras3_groups(groups, classes)
    out: dict[str, np.ndarray] = {}
    for name, group in named.items():
        kind = layer_class(name, classes)
        if kind is None:
            raise WeightImportError(f"{os.fspath(path)!r}: layer {name!r} is not part of an EfficientNet.")
        weights = VARS[kind]
        if len(group) > len(weights):
            raise WeightImportError(
                f"{os.fspath(path)!r}: layer {name!r} holds {len(group)} weights, expected {weights}."
            )
        for i in range(len(group)):
            out[f"{NORMALIZATION if kind == NORMALIZATION else name}/{weights[i]}"] = np.asarray(group[str(i)])
    return out


def _name_keras3_groups(groups, classes: Mapping[str, str]) -> dict[str, Any]:
    """Layer name -> its 'vars' group, from the 'name' attribute, or else from the class's creation order."""
    by_kind: dict[str, list[tuple[int, str]]] = {}
    named: dict[str, Any] = {}
    for key in groups:
        vars_group = groups[key].get("vars")
        if vars_group is None or len(vars_group) == 0:
            continue
        name = vars_group.attrs.get("name")
        if name is not None:
            named[_decode(name)] = vars_group
        else:
            m = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
            by_kind.setdefault(m.group(1), []).append((int(m.group(2) or 0), key))
    # Keras numbers each layer class in creation order (conv2d, conv2d_1, ...), which for this network is
    # the order keras_layer_order() lists; the count per class also tells the preset apart.
    for kind, entries in by_kind.items():
        names = _keras_names_of_class(kind, by_kind, classes)
        for (_, key), name in zip(sorted(entries), names, strict=False):
            named[name] = groups[key]["vars"]
    return named


def _keras_names_of_class(kind: str, by_kind: Mapping[str, list], classes: Mapping[str, str]) -> list[str]:
    """Layer names of one class in creation order, for the preset whose layer counts match the file."""
    for preset in scaling.PRESETS:
        s = spec_lib.build({"preset": preset})
        for include_top in (True, False):
            order = [(n, layer_class(n, classes)) for n in keras_layer_order(s, include_top)]
            if all(sum(1 for _, c in order if c == k) == len(v) for k, v in by_kind.items()):
                return [n for n, c in order if c == kind]
    raise WeightImportError(
        "A Keras 3 .weights.h5 without layer names whose layer counts match no EfficientNet preset "
        f"({ {k: len(v) for k, v in by_kind.items()} }); re-save it with a recent Keras."
    )
