"""Per-image random numbers of a batch, and the random resized crop's boxes drawn from them.

The crop is drawn once and used in one of two places: on a batch already at the model's
size (``augment.random_resized_crop``: cached or in-memory images), or inside the decoder,
before the image is resized (``decode.batch_decoder`` with ``crop_draws``: streamed files
and packed records), where JPEGs are decoded only inside the box
(``tf.io.decode_and_crop_jpeg``). The boxes are shares of each image's height and width;
the aspect-ratio rule is in pixels (timm's ``RandomResizedCrop``), so the same draws give
the same kind of crop on a square thumbnail and on a 500x375 photo.
"""

from __future__ import annotations

import math

import tensorflow as tf

CROP_TRIES = 10  # draws per image before timm's fallback box
DRAWS_PER_IMAGE = 2 * CROP_TRIES + 2  # crop_draws' columns


class Draw:
    """Per-image random numbers for rows ``[offset, offset + count)`` of a batch of ``rows``."""

    def __init__(self, rows: tf.Tensor, offset: int, count: tf.Tensor) -> None:
        self.rows, self.offset, self.count = rows, offset, count

    def uniform(self, shape: list[int], seed: tf.Tensor, low: float = 0.0, high: float = 1.0,
                dtype: tf.DType = tf.float32) -> tf.Tensor:
        values = tf.random.stateless_uniform([self.rows, *shape], seed, low, high, dtype=dtype)
        return values[self.offset:self.offset + self.count]


def crop_draws(seed: tf.Tensor, crop: dict, draw: Draw) -> tf.Tensor:
    """float32 [b, DRAWS_PER_IMAGE]: per image ``CROP_TRIES`` area shares, as many log
    aspect ratios (width / height) and the box's place (two numbers in [0, 1))."""
    tries = CROP_TRIES
    area_seed, ratio_seed, place_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    (area_low, area_high), (ratio_low, ratio_high) = crop["scale"], crop["ratio"]
    area = draw.uniform([tries], area_seed, area_low, area_high)
    log_ratio = draw.uniform([tries], ratio_seed, math.log(ratio_low), math.log(ratio_high))
    return tf.concat([area, log_ratio, draw.uniform([2], place_seed)], axis=1)


def crop_boxes(draws: tf.Tensor, aspect: tf.Tensor, crop: dict) -> tf.Tensor:
    """float32 [b, 4] (top, left, height, width) as shares of each image's sides.

    ``aspect``: float32 [b], each image's width / height. The first of the tries whose
    box fits is taken; when none fits, the largest centre box with the aspect ratio
    clamped into the range (timm's fallback).
    """
    tries = CROP_TRIES
    area, log_ratio, place = draws[:, :tries], draws[:, tries:2 * tries], draws[:, 2 * tries:]
    ratio, aspect = tf.exp(log_ratio), aspect[:, None]
    width, height = tf.sqrt(area * ratio / aspect), tf.sqrt(area * aspect / ratio)
    fits = (width <= 1.0) & (height <= 1.0)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    width = tf.gather(width, first, batch_dims=1)
    height = tf.gather(height, first, batch_dims=1)
    ratio_low, ratio_high = crop["ratio"]
    found = tf.reduce_any(fits, axis=1)
    height = tf.where(found, height, tf.minimum(1.0, aspect[:, 0] / ratio_low))
    width = tf.where(found, width, tf.minimum(1.0, ratio_high / aspect[:, 0]))
    top = tf.where(found, place[:, 0] * (1.0 - height), (1.0 - height) / 2)
    left = tf.where(found, place[:, 1] * (1.0 - width), (1.0 - width) / 2)
    return tf.stack([top, left, height, width], axis=1)


def box_window(box: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """int32 [4] (top, left, rows, columns): one image's box (shares) in whole pixels of
    an image of ``height`` x ``width``, at least one pixel, inside the image."""
    sides = tf.cast(tf.stack([height, width]), tf.float32)
    size = tf.clip_by_value(tf.cast(tf.round(box[2:] * sides), tf.int32), 1,
                            tf.stack([height, width]))
    start = tf.clip_by_value(tf.cast(tf.round(box[:2] * sides), tf.int32), 0,
                             tf.stack([height, width]) - size)
    return tf.concat([start, size], axis=0)
