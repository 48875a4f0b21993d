"""RandAugment, colour jitter and random erasing: Keras' own image layers, our own seeds.

Keras' preprocessing layers draw from a ``SeedGenerator`` variable whose state moves on
with every call, so inside a parallel ``tf.data`` map their draws depend on the order the
batches happen to run in, and a resumed run starts the state afresh. Here each layer's
``get_random_transformation`` gets a ``StatelessSeeds`` instead: its seeds are a pure
function of the batch's key (seed, epoch, batch number), so the layer's random choices
are too. The transformation is drawn for all ``rows`` of the global batch and sliced to
this shard's rows, so a shard's images change exactly as in the whole batch; the layer's
``transform_images`` then does the work.

Ranges follow timm (rand-m9-n2, ColorJitter) rather than ``keras.layers.RandAugment``
and ``RandomColorJitter`` as built: those pass one-sided ranges to their ops (at factor
0.9 Keras' RandAugment rotates by 0-324 degrees, only brightens, only shifts one way) and
the jitter's saturation factor 0.4 only ever desaturates. The op set is Keras'
RandAugment's; the ops are chosen per image, as in the paper (Keras picks them per batch).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

VALUE_RANGE = (0, 255)


class StatelessSeeds(keras.random.SeedGenerator):
    """A ``SeedGenerator`` whose n-th ``next()`` is ``fold_in(key, n)``: no variable, no state.

    Keras layers accept a ``SeedGenerator`` as ``seed=``; this one makes every draw a
    function of ``key`` and of the order of the draws inside the layer, which is fixed.
    """

    def __init__(self, key: tf.Tensor) -> None:  # no super().__init__: it makes a variable
        self._key = key
        self._count = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._key, self._count)


def transformation(layer: keras.layers.Layer, key: tf.Tensor, shape: list, rows: tf.Tensor,
                   offset: int, count: tf.Tensor, index: tf.Tensor | None = None) -> dict | None:
    """``layer``'s random transformation of rows ``[offset, offset + count)`` of ``rows``.

    Drawn for a stand-in batch of ``rows`` images (the layers read only its shape), then
    every per-image tensor (rank >= 1: leading axis is the batch) is sliced, and gathered
    at ``index`` when given; scalars and Python values (image sizes) stay.
    """
    layer.backend.set_backend("tensorflow")
    stand_in = tf.zeros([rows, *shape[1:]], tf.float32)
    drawn = layer.get_random_transformation(stand_in, training=True, seed=StatelessSeeds(key))

    def mine(value):
        if isinstance(value, tf.Tensor) and value.shape.rank:
            value = value[offset:offset + count]
            return value if index is None else tf.gather(value, index)
        return value

    return None if drawn is None else tf.nest.map_structure(mine, drawn)


def apply_layer(layer: keras.layers.Layer, images: tf.Tensor, key: tf.Tensor, rows: tf.Tensor,
                offset: int, index: tf.Tensor | None = None) -> tf.Tensor:
    """``layer`` on a shard's images (those at ``index`` when given), its randomness drawn
    from ``key`` for all ``rows``.

    ``keras.layers.Equalization`` builds one histogram per channel over the whole batch, so
    an image's result would depend on the others in its batch (and shard): it runs on one
    image at a time, as PIL's and timm's equalize do.
    """
    count = tf.shape(images)[0]
    chosen = images if index is None else tf.gather(images, index)

    def run() -> tf.Tensor:
        if isinstance(layer, keras.layers.Equalization):
            return tf.map_fn(lambda image: layer.transform_images(image[None], None)[0], chosen)
        drawn = transformation(layer, key, images.shape, rows, offset, count, index)
        return layer.transform_images(chosen, drawn, training=True)

    # Some Keras ops assert on an empty batch (reduce_min): a group no image picked is skipped.
    return tf.cond(tf.shape(chosen)[0] > 0, run, lambda: chosen)


def two_sided_contrast(c: float) -> keras.layers.Layer:
    """Contrast x(1 +- c): Keras' RandomContrast reads one float c as (0, c), which only
    ever raised contrast (factors 1.0-1.5 for c = 0.5, measured); a pair is both sides."""
    return keras.layers.RandomContrast((c, c), value_range=VALUE_RANGE)


def solarize_above(low: float) -> keras.layers.Layer:
    """Invert pixels at or above a threshold drawn in [low, 1] x 256, as timm's increasing
    solarize (256 at magnitude 0: nothing is inverted; x 255 inverted pure white even there).
    Keras' Solarization scales only the upper bound by 255 (thresholds 0.8-253 for
    (0.5, 1.0), measured) and refuses a lower bound above 1, so both bounds are set after
    construction; tests/test_augment_policies.py checks the draws."""
    layer = keras.layers.Solarization(threshold_factor=(low, 1.0), value_range=VALUE_RANGE)
    layer.threshold_factor = (low * 256.0, 256.0 / 255.0)
    return layer


class BorderKeepingSharpness(keras.layers.RandomSharpness):
    """Keras' sharpness with the one-pixel border left as it was, as PIL's (timm's)
    ImageEnhance.Sharpness does: Keras smooths with zero padding, so a flat 120 image's
    border became 78-95 when blurred or 145-161 when sharpened (23% of a 16x16 image)."""

    def transform_images(self, images, transformation=None, training: bool = True):
        changed = super().transform_images(images, transformation, training)
        if not training:
            return changed
        images = tf.cast(images, changed.dtype)
        height, width = tf.shape(images)[-3], tf.shape(images)[-2]
        inside = tf.pad(tf.ones([height - 2, width - 2, 1], tf.bool), [[1, 1], [1, 1], [0, 0]],
                        constant_values=False)
        return tf.where(inside, changed, images)


def rand_augment_ops(magnitude: float, channels: int) -> list[keras.layers.Layer]:
    """keras.layers.RandAugment's eleven ops at timm's ranges for ``magnitude`` (0-10).

    f = magnitude / 10: rotate by up to +-30f degrees, shear by up to +-0.3f, translate by
    up to +-45f % of the side, brightness +-0.45f of the range (about timm's x(1 +- 0.9f) at
    mid-grey), contrast x(1 +- 0.9f), colour blended up to 0.9f towards grey, sharpness
    blurred or sharpened by up to 0.9f, posterize to 8 - 4f..7 bits, solarize above a
    threshold in [(1 - f), 1] x 256, autocontrast, equalize. On one channel the colour op
    (a no-op on grey images) is left out.
    """
    f = magnitude / 10.0
    layers = keras.layers
    ops = [
        layers.RandomRotation(30.0 / 360.0 * f),
        layers.RandomShear(x_factor=0.3 * f, y_factor=0.3 * f),
        layers.RandomTranslation(0.45 * f, 0.45 * f),
        layers.RandomBrightness(0.45 * f, value_range=VALUE_RANGE),
        two_sided_contrast(0.9 * f),
        BorderKeepingSharpness((0.5 - 0.45 * f, 0.5 + 0.45 * f), value_range=VALUE_RANGE),
        layers.RandomPosterization((8 - round(4 * f), 8), value_range=VALUE_RANGE),
        solarize_above(1.0 - f),
        layers.AutoContrast(value_range=VALUE_RANGE),
        layers.Equalization(value_range=VALUE_RANGE),
    ]
    if channels == 3:
        ops.append(layers.RandomColorDegeneration((0.0, 0.9 * f)))
    return ops


def rand_augment(num_ops: int, magnitude: float, channels: int) -> Callable:
    """``(images, key, rows, offset) -> images``: ``num_ops`` ops in a row, each chosen per
    image (Keras' layer computes all eleven on every image and keeps one)."""
    ops = rand_augment_ops(magnitude, channels)

    def apply(images: tf.Tensor, key: tf.Tensor, rows: tf.Tensor, offset: int) -> tf.Tensor:
        count = tf.shape(images)[0]
        pick_key, *slot_keys = tf.unstack(tf.random.experimental.stateless_split(key, num_ops + 1))
        picks = tf.random.stateless_uniform([rows, num_ops], pick_key, 0, len(ops), tf.int32)
        picks = picks[offset:offset + count]
        for slot in range(num_ops):  # each op runs only on the images that picked it
            op_keys = tf.random.experimental.stateless_split(slot_keys[slot], len(ops))
            groups = tf.dynamic_partition(tf.range(count), picks[:, slot], len(ops))
            changed = [apply_layer(op, images, op_keys[number], rows, offset, groups[number])
                       for number, op in enumerate(ops)]
            images = tf.dynamic_stitch(groups, changed)
        return images

    return apply


class SaturationJitter(keras.layers.RandomSaturation):
    """torchvision's saturation jitter (and PIL's ImageEnhance.Color): each image blended
    with its own gray, ``gray + m * (image - gray)``, m ~ U[1 - s, 1 + s], clipped to the
    range. Keras' RandomSaturation multiplies HSV saturation by f / (1 - f) for a uniform f
    (a median of 0.92 for s = 0.4: 60% of draws desaturated) and clips saturation to the
    value range, 255 rather than 1: at x1.4 [200, 150, 40] came back [200, 130, -24] with its
    hue moved (torchvision: [219, 149, 0])."""

    def __init__(self, amount: float, **kwargs) -> None:
        super().__init__(factor=(0.5, 0.5), value_range=VALUE_RANGE, **kwargs)
        self.amount = float(amount)

    def get_random_transformation(self, data, training: bool = True, seed=None) -> dict:
        images = data["images"] if isinstance(data, dict) else data
        rows = tf.shape(images)[0] if len(images.shape) == 4 else 1
        seed = seed if seed is not None else self._get_seed_generator(self.backend._backend)
        multiplier = self.backend.random.uniform([rows], 1.0 - self.amount, 1.0 + self.amount,
                                                 seed=seed)
        return {"factor": multiplier}

    def transform_images(self, images, transformation=None, training: bool = True):
        if not training or transformation is None:
            return images
        images = tf.cast(images, tf.float32)
        gray = tf.reduce_sum(images * [0.299, 0.587, 0.114], axis=-1, keepdims=True)
        multiplier = tf.reshape(transformation["factor"], [-1, 1, 1, 1])
        return tf.clip_by_value(gray + multiplier * (images - gray), 0.0, 255.0)


def color_jitter_ops(factors: list[float]) -> list[keras.layers.Layer]:
    """Brightness +-b of the range, contrast and saturation x(1 +- c), hue +-h/2 of the circle.

    Saturation is ``SaturationJitter``, torchvision's; a factor of 0 leaves that op out.
    """
    brightness, contrast, saturation, hue = factors
    layers = keras.layers
    ops: list[keras.layers.Layer] = []
    if brightness:
        ops.append(layers.RandomBrightness(brightness, value_range=VALUE_RANGE))
    if contrast:
        ops.append(two_sided_contrast(contrast))
    if saturation:
        ops.append(SaturationJitter(saturation))
    if hue:
        ops.append(layers.RandomHue(hue, value_range=VALUE_RANGE))
    return ops


def in_sequence(ops: list[keras.layers.Layer]) -> Callable:
    """``(images, key, rows, offset) -> images`` with every op applied in order."""

    def apply(images: tf.Tensor, key: tf.Tensor, rows: tf.Tensor, offset: int) -> tf.Tensor:
        keys = tf.random.experimental.stateless_split(key, len(ops))
        for number, op in enumerate(ops):
            images = apply_layer(op, images, keys[number], rows, offset)
        return images

    return apply


def random_erasing(probability: float) -> Callable:
    """keras.layers.RandomErasing: with ``probability``, one box of 2-33 % of the image area
    filled with noise. (Keras' single-float factor p would erase with a probability drawn
    from [0, p], half of p on average; the pair (p, p) erases with probability p.)"""
    return in_sequence([keras.layers.RandomErasing(factor=(probability, probability),
                                                   value_range=VALUE_RANGE)])
