"""AutoAugment (the ImageNet policy "v0" EfficientNet was trained with) and RandAugment, stateless.

A magnitude ("level", 0..10 in the policies, RandAugment's M may go beyond) becomes an operation's
argument exactly as in the reference implementation: rotate up to 30 degrees, shear up to 0.3,
translate up to `translate_const` pixels, each negated with probability 1/2; enhance factors
level / 10 * 1.8 + 0.1; posterize int(level / 10 * 4) bits; solarize threshold
int(level / 10 * 256); solarize-add int(level / 10 * 110); cutout half-size
int(level / 10 * cutout_const). Pixels uncovered by a geometric operation or cut out take 128.

Every random choice (which sub-policy or operation, whether to apply it, the sign, the cutout
position) is drawn with stateless ops from the key given, so an image's augmentation is a pure
function of (image, key): a fixed seed repeats, and a resumed pipeline repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from effscale.augment import ops

MAX_LEVEL = 10.0
FILL = 128


class Consts(NamedTuple):
    """The pixel scales that differ between the two policies (the reference's hyperparameters)."""

    translate: float
    cutout: float


AUTOAUGMENT_CONSTS = Consts(translate=250.0, cutout=100.0)
RANDAUGMENT_CONSTS = Consts(translate=100.0, cutout=40.0)

# The ImageNet policy: 25 sub-policies of two (operation, probability, level) steps; one sub-policy per image.
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

# RandAugment's operations, in the reference's order; each layer applies one, chosen uniformly.
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
)

Op = Callable[[tf.Tensor, float, tf.Tensor, Consts], tf.Tensor]


def _signed(value: float, key: tf.Tensor) -> tf.Tensor:
    """`value` or `-value` with probability 1/2 each: the geometric operations go both ways."""
    flip = tf.random.stateless_uniform([], seed=key) < 0.5
    return tf.where(flip, -value, value)


def _enhance(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _cutout(image: tf.Tensor, level: float, key: tf.Tensor, consts: Consts) -> tf.Tensor:
    """A square of half-size level / 10 * cutout_const around a uniformly drawn pixel."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    center = tf.cast(tf.floor(tf.random.stateless_uniform([2], seed=key) * size), tf.int32)
    return ops.cutout(image, int(level / MAX_LEVEL * consts.cutout), center, FILL)


# name -> op(image, level, key, consts); `key` feeds the op's own randomness (a sign, a position).
OPS: dict[str, Op] = {
    "AutoContrast": lambda im, lv, k, c: ops.autocontrast(im),
    "Equalize": lambda im, lv, k, c: ops.equalize(im),
    "Invert": lambda im, lv, k, c: ops.invert(im),
    "Rotate": lambda im, lv, k, c: ops.rotate(im, _signed(lv / MAX_LEVEL * 30.0, k), FILL),
    "Posterize": lambda im, lv, k, c: ops.posterize(im, int(lv / MAX_LEVEL * 4)),
    "Solarize": lambda im, lv, k, c: ops.solarize(im, int(lv / MAX_LEVEL * 256)),
    "SolarizeAdd": lambda im, lv, k, c: ops.solarize_add(im, int(lv / MAX_LEVEL * 110)),
    "Color": lambda im, lv, k, c: ops.color(im, _enhance(lv)),
    "Contrast": lambda im, lv, k, c: ops.contrast(im, _enhance(lv)),
    "Brightness": lambda im, lv, k, c: ops.brightness(im, _enhance(lv)),
    "Sharpness": lambda im, lv, k, c: ops.sharpness(im, _enhance(lv)),
    "ShearX": lambda im, lv, k, c: ops.shear_x(im, _signed(lv / MAX_LEVEL * 0.3, k), FILL),
    "ShearY": lambda im, lv, k, c: ops.shear_y(im, _signed(lv / MAX_LEVEL * 0.3, k), FILL),
    "TranslateX": lambda im, lv, k, c: ops.translate_x(im, _signed(lv / MAX_LEVEL * c.translate, k), FILL),
    "TranslateY": lambda im, lv, k, c: ops.translate_y(im, _signed(lv / MAX_LEVEL * c.translate, k), FILL),
    "Cutout": _cutout,
}


def _maybe(image: tf.Tensor, step: tuple[str, float, int], key: tf.Tensor, consts: Consts) -> tf.Tensor:
    """One sub-policy step: the operation with its probability (0 and 1 decided when the graph is built)."""
    name, prob, level = step
    apply_key, op_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    op = OPS[name]
    if prob <= 0:
        return image
    if prob >= 1:
        return op(image, float(level), op_key, consts)
    apply = tf.random.stateless_uniform([], seed=apply_key) < prob
    return tf.cond(apply, lambda: op(image, float(level), op_key, consts), lambda: image)


def autoaugment(image: tf.Tensor, key: tf.Tensor, policy=POLICY_V0, consts: Consts = AUTOAUGMENT_CONSTS) -> tf.Tensor:
    """One sub-policy of `policy`, chosen uniformly, applied to a uint8 (H, W, 3) image; `key` is [2] int."""
    keys = tf.random.experimental.stateless_split(key, 1 + max(len(p) for p in policy))
    choice = tf.random.stateless_uniform([], seed=keys[0], minval=0, maxval=len(policy), dtype=tf.int32)

    def branch(sub_policy):
        def run():
            out = image
            for i, step in enumerate(sub_policy):
                out = _maybe(out, step, keys[1 + i], consts)
            return out

        return run

    # switch_case builds every branch but runs only the chosen one.
    return tf.switch_case(choice, [branch(p) for p in policy])


def _randaugment_layer(image: tf.Tensor, key: tf.Tensor, magnitude: float, consts: Consts) -> tf.Tensor:
    choose_key, op_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    choice = tf.random.stateless_uniform([], seed=choose_key, minval=0, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    branches = [lambda name=name: OPS[name](image, magnitude, op_key, consts) for name in RANDAUGMENT_OPS]
    return tf.switch_case(choice, branches)


def randaugment(
    image: tf.Tensor, key: tf.Tensor, num_layers: int, magnitude: float, consts: Consts = RANDAUGMENT_CONSTS
) -> tf.Tensor:
    """`num_layers` operations of RANDAUGMENT_OPS, each chosen uniformly and always applied at `magnitude`."""
    for layer_key in tf.unstack(tf.random.experimental.stateless_split(key, num_layers)):
        image = _randaugment_layer(image, layer_key, float(magnitude), consts)
    return image


def augment(image: tf.Tensor, key: tf.Tensor, data_cfg) -> tf.Tensor:
    """The policy `data_cfg.augment` names ('none' returns `image` itself) on a uint8 (H, W, 3) image."""
    name = data_cfg.get("augment", "none")
    if name == "autoaugment":
        return autoaugment(image, key)
    if name == "randaugment":
        return randaugment(image, key, int(data_cfg.randaugment_layers), float(data_cfg.randaugment_magnitude))
    return image
