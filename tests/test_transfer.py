"""Freeze specifications, optimizer masking, frozen BatchNorm, heads and merging imported weights."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from effscale import convert, transfer
from effscale import spec as spec_lib
from effscale.model import EfficientNet


@functools.cache
def _spec(preset: str = "b0", **kw) -> spec_lib.NetworkSpec:
    return spec_lib.build({"preset": preset, **kw})


@functools.cache
def _shapes(spec):
    return convert.expected_shapes(spec)


def _params(spec):
    """Zero params with the model's structure (no computation: shapes from eval_shape)."""
    flat = {p[1:]: np.zeros(s, np.float32) for p, s in _shapes(spec).items() if p[0] == "params"}
    return traverse_util.unflatten_dict(flat)


def _labelled(spec, freeze):
    flat = traverse_util.flatten_dict(transfer.param_labels(spec, _params(spec), freeze))
    return {"/".join(p): lab for p, lab in flat.items()}


def _modules(labels, which):
    return {k.rsplit("/", 1)[0] for k, lab in labels.items() if lab == which}


def test_base_layers_cover_the_model_params():
    for preset in ("b0", "b3"):
        spec = _spec(preset)
        modules = {"/".join(p[1:-1]) for p in _shapes(spec) if p[0] == "params"}
        assert set(transfer.base_layers(spec)) == modules - {"predictions"}


def test_below_block6a_freezes_exactly_stem_to_block5c():
    spec = _spec()
    labels = _labelled(spec, "below:block6a")
    frozen_blocks = {m.split("/")[0] for m in _modules(labels, transfer.FROZEN)}
    trainable_blocks = {m.split("/")[0] for m in _modules(labels, transfer.TRAINABLE)}
    assert frozen_blocks == {"stem_conv", "stem_bn", "block1a", "block2a", "block2b", "block3a", "block3b"} | {
        "block4a",
        "block4b",
        "block4c",
        "block5a",
        "block5b",
        "block5c",
    }
    assert trainable_blocks == {"block6a", "block6b", "block6c", "block6d", "block7a", "top_conv", "top_bn"} | {
        "predictions"
    }
    assert labels["block6a/expand_conv/kernel"] == transfer.TRAINABLE
    assert labels["block5c/se/se_expand/bias"] == transfer.FROZEN
    assert labels["block5c/project_bn/scale"] == transfer.FROZEN
    # A stage names its first block.
    assert _labelled(spec, "below:stage6") == labels


def test_base_none_top_and_se16():
    spec = _spec()
    assert _modules(_labelled(spec, "base"), transfer.TRAINABLE) == {"predictions"}
    assert _modules(_labelled(spec, "none"), transfer.FROZEN) == set()
    assert _modules(_labelled(spec, "below:top"), transfer.TRAINABLE) == {"top_conv", "top_bn", "predictions"}
    assert _labelled(spec, "below:stem") == _labelled(spec, "none")
    # Trainable from Keras' multiply_16 (B0's 16th and last SE gate) on.
    se16 = _modules(_labelled(spec, "below:se16"), transfer.TRAINABLE)
    assert se16 == {"block7a/project_conv", "block7a/project_bn", "top_conv", "top_bn", "predictions"}
    assert _labelled(spec, "below:block7a/project_conv") == _labelled(spec, "below:se16")


def test_unknown_targets_list_valid_names():
    spec = _spec()
    with pytest.raises(ValueError, match=r"no 'block8a'.*block6a.*stage1\.\.stage7.*se1\.\.se16"):
        transfer.param_labels(spec, _params(spec), "below:block8a")
    for bad in ("below:stage9", "below:se17", "below:block6a/nothing", "freeze_everything"):
        with pytest.raises(ValueError, match="block7a"):
            transfer.frozen_count(spec, bad)
    with pytest.raises(ValueError, match="variables\\['params'\\]"):
        transfer.param_labels(spec, {"params": _params(spec)}, "base")


def test_deeper_preset_block_names():
    spec = _spec("b3")  # 26 blocks: stage 6 has 6 (block6a..block6f)
    labels = _labelled(spec, "below:block6f")
    assert labels["block6e/project_bn/bias"] == transfer.FROZEN
    assert labels["block6f/expand_conv/kernel"] == transfer.TRAINABLE
    trainable, frozen = transfer.count_trainable(_params(spec), transfer.param_labels(spec, _params(spec), "base"))
    assert trainable == 1536 * 1000 + 1000 and trainable + frozen == 12_233_232  # Keras' B3 trainable count


def test_freeze_optimizer_masks_updates_and_state():
    spec = _spec()
    params = jax.tree.map(jnp.asarray, _params(spec))
    labels = transfer.param_labels(spec, params, "below:block6a")
    tx = transfer.freeze_optimizer(optax.adam(1e-3), labels)
    state = jax.jit(tx.init)(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    flat_updates = traverse_util.flatten_dict(updates)
    flat_labels = traverse_util.flatten_dict(labels)
    for path, u in flat_updates.items():
        if flat_labels[path] == transfer.FROZEN:
            assert not np.any(np.asarray(u)), path
        else:
            assert np.all(np.asarray(u) != 0), path
    # Adam's moments exist only for the trainable leaves.
    trainable, _ = transfer.count_trainable(params, labels)
    moment_sizes = sum(
        int(np.size(x)) for x in jax.tree.leaves(state) if hasattr(x, "shape") and np.ndim(x) > 0 and np.size(x) > 1
    )
    assert moment_sizes == 2 * trainable


def test_frozen_batchnorm():
    spec = _spec()
    frozen = transfer.frozen_batchnorm(spec, "below:block6a")
    assert {"stem_bn", "block5c/project_bn", "block1a/bn", "block2a/expand_bn"} <= frozen
    assert not {"block6a/bn", "top_bn"} & frozen
    assert all(f.endswith("bn") for f in frozen)
    assert transfer.frozen_batchnorm(spec, "none") == frozenset()
    every = transfer.frozen_batchnorm(spec, "none", mode="base")
    assert "top_bn" in every and "block7a/project_bn" in every
    stats = {"/".join(p[1:-1]) for p in _shapes(spec) if p[0] == "batch_stats"}
    assert every == stats


def test_keep_frozen_batch_stats():
    spec = _spec()
    old = traverse_util.unflatten_dict({p[1:]: np.zeros(s) for p, s in _shapes(spec).items() if p[0] == "batch_stats"})
    new = jax.tree.map(lambda x: x + 1, old)
    kept = transfer.keep_frozen_batch_stats(new, old, transfer.frozen_batchnorm(spec, "below:block6a"))
    assert not np.any(kept["block5c"]["project_bn"]["mean"]) and not np.any(kept["stem_bn"]["var"])
    assert np.all(kept["block6a"]["bn"]["mean"] == 1) and np.all(kept["top_bn"]["var"] == 1)


def test_head_spec_and_merge():
    base = _spec()
    spec = transfer.head_spec(base, 5, pooling="max", dropout=0.3)
    assert (spec.include_top, spec.num_classes, spec.pooling, spec.dropout) == (True, 5, "max", 0.3)
    assert spec.blocks == base.blocks
    model = EfficientNet(spec, depthwise="xla")
    # Values as model.init would give them, without compiling init (slow on a shared 2-core machine).
    rng = np.random.default_rng(0)
    fresh = traverse_util.unflatten_dict(
        {p: jnp.asarray(rng.normal(0, 0.1, s), jnp.float32) for p, s in _shapes(spec).items()}
    )
    fresh["batch_stats"] = jax.tree.map(jnp.abs, fresh["batch_stats"])  # variances must stay positive
    assert fresh["params"]["predictions"]["kernel"].shape == (1280, 5)
    # Imported base (e.g. a 1000-class file with its top dropped): everything but the head is replaced.
    imported = jax.tree.map(lambda x: np.full(x.shape, 0.5, np.float32), fresh)
    del imported["params"]["predictions"]
    merged = transfer.merge_imported(fresh, imported)
    assert np.all(merged["params"]["block3b"]["dwconv"]["kernel"] == 0.5)
    assert np.all(merged["batch_stats"]["top_bn"]["mean"] == 0.5)
    np.testing.assert_array_equal(merged["params"]["predictions"]["kernel"], fresh["params"]["predictions"]["kernel"])
    y = jax.jit(model.apply)(merged, jnp.zeros((2, 32, 32, 3)))
    assert y.shape == (2, 5)
    with pytest.raises(ValueError, match="unset: params/block3b/dwconv/kernel"):
        partial = jax.tree.map(lambda x: x, imported)
        del partial["params"]["block3b"]["dwconv"]
        transfer.merge_imported(fresh, partial)
    with pytest.raises(ValueError, match="imported shape"):
        wrong = jax.tree.map(lambda x: x, imported)
        wrong["params"]["top_conv"]["kernel"] = np.zeros((1, 1, 320, 7))
        transfer.merge_imported(fresh, wrong)
    with pytest.raises(ValueError, match="does not have"):
        transfer.merge_imported(fresh, {**imported, "params": {**imported["params"], "extra": {"w": np.zeros(1)}}})
    with pytest.raises(ValueError, match="pooling"):
        transfer.head_spec(base, 5, pooling=None)


def test_a_head_with_hidden_layers_trains_under_freeze_base_and_is_counted():
    from effscale import complexity

    base = _spec()
    spec = transfer.head_spec(base, 5, pooling="max", hidden=(64,))
    assert spec == spec_lib.build({"preset": "b0", "num_classes": 5, "pooling": "max", "head_hidden": (64,)})
    assert _shapes(spec)[("params", "head_dense1", "kernel")] == (1280, 64)
    assert _shapes(spec)[("params", "predictions", "kernel")] == (64, 5)
    labels = _labelled(spec, "base")
    assert _modules(labels, transfer.TRAINABLE) == {"head_dense1", "predictions"}
    # By hand: the plain head's dense 1280 -> 5 becomes 1280 -> 64 -> 5.
    plain = complexity.analyse(transfer.head_spec(base, 5, pooling="max"))
    hidden = complexity.analyse(spec)
    assert hidden.params - plain.params == (1280 * 64 + 64 + 64 * 5 + 5) - (1280 * 5 + 5)
    assert hidden.macs - plain.macs == 1280 * 64 + 64 * 5 - 1280 * 5
    y = jax.jit(EfficientNet(spec_lib.build({"preset": "b0", "resolution": 32, "head_hidden": (64,)})).init)(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    assert y["params"]["head_dense1"]["kernel"].shape == (1280, 64)
    with pytest.raises(ValueError, match="head_hidden"):
        spec_lib.build({"preset": "b0", "head_hidden": (0,)})
    with pytest.raises(ValueError, match="include_top"):
        spec_lib.build({"preset": "b0", "head_hidden": (64,), "include_top": False})
