"""Random erasing of a normalised training image, stateless (TensorFlow, inside tf.data).

With probability `prob`, one rectangle of the image is replaced: its area a uniform fraction of
`area_range` of the image, its aspect ratio (height / width) log-uniform in `aspect_range`, its
position uniform among those that fit. Ten candidate shapes are drawn and the first that fits is
used (none fits: the image is kept). The fill is per-pixel standard-normal noise ('pixel') or
zeros ('const'): the image is normalised, so both mean "no information" at the data's scale.
"""

from __future__ import annotations

import math

import tensorflow as tf

MODES = ("pixel", "const")
ATTEMPTS = 10


def _box(key: tf.Tensor, height: tf.Tensor, width: tf.Tensor, area_range, aspect_range):
    """(top, left, h, w, found) of the first of ATTEMPTS candidate rectangles that fits strictly inside."""
    shape_key, place_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    u = tf.random.stateless_uniform([ATTEMPTS, 2], seed=shape_key, dtype=tf.float64)
    h_f, w_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area = h_f * w_f * (area_range[0] + u[:, 0] * (area_range[1] - area_range[0]))
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    aspect = tf.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    hs = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    ws = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (hs < height) & (ws < width) & (hs > 0) & (ws > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = hs[first], ws[first]
    # Any top in 0..height - h (inclusive) is allowed.
    v = tf.random.stateless_uniform([2], seed=place_key)
    top = tf.minimum(tf.cast(v[0] * tf.cast(height - h + 1, tf.float32), tf.int32), height - h)
    left = tf.minimum(tf.cast(v[1] * tf.cast(width - w + 1, tf.float32), tf.int32), width - w)
    return top, left, h, w, tf.reduce_any(fits)


def random_erasing(
    image: tf.Tensor, key: tf.Tensor, prob: float, area_range=(0.02, 1 / 3), aspect_range=(0.3, 1 / 0.3), mode="pixel"
) -> tf.Tensor:
    """`image` (H, W, C) float32 with one rectangle erased, with probability `prob`; `key` is [2] int."""
    apply_key, box_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    shape = tf.shape(image)
    top, left, h, w, found = _box(box_key, shape[0], shape[1], area_range, aspect_range)
    apply = (tf.random.stateless_uniform([], seed=apply_key) < prob) & found

    def erase():
        rows = tf.range(shape[0])[:, None]
        cols = tf.range(shape[1])[None, :]
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        if mode == "pixel":
            fill = tf.random.stateless_normal(shape, seed=noise_key, dtype=image.dtype)
        else:
            fill = tf.zeros_like(image)
        return tf.where(inside[..., None], fill, image)

    return tf.cond(apply, erase, lambda: image)
