"""Image operations of AutoAugment and RandAugment on uint8 (H, W, 3) tensors, as TensorFlow ops.

Each operation follows the definition of the Python Imaging Library (PIL), which is what the
policies were searched with: the same luma weights, the same truncation in blends, the same
lookup tables for autocontrast and equalize, and geometric transforms with pixel centres at
half-integers and nearest-neighbour sampling. The arguments are the operations' own (degrees,
pixels, a blend factor, bits); turning a policy's magnitude into them is policies.py's job.
Everything runs inside tf.data map functions on the CPU, one image at a time.
"""

from __future__ import annotations

import math

import tensorflow as tf

# PIL's integer luma, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16: a degenerate image computed in
# float would differ from PIL's by one level on many pixels.
_LUMA = (19595, 38470, 7471)


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor: float) -> tf.Tensor:
    """degenerate + factor * (image - degenerate), clipped and truncated to uint8 as PIL's blend does.

    factor 1 is the image itself; above 1 it extrapolates away from the degenerate image.
    """
    low = tf.cast(degenerate, tf.float32)
    out = low + factor * (tf.cast(image, tf.float32) - low)
    return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """PIL's "L" conversion of an RGB image, (H, W, 1) uint8."""
    pixels = tf.cast(image, tf.int32)
    weighted = pixels[..., 0] * _LUMA[0] + pixels[..., 1] * _LUMA[1] + pixels[..., 2] * _LUMA[2]
    return tf.cast(tf.bitwise.right_shift(weighted + (1 << 15), 16), tf.uint8)[..., None]


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Saturation: a blend with the image's own grayscale (factor 0: gray, 1: unchanged)."""
    return blend(tf.tile(grayscale(image), [1, 1, 3]), image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
    """A blend with a flat image at the mean luma, rounded (factor 0: flat gray, 1: unchanged)."""
    mean = tf.reduce_mean(tf.cast(grayscale(image), tf.float64))
    level = tf.cast(tf.floor(mean + 0.5), tf.uint8)
    return blend(tf.fill(tf.shape(image), level), image, factor)


def brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """A blend with black (factor 0: black, 1: unchanged)."""
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """A blend with PIL's SMOOTH filter (3x3, centre 5, others 1, over 13); the one-pixel border is never smoothed.

    PIL rounds the filtered values to the nearest level (truncating would darken the smoothed image).
    """
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    pixels = tf.cast(image, tf.float32)[None]
    smooth = tf.nn.depthwise_conv2d(pixels, kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.cast(tf.clip_by_value(tf.round(smooth), 0.0, 255.0), tf.uint8)
    interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def _per_channel_lut(image: tf.Tensor, lut_of: callable) -> tf.Tensor:
    """Maps each channel through the 256-entry int32 table `lut_of(histogram)` of that channel."""
    channels = []
    for c in range(3):
        channel = tf.cast(image[..., c], tf.int32)
        histogram = tf.math.bincount(tf.reshape(channel, [-1]), minlength=256, maxlength=256)
        lut = tf.clip_by_value(lut_of(histogram), 0, 255)
        channels.append(tf.gather(lut, channel))
    return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def _autocontrast_lut(histogram: tf.Tensor) -> tf.Tensor:
    present = tf.where(histogram > 0)[:, 0]
    lo, hi = tf.cast(tf.reduce_min(present), tf.float64), tf.cast(tf.reduce_max(present), tf.float64)
    # float64 and truncation toward zero, as PIL's int(ix * scale + offset) in Python floats.
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.cast(tf.range(256, dtype=tf.float64) * scale - lo * scale, tf.int32)
    return tf.where(hi > lo, stretched, tf.range(256))


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Each channel stretched linearly so that its darkest value becomes 0 and its brightest 255."""
    return _per_channel_lut(image, _autocontrast_lut)


def _equalize_lut(histogram: tf.Tensor) -> tf.Tensor:
    last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)[:, 0]))
    step = (tf.reduce_sum(histogram) - last) // 255
    safe = tf.maximum(step, 1)
    # Entry i is (step // 2 + the count below i) // step: PIL's table, built from the exclusive cumulative sum.
    equalized = (tf.cumsum(histogram, exclusive=True) + safe // 2) // safe
    return tf.where(step > 0, equalized, tf.range(256))


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Each channel's histogram flattened through its cumulative distribution (PIL's table)."""
    return _per_channel_lut(image, _equalize_lut)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255 - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keeps the `bits` most significant bits of every value.

    bits is clamped to 1..8: the reference's TensorFlow shift clamps a shift of 8 to 7, so its
    "0 bits" keeps one bit, and the policies reach 0 bits (Posterize at level 2).
    """
    shift = 8 - min(max(int(bits), 1), 8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
    """Inverts every value at or above `threshold` (256 and above: unchanged)."""
    pixels = tf.cast(image, tf.int32)
    return tf.cast(tf.where(pixels < threshold, pixels, 255 - pixels), tf.uint8)


def solarize_add(image: tf.Tensor, addition: int, threshold: int = 128) -> tf.Tensor:
    """Adds `addition` (clipped to 0..255) to every value below `threshold`."""
    pixels = tf.cast(image, tf.int32)
    added = tf.clip_by_value(pixels + addition, 0, 255)
    return tf.cast(tf.where(pixels < threshold, added, pixels), tf.uint8)


def cutout(image: tf.Tensor, pad: int, center: tf.Tensor, fill: int) -> tf.Tensor:
    """Fills the square [cy - pad, cy + pad) x [cx - pad, cx + pad), clipped to the image, with `fill`.

    `center` is (cy, cx), int32; pad 0 leaves the image unchanged.
    """
    shape = tf.shape(image)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = (rows >= center[0] - pad) & (rows < center[0] + pad) & (cols >= center[1] - pad) & (cols < center[1] + pad)
    return tf.where(inside[..., None], tf.cast(fill, image.dtype), image)


def affine(image: tf.Tensor, matrix, fill: int) -> tf.Tensor:
    """PIL's Image.transform(AFFINE, matrix, NEAREST, fillcolor=fill).

    `matrix` (a, b, c, d, e, f) maps an output point (x, y) to the input point (a x + b y + c,
    d x + e y + f) in PIL's coordinates, where pixel (i, j) has its centre at (i + 0.5, j + 0.5);
    TensorFlow's transform puts centres on integers, hence the half-pixel terms. Entries may be tensors.
    """
    a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
    transform = tf.stack([a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0), 0.0, 0.0])
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=tf.constant(fill, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(out[0], image.shape)


def rotate(image: tf.Tensor, degrees, fill: int) -> tf.Tensor:
    """Counter-clockwise rotation by `degrees` about the image centre, as PIL's Image.rotate."""
    shape = tf.cast(tf.shape(image), tf.float32)
    cx, cy = shape[1] / 2.0, shape[0] / 2.0
    theta = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    a, b = tf.cos(theta), tf.sin(theta)
    d, e = -tf.sin(theta), tf.cos(theta)
    return affine(image, (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy), fill)


def shear_x(image: tf.Tensor, level, fill: int) -> tf.Tensor:
    """Output (x, y) reads input (x + level * y, y)."""
    return affine(image, (1.0, level, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image: tf.Tensor, level, fill: int) -> tf.Tensor:
    """Output (x, y) reads input (x, level * x + y)."""
    return affine(image, (1.0, 0.0, 0.0, level, 1.0, 0.0), fill)


def translate_x(image: tf.Tensor, pixels, fill: int) -> tf.Tensor:
    """Output (x, y) reads input (x + pixels, y): the content moves left for positive `pixels`."""
    return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image: tf.Tensor, pixels, fill: int) -> tf.Tensor:
    """Output (x, y) reads input (x, y + pixels): the content moves up for positive `pixels`."""
    return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)
