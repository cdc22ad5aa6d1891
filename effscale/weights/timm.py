"""timm PyTorch state dicts of ``tf_efficientnet_b*`` (TF 'SAME' padding and BatchNorm epsilon 1e-3, as here).

A state dict is a mapping of names to arrays or tensors, or a ``.safetensors`` / ``.pth`` / ``.bin``
/ ``.npz`` file. ``efficientnet_b*`` (no ``tf_``) weights are refused: they were trained with
PyTorch's symmetric padding (and BatchNorm epsilon 1e-5), which this model does not implement, and
their state dicts cannot be told apart from the tf_ ones by their keys alone, hence the required
`arch` argument. PyTorch convolutions are OIHW (depthwise: (C, 1, kh, kw)), Linear weights (out, in).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from effscale import layers, storage
from effscale.spec import BlockSpec, NetworkSpec
from effscale.weights import normalization, structure
from effscale.weights.assemble import assemble
from effscale.weights.imported import ImportedWeights, Path, WeightImportError
from effscale.weights.names import Format

_TIMM_ARCH = re.compile(r"^(tf_)?efficientnet_(b[0-7])(?:_(ns|ap))?(?:\.([a-z0-9_]+))?$")
_BN_WEIGHTS = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_TOP_LEVEL = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2"}
# timm builds expand-1 blocks as DepthwiseSeparableConv (conv_dw, bn1, se, conv_pw, bn2) and the
# others as InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3).
_SEPARABLE = {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"}
_INVERTED = {
    "expand_conv": "conv_pw",
    "expand_bn": "bn1",
    "dwconv": "conv_dw",
    "bn": "bn2",
    "project_conv": "conv_pwl",
    "project_bn": "bn3",
}
_SE = {"se_reduce": "conv_reduce", "se_expand": "conv_expand"}
STATE_DICT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def timm_key(path: Path, spec: NetworkSpec) -> str:
    """timm state-dict key of an effscale variable path."""
    module, leaf = path[1:-1], path[-1]
    param = _BN_WEIGHTS[leaf] if layers.is_batchnorm(module) else ("weight" if leaf == "kernel" else leaf)
    if module[0] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[module[0]]}.{param}"
    if module[0] == layers.HEAD_MODULE:
        return f"classifier.{param}"
    block = {b.name: b for b in spec.blocks}[module[0]]
    names = _SEPARABLE if block.expand == 1 else _INVERTED
    sub = f"se.{_SE[module[2]]}" if module[1] == layers.SE else names[module[1]]
    return f"blocks.{block.stage - 1}.{_index_in_stage(spec, block)}.{sub}.{param}"


def _index_in_stage(spec: NetworkSpec, block: BlockSpec) -> int:
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
        source = _read_file(os.fspath(source))
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if wrapper in source and isinstance(source[wrapper], Mapping):
            source = source[wrapper]
            break
    return {(k[len("module.") :] if k.startswith("module.") else k): _to_numpy(v) for k, v in source.items()}


def _read_file(path: str) -> Mapping[str, Any]:
    expected = "a timm state dict (.safetensors, .pth, .pt, .bin or .npz)"
    if not storage.exists(path):
        raise FileNotFoundError(f"No weights file at {path!r} (expected {expected}).")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load, load_file
        except ImportError as e:
            raise WeightImportError(f"Reading {path!r} needs the 'safetensors' package.") from e
        try:
            return load(storage.read_bytes(path)) if storage.is_object_store(path) else load_file(path)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightImportError(f"Cannot read {path!r} as safetensors ({e}); expected {expected}.") from e
    if path.endswith(".npz"):
        try:
            with np.load(_readable(path)) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise WeightImportError(f"Cannot read {path!r} as .npz ({e}); expected {expected}.") from e
    if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
        try:
            import torch
        except ImportError as e:
            raise WeightImportError(
                f"Reading {path!r} needs torch; or save the state dict with safetensors / numpy and load that."
            ) from e
        try:
            return torch.load(_readable(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many error types for bad files
            raise WeightImportError(f"Cannot read {path!r} with torch.load ({e}); expected {expected}.") from e
    if path.endswith((".h5", ".keras")):
        raise WeightImportError(f"{path!r} looks like a Keras file: use effscale.convert.load_keras.")
    raise WeightImportError(f"Unknown file type {path!r}; expected {expected}.")


def _readable(path: str) -> str | io.BytesIO:
    """What numpy and torch are to read: a local file in place, an object in a bucket read once into memory."""
    return io.BytesIO(storage.read_bytes(path)) if storage.is_object_store(path) else path


def timm_normalization(arch: str) -> normalization.InputNormalization:
    """The normalisation a timm tf_efficientnet checkpoint expects: ImageNet's, or 0.5 / 0.5 for AdvProp."""
    m = _TIMM_ARCH.match(arch)
    return normalization.for_timm(m is not None and (m.group(3) == "ap" or (m.group(4) or "").startswith("ap")))


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
      top: as in `effscale.weights.keras.load_keras`.
    """
    _check_arch(arch)
    source = read_state_dict(state_dict)
    if any(k.startswith(("stem_conv/", "block1a_")) for k in source):
        raise WeightImportError(f"{arch}: these are Keras layer names: use effscale.convert.load_keras.")
    fmt = Format(
        name=f"timm {arch}",
        key=lambda path: timm_key(path, spec),
        to_ours=_timm_to_ours,
        head_key="classifier.weight",
        head_classes=lambda w: int(w.shape[0]),
        ignorable=lambda key: key.endswith("num_batches_tracked"),
        block_pattern=r"^blocks\.(\d+\.\d+)\.",
    )
    origin = f"timm state dict for {arch}" if isinstance(state_dict, Mapping) else repr(os.fspath(state_dict))
    _check_blocks_per_stage(source, spec, origin)
    return assemble(spec, source, fmt, top, origin, layout="timm", normalization=timm_normalization(arch))


def _check_arch(arch: str) -> None:
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


def _check_blocks_per_stage(source: Mapping[str, np.ndarray], spec: NetworkSpec, origin: str) -> None:
    """timm keys blocks by (stage, index): a preset mismatch shows as a different count per stage."""
    theirs: dict[int, set[int]] = {}
    for k in source:
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.", k):
            theirs.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not theirs:
        return  # not timm-shaped at all: structure.check names what is missing
    file_repeats = [len(theirs.get(s, ())) for s in range(max(theirs) + 1)]
    ours = [st.repeats for st in spec.stages]
    if file_repeats != ours:
        stem, head = source.get("conv_stem.weight"), source.get("conv_head.weight")
        shape = structure.Shape(
            None if stem is None else int(stem.shape[0]),
            None if head is None else int(head.shape[0]),
            sum(file_repeats),
        )
        model = structure.Shape.of(spec)
        raise WeightImportError(
            f"{origin} holds a different network: blocks per stage {file_repeats}, {shape.describe()}"
            f"{structure.guess_preset(shape)}; the model has {ours}, {model.describe()}"
            f"{structure.guess_preset(model)}. "
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
