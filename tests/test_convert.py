"""Weight import checked against independent implementations.

Keras: keras.applications.EfficientNetB0 / B2 (weights=None, every weight and BatchNorm
statistic randomised), saved in each file layout, imported, and compared with effscale
on the same images, block by block. timm: torch / timm are not installed here, so the
mapping is checked on state dicts written in timm's names and PyTorch layouts from
effscale's own variables (round trip) plus spot checks of names and shapes known from
timm's tf_efficientnet_b0.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from effscale import convert
from effscale import spec as spec_lib
from effscale.convert import WeightImportError
from effscale.model import EfficientNet

keras = pytest.importorskip("keras")
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

RES = 72  # odd feature-map sizes from stage 3 on (9, 5, 3): exercises both 'SAME' paddings
TOL = 1e-4
# Keras layer whose output equals effscale's module output (capture_intermediates).
PROBES = {
    "stem_bn": "stem_bn",
    "block1a": "block1a_project_bn",
    "block2b": "block2b_add",
    "block3a": "block3a_project_bn",
    "block4c": "block4c_add",
    "block6d": "block6d_add",
    "block7a": "block7a_project_bn",
}


def _randomize(model: keras.Model, seed: int, mean=(0.485, 0.456, 0.406), variance=(0.09, 0.04, 0.0625)) -> None:
    """Random values everywhere, BatchNorm statistics included, so that every mapping is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            name, shape = w.path.split("/")[-1], tuple(w.shape)
            if name == "gamma":
                v = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "bias", "moving_mean"):
                v = rng.normal(0.0, 0.1, shape)
            elif name == "moving_variance":
                v = rng.uniform(0.5, 2.0, shape)
            elif name == "mean":
                v = np.asarray(mean)
            elif name == "variance":
                v = np.asarray(variance)
            elif name == "count":
                v = np.zeros(shape)
            else:  # kernels: fan-in scaled so activations stay O(1) through the network
                fan_in = int(np.prod(shape[:-1])) if "dwconv" not in layer.name else shape[0] * shape[1]
                v = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
            values.append(np.asarray(v, np.float32))
        if values:
            layer.set_weights(values)
    # Keras' Normalization caches mean / variance when built; set_weights alone does not refresh them.
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def _keras_b(preset: str):
    return getattr(keras.applications, f"EfficientNet{preset.upper()}")


def _save_all(model: keras.Model, directory, stem: str) -> dict[str, str]:
    paths = {
        "weights.h5": os.path.join(directory, f"{stem}.weights.h5"),
        "legacy.h5": os.path.join(directory, f"{stem}.h5"),
        "model.h5": os.path.join(directory, f"{stem}_model.h5"),
        "keras": os.path.join(directory, f"{stem}.keras"),
    }
    model.save_weights(paths["weights.h5"])
    with h5py.File(paths["legacy.h5"], "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    model.save(paths["model.h5"])
    model.save(paths["keras"])
    return paths


def _images(seed: int, res: int = RES) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, res, res, 3)).astype(np.float32)


def _effscale_input(pixels: np.ndarray, norm: convert.InputNormalization) -> jnp.ndarray:
    return jnp.asarray((pixels / 255.0 - np.asarray(norm.mean)) / np.asarray(norm.std), jnp.float32)


def _keras_outputs(model: keras.Model, x: np.ndarray, names) -> dict[str, np.ndarray]:
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output])
    outs = probe.predict(x, verbose=0)
    return dict(zip([*names, "output"], outs, strict=True))


@pytest.fixture(scope="module")
def b0(tmp_path_factory):
    """A random Keras B0 with a 1000-way top, its files, and reference outputs from a model reloaded from disk."""
    directory = tmp_path_factory.mktemp("keras_b0")
    model = _keras_b("b0")(weights=None, input_shape=(RES, RES, 3), classifier_activation=None)
    _randomize(model, seed=0)
    paths = _save_all(model, directory, "b0")
    # The reference is a second Keras model that read the file: the comparison is against the file's content.
    reference = _keras_b("b0")(weights=None, input_shape=(RES, RES, 3), classifier_activation=None)
    reference.load_weights(paths["weights.h5"])
    x = _images(1)
    outs = _keras_outputs(reference, x, [*PROBES.values(), "top_activation"])
    notop = _keras_b("b0")(weights=None, include_top=False, input_shape=(RES, RES, 3))
    source = [layer for layer in model.layers if layer.weights and layer.name != "predictions"]
    target = [layer for layer in notop.layers if layer.weights]
    for src, dst in zip(source, target, strict=True):  # same creation order; auto-names like normalization_N differ
        dst.set_weights(src.get_weights())
    for layer in target:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    notop_paths = _save_all(notop, directory, "b0_notop")
    return dict(paths=paths, notop_paths=notop_paths, x=x, outs=outs, keras=model, directory=directory)


def _b0_spec(**kw):
    return spec_lib.build({"preset": "b0", **kw})


@functools.cache
def _forward(spec, capture: bool):
    model = EfficientNet(spec, depthwise="xla")
    return jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=capture, mutable=capture))


def _apply(spec, variables, x, capture=False):
    """effscale in inference mode (jitted once per spec); with `capture`, each top-level module's output too."""
    out = _forward(spec, capture)(variables, x)
    if capture:
        y, state = out
        inter = state["intermediates"]
        return np.asarray(y), {k: np.asarray(v["__call__"][0]) for k, v in inter.items() if k != "__call__"}
    return np.asarray(out)


@pytest.mark.parametrize("layout", ["weights.h5", "legacy.h5", "model.h5", "keras"])
def test_keras_files_match_keras_outputs(b0, layout):
    spec = _b0_spec()
    imported = convert.load_keras(b0["paths"][layout], spec)
    assert not imported.dropped_top and imported.missing == ()
    assert imported.normalization.std == pytest.approx([0.3, 0.2, 0.25])  # sqrt of the stored variance
    x = _effscale_input(b0["x"], imported.normalization)
    logits, inter = _apply(spec, imported.variables, x, capture=True)
    diffs = {name: float(np.abs(inter[name] - b0["outs"][k]).max()) for name, k in PROBES.items()}
    diffs["logits"] = float(np.abs(logits - b0["outs"]["output"]).max())
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_keras_notop_file_features(b0, pooling):
    spec = _b0_spec(include_top=False, pooling=pooling)
    imported = convert.load_keras(b0["notop_paths"]["weights.h5"], spec)
    assert imported.file_num_classes is None and not imported.dropped_top
    feats = _apply(spec, imported.variables, _effscale_input(b0["x"], imported.normalization))
    top = b0["outs"]["top_activation"]
    expected = top.mean(axis=(1, 2)) if pooling == "avg" else top.max(axis=(1, 2))
    assert np.abs(feats - expected).max() < TOL


def test_top_dropped_for_other_class_count_and_merged(b0, caplog):
    from effscale import transfer

    spec = _b0_spec(num_classes=5, pooling="max")
    with caplog.at_level(logging.INFO, logger="effscale.weights"):
        imported = convert.load_keras(b0["paths"]["legacy.h5"], spec)
    assert imported.dropped_top and imported.file_num_classes == 1000
    assert imported.missing == ("params/predictions/bias", "params/predictions/kernel") or set(imported.missing) == {
        "params/predictions/kernel",
        "params/predictions/bias",
    }
    assert "dropping the file's 1000-class top" in caplog.text
    fresh = _random_variables(spec)  # stands in for model.init: only shapes and values matter here
    merged = transfer.merge_imported(fresh, imported)
    assert merged["params"]["predictions"]["kernel"].shape == (1280, 5)
    np.testing.assert_array_equal(merged["params"]["predictions"]["kernel"], fresh["params"]["predictions"]["kernel"])
    np.testing.assert_array_equal(
        merged["batch_stats"]["top_bn"]["var"], imported.variables["batch_stats"]["top_bn"]["var"]
    )
    # Features (before the new head) are the Keras model's.
    feats_spec = _b0_spec(include_top=False, pooling="max")
    feats = _apply(feats_spec, {k: {m: v for m, v in merged[k].items() if m != "predictions"} for k in merged},
                   _effscale_input(b0["x"], imported.normalization))  # fmt: skip
    assert np.abs(feats - b0["outs"]["top_activation"].max(axis=(1, 2))).max() < TOL


def test_notop_file_into_model_with_top_leaves_head_missing(b0):
    imported = convert.load_keras(b0["notop_paths"]["legacy.h5"], _b0_spec(num_classes=3))
    assert set(imported.missing) == {"params/predictions/kernel", "params/predictions/bias"}
    assert not imported.dropped_top


def test_top_modes(b0):
    with pytest.raises(WeightImportError, match="1000 classes and the model 5"):
        convert.load_keras(b0["paths"]["weights.h5"], _b0_spec(num_classes=5), top="load")
    with pytest.raises(WeightImportError, match="file has no top"):
        convert.load_keras(b0["notop_paths"]["weights.h5"], _b0_spec(), top="load")
    dropped = convert.load_keras(b0["paths"]["weights.h5"], _b0_spec(), top="drop")
    assert dropped.dropped_top and "predictions" not in dropped.variables["params"]
    # A 1000-class head with hidden layers: the file's classifier never saw them, so the top is dropped.
    hidden = _b0_spec(head_hidden=(32,))
    auto = convert.load_keras(b0["paths"]["weights.h5"], hidden)
    assert auto.dropped_top and "params/head_dense1/kernel" in auto.missing
    with pytest.raises(WeightImportError, match="hidden layers"):
        convert.load_keras(b0["paths"]["weights.h5"], hidden, top="load")
    with pytest.raises(ValueError, match="top must be one of"):
        convert.load_keras(b0["paths"]["weights.h5"], _b0_spec(), top="keep")


def test_weights_h5_without_layer_names(b0, tmp_path):
    """Files whose vars groups carry no 'name' are matched by layer kind and creation order."""
    path = tmp_path / "noname.weights.h5"
    shutil.copy(b0["paths"]["weights.h5"], path)
    with h5py.File(path, "r+") as f:
        for key in f["layers"]:
            if "vars" in f["layers"][key] and "name" in f["layers"][key]["vars"].attrs:
                del f["layers"][key]["vars"].attrs["name"]
    a = convert.load_keras(path, _b0_spec()).variables
    b = convert.load_keras(b0["paths"]["weights.h5"], _b0_spec()).variables
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_keras_imagenet_graph_std_quirk(b0, tmp_path, monkeypatch):
    """Keras' weights='imagenet' graph (with its extra Rescaling) against the shipped-style variance = std.

    The download is replaced by a local file holding random weights and the shipped
    normalisation values, so Keras builds exactly the graph it builds for ImageNet weights.
    """
    from keras.src.applications import efficientnet as keras_effnet

    notop = _keras_b("b0")(weights=None, include_top=False, input_shape=(64, 64, 3))
    _randomize(notop, seed=3, mean=convert.IMAGENET_MEAN, variance=convert.IMAGENET_STD)
    path = str(tmp_path / "efficientnetb0_notop.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, notop)
    monkeypatch.setattr(keras_effnet.file_utils, "get_file", lambda *a, **k: path)
    shipped = _keras_b("b0")(weights="imagenet", include_top=False, input_shape=(64, 64, 3), pooling="avg")
    assert sum(type(layer).__name__ == "Rescaling" for layer in shipped.layers) == 2
    x = _images(4, 64)
    expected = shipped.predict(x, verbose=0)
    spec = _b0_spec(include_top=False, pooling="avg")
    imported = convert.load_keras(path, spec)
    assert imported.normalization == convert.InputNormalization(
        pytest.approx(convert.IMAGENET_MEAN), pytest.approx(convert.IMAGENET_STD)
    ) or np.allclose(imported.normalization.std, convert.IMAGENET_STD)
    # effscale's default preprocessing (data.mean / data.std) is exactly this.
    feats = _apply(spec, imported.variables, _effscale_input(x, imported.normalization))
    assert np.abs(feats - expected).max() < TOL


def test_b2_and_in_memory_model():
    """A second preset (B2: width 1.1, depth 1.2), read straight from a keras.Model."""
    model = _keras_b("b2")(weights=None, include_top=False, input_shape=(64, 64, 3), pooling="avg")
    _randomize(model, seed=5)
    x = _images(6, 64)
    expected = model.predict(x, verbose=0)
    spec = spec_lib.build({"preset": "b2", "include_top": False})
    imported = convert.load_keras_model(model, spec)
    feats = _apply(spec, imported.variables, _effscale_input(x, imported.normalization))
    assert np.abs(feats - expected).max() < TOL
    # The same weights do not fit B0: one sentence naming both presets.
    with pytest.raises(WeightImportError, match=r"EfficientNet-B2.*EfficientNet-B0"):
        convert.load_keras_model(model, _b0_spec(include_top=False))


@pytest.mark.parametrize(
    "preset", ["b1", "b7", *(pytest.param(p, marks=pytest.mark.slow) for p in ("b3", "b4", "b5", "b6"))]
)
def test_keras_names_cover_every_preset(preset):
    """Every Keras weight of every preset has its place, and every effscale variable is filled."""
    model = _keras_b(preset)(weights=None, include_top=True, input_shape=(32, 32, 3))
    imported = convert.load_keras_model(model, spec_lib.build({"preset": preset}))
    assert imported.missing == ()


# --------------------------------------------------------------------------------------------------
# Error cases.


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a Keras EfficientNet weights file"):
        convert.load_keras(tmp_path / "nope.h5", _b0_spec())


@pytest.mark.parametrize("layout", ["weights.h5", "legacy.h5"])
def test_truncated_file(b0, tmp_path, layout):
    src = b0["paths"][layout]
    path = tmp_path / os.path.basename(src)
    with open(src, "rb") as f:
        data = f.read()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightImportError, match="truncated"):
        convert.load_keras(path, _b0_spec())


def test_other_preset_file(b0):
    with pytest.raises(WeightImportError, match=r"EfficientNet-B0.*the model expects .*EfficientNet-B3"):
        convert.load_keras(b0["paths"]["weights.h5"], spec_lib.build({"preset": "b3"}))


def test_shape_mismatch_and_extra_weights(b0, tmp_path):
    path = tmp_path / "bad.h5"
    shutil.copy(b0["paths"]["legacy.h5"], path)
    with h5py.File(path, "r+") as f:
        del f["block3a_se_reduce/block3a_se_reduce/kernel"]
        f["block3a_se_reduce/block3a_se_reduce/kernel"] = np.zeros((1, 1, 144, 7), np.float32)
    with pytest.raises(WeightImportError, match=r"block3a/se/se_reduce/kernel expects \(1, 1, 144, 6\)"):
        convert.load_keras(path, _b0_spec())
    path2 = tmp_path / "extra.h5"
    shutil.copy(b0["paths"]["legacy.h5"], path2)
    with h5py.File(path2, "r+") as f:
        group = f.create_group("dense_extra")
        group.attrs["weight_names"] = np.array([b"dense_extra/kernel"])
        group["dense_extra/kernel"] = np.zeros((3, 3), np.float32)
        names = [n.encode() if isinstance(n, str) else bytes(n) for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array([*names, b"dense_extra"], dtype="S")
    with pytest.raises(WeightImportError, match="no place in the model: dense_extra/kernel"):
        convert.load_keras(path2, _b0_spec())


def test_missing_weights_in_file(b0, tmp_path):
    path = tmp_path / "short.h5"
    shutil.copy(b0["paths"]["legacy.h5"], path)
    with h5py.File(path, "r+") as f:
        del f["block5b_bn/block5b_bn/moving_variance"]
        f["block5b_bn"].attrs["weight_names"] = np.array(
            [b"block5b_bn/gamma", b"block5b_bn/beta", b"block5b_bn/moving_mean"]
        )
    with pytest.raises(WeightImportError, match="batch_stats/block5b/bn/var"):
        convert.load_keras(path, _b0_spec())


def test_other_framework_files(tmp_path, b0):
    npz = tmp_path / "sd.npz"
    np.savez(npz, **{"conv_stem.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(WeightImportError, match="zip archive without model.weights.h5"):
        convert.load_keras(tmp_path / "sd.npz", _b0_spec())
    with pytest.raises(WeightImportError, match="looks like a Keras file"):
        convert.load_timm(b0["paths"]["legacy.h5"], _b0_spec(), arch="tf_efficientnet_b0")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightImportError, match="neither a Keras legacy weights file"):
        convert.load_keras(plain, _b0_spec())


def test_bn_epsilon_must_match(b0):
    spec = dataclasses.replace(_b0_spec(), bn_epsilon=1e-5)
    with pytest.raises(WeightImportError, match="epsilon"):
        convert.load_keras(b0["paths"]["weights.h5"], spec)


# --------------------------------------------------------------------------------------------------
# timm (synthetic state dicts in timm's names and PyTorch layouts).


def _random_variables(spec, seed=0):
    shapes = convert.expected_shapes(spec)
    rng = np.random.default_rng(seed)
    flat = {p: rng.normal(0, 1, s).astype(np.float32) for p, s in shapes.items()}
    return traverse_util.unflatten_dict(flat)


def test_timm_names_and_layouts_b0():
    spec = _b0_spec()
    sd = convert.to_timm_state_dict(_random_variables(spec), spec)
    # Names and shapes of timm's tf_efficientnet_b0 state dict.
    known = {
        "conv_stem.weight": (32, 3, 3, 3),
        "bn1.running_var": (32,),
        "blocks.0.0.conv_dw.weight": (32, 1, 3, 3),
        "blocks.0.0.se.conv_reduce.weight": (8, 32, 1, 1),
        "blocks.0.0.se.conv_expand.bias": (32,),
        "blocks.0.0.conv_pw.weight": (16, 32, 1, 1),
        "blocks.0.0.bn2.weight": (16,),
        "blocks.1.0.conv_pw.weight": (96, 16, 1, 1),
        "blocks.1.0.bn1.running_mean": (96,),
        "blocks.1.0.conv_dw.weight": (96, 1, 3, 3),
        "blocks.1.0.se.conv_reduce.weight": (4, 96, 1, 1),
        "blocks.1.0.conv_pwl.weight": (24, 96, 1, 1),
        "blocks.1.1.bn3.bias": (24,),
        "blocks.5.3.conv_dw.weight": (1152, 1, 5, 5),
        "blocks.6.0.conv_pwl.weight": (320, 1152, 1, 1),
        "conv_head.weight": (1280, 320, 1, 1),
        "bn2.running_mean": (1280,),
        "classifier.weight": (1000, 1280),
        "classifier.bias": (1000,),
    }
    for key, shape in known.items():
        assert sd[key].shape == shape, key
    assert not any(k.startswith("blocks.7") for k in sd)


@pytest.mark.parametrize("preset", ["b0", "b3", "b7"])
def test_timm_round_trip(preset, tmp_path):
    spec = spec_lib.build({"preset": preset})
    variables = _random_variables(spec, seed=1)
    sd = convert.to_timm_state_dict(variables, spec)
    sd.update({k.replace("running_var", "num_batches_tracked"): np.array(7) for k in sd if "running_var" in k})
    imported = convert.load_timm({f"module.{k}": v for k, v in sd.items()}, spec, arch=f"tf_efficientnet_{preset}")
    jax.tree.map(np.testing.assert_array_equal, imported.variables, variables)
    assert imported.normalization == convert.InputNormalization(convert.IMAGENET_MEAN, convert.IMAGENET_STD)
    path = tmp_path / "sd.npz"
    np.savez(path, **sd)
    from_file = convert.load_timm(path, spec, arch=f"tf_efficientnet_{preset}.ap_in1k")
    jax.tree.map(np.testing.assert_array_equal, from_file.variables, variables)
    assert from_file.normalization.std == convert.INCEPTION_STD


def test_timm_forward_matches_conv_layout():
    """The OIHW -> HWIO transposition gives the same convolution (checked with lax on both layouts)."""
    spec = _b0_spec()
    variables = _random_variables(spec, seed=2)
    sd = convert.to_timm_state_dict(variables, spec)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 8, 8)), jnp.float32)
    nchw = jax.lax.conv_general_dilated(
        x, sd["conv_stem.weight"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    nhwc = jax.lax.conv_general_dilated(
        x.transpose(0, 2, 3, 1),
        variables["params"]["stem_conv"]["kernel"],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(nchw.transpose(0, 2, 3, 1), nhwc, atol=1e-5)


def test_timm_errors():
    spec = _b0_spec()
    sd = convert.to_timm_state_dict(_random_variables(spec), spec)
    with pytest.raises(WeightImportError, match="symmetric padding"):
        convert.load_timm(sd, spec, arch="efficientnet_b0")
    with pytest.raises(WeightImportError, match="Unknown timm architecture"):
        convert.load_timm(sd, spec, arch="resnet50")
    b2 = spec_lib.build({"preset": "b2"})
    with pytest.raises(WeightImportError, match=r"EfficientNet-B0.*EfficientNet-B2"):
        convert.load_timm(sd, b2, arch="tf_efficientnet_b2")
    extra = dict(sd, **{"blocks.0.0.extra.weight": np.zeros(3)})
    with pytest.raises(WeightImportError, match="no place in the model: blocks.0.0.extra.weight"):
        convert.load_timm(extra, spec, arch="tf_efficientnet_b0")
    short = {k: v for k, v in sd.items() if k != "blocks.3.1.bn2.running_var"}
    with pytest.raises(WeightImportError, match="batch_stats/block4b/bn/var"):
        convert.load_timm(short, spec, arch="tf_efficientnet_b0")
    with pytest.raises(WeightImportError, match="Keras layer names"):
        convert.load_timm({"stem_conv/kernel": np.zeros(1)}, spec, arch="tf_efficientnet_b0")
    dropped = convert.load_timm(sd, _b0_spec(num_classes=10), arch="tf_efficientnet_b0")
    assert dropped.dropped_top and dropped.file_num_classes == 1000


def test_timm_torch_file(tmp_path):
    torch = pytest.importorskip("torch")
    spec = _b0_spec()
    variables = _random_variables(spec, seed=3)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in convert.to_timm_state_dict(variables, spec).items()}
    torch.save(sd, tmp_path / "sd.pth")
    imported = convert.load_timm(tmp_path / "sd.pth", spec, arch="tf_efficientnet_b0")
    jax.tree.map(np.testing.assert_array_equal, imported.variables, variables)


def _import_timm():
    """timm and torch when they can be imported (they are not project requirements), else skip."""
    try:
        import timm
        import torch
    except Exception as e:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        pytest.skip(f"timm / torch not importable: {e}")
    return timm, torch


@pytest.mark.parametrize("preset", ["b0", "b2"])
def test_timm_model_outputs(preset, tmp_path):
    """A real timm tf_efficientnet (random weights, BatchNorm statistics too) against effscale, if timm is there."""
    timm, torch = _import_timm()
    torch.manual_seed(0)
    net = timm.create_model(f"tf_efficientnet_{preset}", pretrained=False).eval()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            module, leaf = name.split(".")[-2:]
            if leaf == "running_var":
                t.uniform_(0.5, 2.0)
            elif leaf in ("running_mean", "bias"):
                t.normal_(0.0, 0.1)
            elif leaf == "weight" and module.startswith("bn"):
                t.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).normal(size=(2, 3, RES, RES)).astype(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
        feats = net.forward_head(net.forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    spec = spec_lib.build({"preset": preset})
    imported = convert.load_timm(net.state_dict(), spec, arch=f"tf_efficientnet_{preset}")
    ours = _apply(spec, imported.variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert np.abs(ours - logits).max() < TOL
    feat_spec = spec_lib.build({"preset": preset, "include_top": False})
    path = tmp_path / "sd.pth"
    torch.save(net.state_dict(), path)
    from_file = convert.load_timm(path, feat_spec, arch=f"tf_efficientnet_{preset}")
    assert from_file.dropped_top
    assert np.abs(_apply(feat_spec, from_file.variables, jnp.asarray(x.transpose(0, 2, 3, 1))) - feats).max() < TOL
