"""effscale.augment: each image operation against PIL, the policies' magnitudes and randomness, random
erasing, mixup / CutMix, the train step with and without mixing, the config checks, and a mocked
imagenet2012 pipeline with each policy."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
import train_support
from PIL import Image, ImageEnhance, ImageOps

from configs import default, efficientnet
from effscale import data, model, spec
from effscale.augment import checks, erasing, mix, ops, policies
from effscale.training import steps

train_support.use_compilation_cache()

# ---------------------------------------------------------------------------------------------
# Operations against PIL


def _image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A structured RGB image (gradients, a product pattern, noise): no channel is flat or symmetric."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    r = (x * 7 + y * 3) % 256
    g = (x * y) % 200 + 20
    b = np.clip(255 - 6 * y + rng.integers(0, 40, (size, size)), 0, 255)
    return np.stack([r, g, b], -1).astype(np.uint8)


IMAGE = _image()
PIL_IMAGE = Image.fromarray(IMAGE)
FILL = (128, 128, 128)


def _ours(fn, *args) -> np.ndarray:
    return np.asarray(fn(tf.constant(IMAGE), *args)).astype(np.int32)


def _pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int32)


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("autocontrast", lambda: _ours(ops.autocontrast), lambda: ImageOps.autocontrast(PIL_IMAGE)),
        ("equalize", lambda: _ours(ops.equalize), lambda: ImageOps.equalize(PIL_IMAGE)),
        ("invert", lambda: _ours(ops.invert), lambda: ImageOps.invert(PIL_IMAGE)),
        *[
            (f"posterize{b}", lambda b=b: _ours(ops.posterize, b), lambda b=b: ImageOps.posterize(PIL_IMAGE, b))
            for b in (1, 2, 4, 6, 8)
        ],
        *[
            (f"solarize{t}", lambda t=t: _ours(ops.solarize, t), lambda t=t: ImageOps.solarize(PIL_IMAGE, t))
            for t in (0, 77, 128, 256)
        ],
    ],
)
def test_point_operations_equal_pil(name, ours, theirs):
    # Integer lookup tables on both sides: no tolerance.
    np.testing.assert_array_equal(ours(), _pil(theirs()), err_msg=name)


ENHANCERS = [
    (ops.color, ImageEnhance.Color),
    (ops.contrast, ImageEnhance.Contrast),
    (ops.brightness, ImageEnhance.Brightness),
    (ops.sharpness, ImageEnhance.Sharpness),
]


@pytest.mark.parametrize("factor", [0.1, 0.55, 1.0, 1.45, 1.9])
@pytest.mark.parametrize(("ours", "theirs"), ENHANCERS, ids=lambda f: getattr(f, "__name__", ""))
def test_enhance_operations_equal_pil(ours, theirs, factor):
    """PIL blends in single precision and truncates each pixel; ours too, but a product that lands
    within rounding of an integer may truncate the other way: at most one level on a pixel, and no
    bias (a mean error of 0.05 levels would reveal rounding where PIL truncates, or a wrong degenerate)."""
    diff = np.abs(_ours(ours, factor) - _pil(theirs(PIL_IMAGE).enhance(factor)))
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())


GEOMETRIC = [
    *[(ops.rotate, d, lambda d=d: PIL_IMAGE.rotate(d, resample=Image.NEAREST, fillcolor=FILL)) for d in (-30, 7.5, 30)],
    *[(ops.shear_x, s, lambda s=s: (1, s, 0, 0, 1, 0)) for s in (-0.3, 0.27)],
    *[(ops.shear_y, s, lambda s=s: (1, 0, 0, s, 1, 0)) for s in (-0.3, 0.27)],
    *[(ops.translate_x, t, lambda t=t: (1, 0, t, 0, 1, 0)) for t in (-5, 7.3, 40)],
    *[(ops.translate_y, t, lambda t=t: (1, 0, 0, 0, 1, t)) for t in (-5, 7.3, 40)],
]


@pytest.mark.parametrize(("ours", "arg", "theirs"), GEOMETRIC, ids=lambda v: getattr(v, "__name__", str(v)))
def test_geometric_operations_equal_pil(ours, arg, theirs):
    """Nearest-neighbour sampling on both sides; TensorFlow maps coordinates in float32 where PIL uses
    doubles or fixed point, so a sample exactly between two pixels may go the other way: at most 1%
    of the pixels may differ. A half-pixel shift of the coordinate convention would change far more."""
    expected = theirs()
    if isinstance(expected, tuple):
        expected = PIL_IMAGE.transform(PIL_IMAGE.size, Image.AFFINE, expected, Image.NEAREST, fillcolor=FILL)
    differ = np.any(_ours(ours, arg, 128) != _pil(expected), axis=-1)
    assert differ.mean() <= 0.01, differ.mean()


def test_geometric_operations_fill_what_they_uncover():
    moved = _ours(ops.translate_x, 10, 128)
    assert (moved[:, -10:] == 128).all() and (moved[:, :-10] == IMAGE[:, 10:]).all()
    rotated = _ours(ops.rotate, 45.0, 128)
    assert (rotated[0, 0] == 128).all() and (rotated[16, 16] == IMAGE[16, 16]).all()


def test_flat_channels_are_left_alone():
    # PIL leaves a channel with a single value unchanged in autocontrast and equalize.
    flat = IMAGE.copy()
    flat[..., 1] = 90
    for ours, theirs in ((ops.autocontrast, ImageOps.autocontrast), (ops.equalize, ImageOps.equalize)):
        out = np.asarray(ours(tf.constant(flat)))
        np.testing.assert_array_equal(out, np.asarray(theirs(Image.fromarray(flat))))
        assert (out[..., 1] == 90).all()


def test_solarize_add_and_cutout_by_hand():
    pixels = IMAGE.astype(np.int32)
    expected = np.where(pixels < 128, np.minimum(pixels + 99, 255), pixels)
    np.testing.assert_array_equal(_ours(ops.solarize_add, 99), expected)
    out = _ours(ops.cutout, 5, tf.constant([3, 20]), 128)
    expected = IMAGE.astype(np.int32).copy()
    expected[0:8, 15:25] = 128  # rows 3-5 .. 3+5 clipped at the top, columns 20-5 .. 20+5
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------
# Magnitudes and randomness of the policies

KEY = tf.constant([7, 11], tf.int64)


def _op(name: str, level: float, consts=policies.AUTOAUGMENT_CONSTS, key=KEY) -> np.ndarray:
    return np.asarray(policies.OPS[name](tf.constant(IMAGE), float(level), key, consts))


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "SolarizeAdd", "Cutout"])
def test_level_zero_is_the_identity(name):
    np.testing.assert_array_equal(_op(name, 0), IMAGE)


def test_levels_map_to_the_reference_arguments():
    image = tf.constant(IMAGE)
    np.testing.assert_array_equal(_op("Posterize", 6), ops.posterize(image, 2))  # int(0.6 * 4)
    np.testing.assert_array_equal(_op("Solarize", 3), ops.solarize(image, 76))  # int(0.3 * 256)
    np.testing.assert_array_equal(_op("Solarize", 10), IMAGE)  # threshold 256: nothing inverted
    np.testing.assert_array_equal(_op("SolarizeAdd", 3), ops.solarize_add(image, 33))  # int(0.3 * 110)
    np.testing.assert_array_equal(_op("Color", 5), IMAGE)  # factor 0.5 * 1.8 + 0.1 = 1
    np.testing.assert_array_equal(_op("Contrast", 0), ops.contrast(image, 0.1))
    # Signed magnitudes: one of the two signs, never another value.
    assert any(np.array_equal(_op("Rotate", 5), ops.rotate(image, s * 15.0, 128)) for s in (1, -1))
    assert any(np.array_equal(_op("ShearX", 7), ops.shear_x(image, s * 0.21, 128)) for s in (1, -1))
    assert any(np.array_equal(_op("TranslateY", 1), ops.translate_y(image, s * 25.0, 128)) for s in (1, -1))
    ra = policies.RANDAUGMENT_CONSTS
    assert any(np.array_equal(_op("TranslateX", 1, ra), ops.translate_x(image, s * 10.0, 128)) for s in (1, -1))
    # Cutout: half-size level / 10 * cutout_const: 100 px at level 10 (AutoAugment) covers all 32 x 32.
    assert (_op("Cutout", 10) == 128).all()
    assert ((_op("Cutout", 2, ra) == 128).all(-1)).sum() <= 16 * 16  # half-size 8: at most 16 x 16


def test_signs_are_even_and_keyed():
    signs = [float(policies._signed(1.0, tf.constant([i, 3], tf.int64))) for i in range(200)]
    assert set(signs) == {-1.0, 1.0} and 0.35 < np.mean(np.array(signs) > 0) < 0.65
    assert signs == [float(policies._signed(1.0, tf.constant([i, 3], tf.int64))) for i in range(200)]


def test_step_probability_is_honoured():
    policy = ((("Invert", 0.3, 0),),)
    inverted = [
        np.array_equal(policies.autoaugment(tf.constant(IMAGE), tf.constant([i, 1], tf.int64), policy), 255 - IMAGE)
        for i in range(300)
    ]
    assert 0.22 < np.mean(inverted) < 0.38  # binomial(300, 0.3): 4 standard deviations


def test_policy_tables():
    assert len(policies.POLICY_V0) == 25 and all(len(p) == 2 for p in policies.POLICY_V0)
    names = {name for p in policies.POLICY_V0 for name, _, _ in p}
    assert names <= set(policies.OPS) and "Contrast" not in names
    assert len(policies.RANDAUGMENT_OPS) == 16 and set(policies.RANDAUGMENT_OPS) == set(policies.OPS)
    assert all(0 <= prob <= 1 and 0 <= level <= 10 for p in policies.POLICY_V0 for _, prob, level in p)


@pytest.mark.parametrize(
    "run",
    [
        lambda im, k: policies.autoaugment(im, k),
        lambda im, k: policies.randaugment(im, k, num_layers=2, magnitude=9),
    ],
    ids=["autoaugment", "randaugment"],
)
def test_policies_are_deterministic_per_key(run):
    image = tf.constant(IMAGE)
    outputs = [np.asarray(run(image, tf.constant([i, 5], tf.int64))) for i in range(12)]
    again = [np.asarray(run(image, tf.constant([i, 5], tf.int64))) for i in range(12)]
    for a, b in zip(outputs, again, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.shape == IMAGE.shape and a.dtype == np.uint8
    assert len({a.tobytes() for a in outputs}) >= 6  # the key does choose


def test_pipeline_augmentation_is_deterministic_in_tf_data():
    cfg = default.get_config().data
    cfg.augment, cfg.random_erasing = "randaugment", 0.5

    def view(i):
        return data.preprocess_train(tf.constant(_image(48)), tf.stack([i, tf.constant(9, tf.int64)]), cfg, 32)

    def run():
        ds = tf.data.Dataset.range(8).map(view, num_parallel_calls=4, deterministic=False)
        return sorted(x.tobytes() for x in ds.as_numpy_iterator())

    assert run() == run()


# ---------------------------------------------------------------------------------------------
# Random erasing


def test_random_erasing_box_and_fill():
    image = tf.fill([40, 30, 3], 5.0)
    area, aspect = (0.1, 0.3), (0.5, 2.0)
    for i in range(20):
        key = tf.constant([i, 2], tf.int64)
        out = np.asarray(erasing.random_erasing(image, key, 1.0, area, aspect, mode="const"))
        np.testing.assert_array_equal(out, erasing.random_erasing(image, key, 1.0, area, aspect, mode="const"))
        rows, cols = np.nonzero(out[..., 0] == 0)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert (out[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] == 0).all()  # one rectangle
        assert h * w == len(rows) and (out != 0).sum() == 3 * (1200 - h * w)
        # h, w are rounded from the drawn area and aspect: allow half a pixel on each side.
        assert (math.sqrt(0.1 * 1200) - 0.5) ** 2 <= h * w <= (math.sqrt(0.3 * 1200) + 0.5) ** 2
        # Sides of 7 px or more, each rounded by up to half a pixel: the ratio moves by under 20%.
        assert 0.5 / 1.2 <= h / w <= 2.0 * 1.2
    np.testing.assert_array_equal(erasing.random_erasing(image, KEY, 0.0), image)
    noise = np.asarray(erasing.random_erasing(tf.zeros([64, 64, 3]), KEY, 1.0, (0.3, 0.3), (1.0, 1.0)))
    erased = noise[noise != 0]
    assert erased.size > 1000 and abs(erased.mean()) < 0.1 and abs(erased.std() - 1) < 0.1


# ---------------------------------------------------------------------------------------------
# mixup and CutMix


def _batch(n: int = 8, size: int = 6):
    images = jax.random.normal(jax.random.key(1), (n, size, size, 3))
    return images, jnp.arange(n, dtype=jnp.int32) % 5


def test_partner_reverses_each_group():
    x = jnp.arange(8)
    np.testing.assert_array_equal(mix.partner(x, 1), x[::-1])
    np.testing.assert_array_equal(mix.partner(x, 2), [3, 2, 1, 0, 7, 6, 5, 4])


def test_mixed_targets_are_the_mixture_and_sum_to_one():
    labels, other = jnp.array([0, 1, 2]), jnp.array([2, 1, 0])
    t = np.asarray(mix.mixed_targets(labels, other, 0.7, num_classes=4, smoothing=0.2))
    np.testing.assert_allclose(t[0], [0.7 * 0.85 + 0.3 * 0.05, 0.05, 0.7 * 0.05 + 0.3 * 0.85, 0.05], rtol=1e-6)
    np.testing.assert_allclose(t[1], [0.05, 0.85, 0.05, 0.05], rtol=1e-6)  # the same label: no change
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)


def test_mixup_blends_with_the_drawn_lam():
    images, labels = _batch()
    mixed, targets, lam = mix.mix_batch(
        jax.random.key(3), images, labels, num_classes=5, smoothing=0.1, mixup_alpha=0.4, cutmix_alpha=0.0
    )
    assert 0 < lam < 1
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets, mix.mixed_targets(labels, labels[::-1], lam, 5, 0.1), rtol=1e-6)


def test_cutmix_pastes_a_box_and_corrects_lam():
    images, labels = _batch(size=16)
    for seed in range(8):
        mixed, targets, lam = mix.mix_batch(
            jax.random.key(seed), images, labels, num_classes=5, smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=1.0
        )
        pasted = np.all(np.asarray(mixed) == np.asarray(images[::-1]), axis=(0, 3)) & np.any(
            np.asarray(images) != np.asarray(images[::-1]), axis=(0, 3)
        )
        kept = np.all(np.asarray(mixed) == np.asarray(images), axis=(0, 3))
        assert (pasted | kept).all()  # every pixel is one image's or the other's
        rows, cols = np.nonzero(pasted)
        if rows.size:
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a rectangle
        np.testing.assert_allclose(lam, 1 - rows.size / 256, rtol=1e-6)  # lam is the area kept
        np.testing.assert_allclose(targets, mix.mixed_targets(labels, labels[::-1], lam, 5, 0.0), rtol=1e-6)


def test_switch_and_mix_probabilities():
    images, labels = _batch()
    common = {"num_classes": 5, "smoothing": 0.1, "mixup_alpha": 0.5, "cutmix_alpha": 0.5}
    for seed in range(4):
        key = jax.random.key(seed)
        off, targets, lam = mix.mix_batch(key, images, labels, mix_prob=0.0, **common)
        assert lam == 1 and np.array_equal(off, images)
        np.testing.assert_allclose(targets, mix.smoothed(labels, 5, 0.1), rtol=1e-6)
        cut, _, _ = mix.mix_batch(key, images, labels, switch_prob=1.0, **common)  # CutMix: pixels copied
        assert np.all((np.asarray(cut) == images) | (np.asarray(cut) == images[::-1]))
        up, _, lam = mix.mix_batch(key, images, labels, switch_prob=0.0, **common)  # mixup: a blend
        np.testing.assert_allclose(up, lam * images + (1 - lam) * images[::-1], rtol=1e-5, atol=1e-6)


def test_lam_follows_beta():
    draw = jax.vmap(lambda k: mix._draw(k, 0.2, 0.0, 1.0, 0.5, 4, 4)[1])
    lam = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.179 (standard errors ~0.007 and ~0.002).
    assert abs(lam.mean() - 0.5) < 0.03 and abs(lam.var() - 1 / 5.6) < 0.01


# ---------------------------------------------------------------------------------------------
# The train step


@functools.cache
def _tiny():
    c = train_support.tiny_config().model
    # Smaller still than the trainer tests' network: one block at 8 px compiles in a few seconds.
    c.blocks, c.resolution, c.head_channels = ("r1_k3_s1_e1_c8_se0.25",), 8, 16
    c.num_classes, c.depthwise, c.norm, c.pointwise = 5, "xla", "flax", "conv"
    net = spec.build(c)
    module = model.create(net, c)
    tx = optax.sgd(0.1)
    state = steps.init_state(module, tx, seed=0, net=net)
    images = jax.random.normal(jax.random.key(4), (8, net.resolution, net.resolution, 3))
    return module, tx, state, {"image": images, "label": jnp.arange(8, dtype=jnp.int32) % 5}


def _step(**mixing):
    module, tx, state, batch = _tiny()
    fn = functools.partial(
        steps.train_step,
        module=module,
        tx=tx,
        lr=lambda s: 0.1,
        num_classes=5,
        label_smoothing=0.1,
        ema=0.0,
        seed=3,
        **mixing,
    )
    return jax.jit(fn)(state, batch)


def _direct(images, targets):
    """Loss, logits and SGD parameters of one step computed here from the module itself."""
    module, _, state, _ = _tiny()
    key = jax.random.fold_in(jax.random.key(3), 0)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, _ = module.apply(variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": key})
        return optax.softmax_cross_entropy(logits, targets).mean(), logits

    (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params)
    return loss, logits, jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)


def _close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), a, b)


def test_train_step_without_mixing_is_the_plain_step():
    _, _, _, batch = _tiny()
    new, metrics = _step()
    loss, logits, params = _direct(batch["image"], mix.smoothed(batch["label"], 5, 0.1))
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    assert metrics["accuracy"] == np.mean(np.argmax(logits, -1) == batch["label"])
    _close(new.params, params)
    # Decided when tracing: zero alphas trace the very program of a step that never heard of mixing.
    module, tx, state, _ = _tiny()
    kwargs = {"module": module, "tx": tx, "lr": lambda s: 0.1, "num_classes": 5, "label_smoothing": 0.1}
    plain = jax.make_jaxpr(functools.partial(steps.train_step, ema=0.0, seed=3, **kwargs))(state, batch)
    zeros = functools.partial(steps.train_step, ema=0.0, seed=3, mixup_alpha=0.0, cutmix_alpha=0.0, **kwargs)
    mixing = functools.partial(steps.train_step, ema=0.0, seed=3, mixup_alpha=0.2, **kwargs)
    assert str(jax.make_jaxpr(zeros)(state, batch)) == str(plain)
    assert "random_gamma" not in str(plain) and "random_gamma" in str(jax.make_jaxpr(mixing)(state, batch))


@pytest.mark.parametrize("mixing", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0, "mix_groups": 2}])
def test_train_step_trains_on_mixed_targets_and_scores_the_true_labels(mixing):
    _, _, _, batch = _tiny()
    new, metrics = _step(**mixing)
    images, targets, lam = mix.mix_batch(
        mix.step_key(3, jnp.zeros((), jnp.int32)),
        batch["image"],
        batch["label"],
        num_classes=5,
        smoothing=0.1,
        mixup_alpha=mixing.get("mixup_alpha", 0.0),
        cutmix_alpha=mixing.get("cutmix_alpha", 0.0),
        groups=mixing.get("mix_groups", 1),
    )
    assert 0 < lam < 1
    loss, logits, params = _direct(images, targets)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    assert metrics["accuracy"] == np.mean(np.argmax(logits, -1) == batch["label"])
    _close(new.params, params)


# ---------------------------------------------------------------------------------------------
# Config: the recipe, and bad values stopped with the field, the value and what is allowed


def test_defaults_change_nothing_and_the_imagenet_recipe_has_autoaugment():
    c = default.get_config()
    assert c.data.augment == "none" and c.data.random_erasing == 0 and not mix.enabled(0.0, 0.0)
    assert (c.train.mixup_alpha, c.train.cutmix_alpha) == (0.0, 0.0)
    checks.check_data(c.data)
    checks.check_train(c.train, device_count=4096)  # no mixing: any batch
    b7 = efficientnet.get_config("b7")
    assert (b7.data.augment, b7.train.batch_size, b7.train.num_epochs, b7.train.ema_decay) == (
        "autoaugment",
        4096,
        350.0,
        0.9999,
    )
    assert efficientnet.get_config("b0,dataset=cifar10").data.augment == "none"


@pytest.mark.parametrize(
    ("section", "field", "value", "words"),
    [
        ("data", "augment", "autoaugmnet", ["config.data.augment='autoaugmnet'", "'randaugment'"]),
        ("data", "randaugment_magnitude", 31.0, ["randaugment_magnitude=31.0", "[0, 30]"]),
        ("data", "randaugment_magnitude", -1.0, ["randaugment_magnitude=-1.0", "[0, 30]"]),
        ("data", "randaugment_layers", 0, ["randaugment_layers=0", "integer >= 1"]),
        ("data", "random_erasing", 1.5, ["random_erasing=1.5", "[0, 1]"]),
        ("data", "random_erasing_area", (0.5, 0.2), ["random_erasing_area=(0.5, 0.2)", "lo <= hi"]),
        ("data", "random_erasing_mode", "noise", ["random_erasing_mode='noise'", "'pixel'"]),
        ("train", "mixup_alpha", -0.2, ["config.train.mixup_alpha=-0.2", ">= 0"]),
        ("train", "cutmix_alpha", -1.0, ["config.train.cutmix_alpha=-1.0", ">= 0"]),
        ("train", "mix_prob", 2.0, ["config.train.mix_prob=2.0", "[0, 1]"]),
        ("train", "switch_prob", -0.1, ["config.train.switch_prob=-0.1", "[0, 1]"]),
    ],
)
def test_bad_values_name_field_value_and_what_is_allowed(section, field, value, words):
    c = default.get_config()
    c[section][field] = value
    check = checks.check_data if section == "data" else checks.check_train
    with pytest.raises(ValueError) as e:
        check(c[section])
    assert all(w in str(e.value) for w in words), str(e.value)
    if section == "data":  # the data pipeline's own config check stops it too, before reading anything
        with pytest.raises(ValueError, match=field):
            data.dataset_info(c.data)


def test_mixing_needs_two_examples_per_device():
    t = default.get_config().train
    t.mixup_alpha, t.batch_size = 0.2, 8
    checks.check_train(t, device_count=4)
    with pytest.raises(ValueError, match=r"batch_size=8 over 8 devices leaves 1 example per device"):
        checks.check_train(t, device_count=8)
    t.mixup_alpha, t.cutmix_alpha, t.batch_size = 0.0, 1.0, 1
    with pytest.raises(ValueError, match="at least 2"):
        checks.check_train(t)
    assert mix.options(t, 4) == {
        "mixup_alpha": 0.0,
        "cutmix_alpha": 1.0,
        "mix_prob": 1.0,
        "switch_prob": 0.5,
        "mix_groups": 4,
    }


# ---------------------------------------------------------------------------------------------
# The whole pipeline on mocked imagenet2012


@pytest.mark.parametrize("augment", ["autoaugment", "randaugment"])
def test_mocked_imagenet_batches_with_a_policy(tmp_path, augment):
    c = default.get_config().data
    c.manual_dir, c.threads, c.augment, c.random_erasing = str(tmp_path), 1, augment, 0.5
    with train_support.mocked_dataset("imagenet2012", 16, str(tmp_path)):
        first = next(data.train_batches(c, 40, 8, seed=0))
        c.augment, c.random_erasing = "none", 0.0
        plain = next(data.train_batches(c, 40, 8, seed=0))
    assert first["image"].shape == (8, 40, 40, 3) and first["image"].dtype == np.float32
    assert np.isfinite(first["image"]).all() and first["label"].dtype == np.int32
    np.testing.assert_array_equal(first["label"], plain["label"])
    assert not np.array_equal(first["image"], plain["image"])


def test_the_recipe_trains_on_mocked_imagenet_with_autoaugment_and_mixing(tmp_path):
    """The imagenet2012 recipe's data fields (AutoAugment) with mixup and CutMix, through the trainer."""
    from effscale import train

    config = train_support.tiny_config("imagenet2012", steps=2)
    recipe = efficientnet.get_config("b0")
    config.data.augment = recipe.data.augment
    config.data.manual_dir = str(tmp_path)
    config.data.random_erasing = 0.25
    config.train.mixup_alpha, config.train.cutmix_alpha = 0.2, 1.0
    config.train.async_checkpoints = False  # tfds' mock and orbax's background writer trip over each other
    with train_support.mocked_dataset("imagenet2012", 16, str(tmp_path)):
        out = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert recipe.data.augment == "autoaugment"
    assert out.status == "finished" and out.steps == 2 and out.num_classes == 1000
    assert np.isfinite(out.train_loss) and 0.0 <= out.eval_top1 <= 1.0
    assert out.config["data"]["augment"] == "autoaugment" and out.config["train"]["cutmix_alpha"] == 1.0
