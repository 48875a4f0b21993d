"""Per-image random numbers of a batch, the random resized crop's boxes drawn from them, and
what of the augmentation a streaming decoder takes itself (``DecoderAugment``).

The crop is drawn once and used in one of two places: on a batch already at the model's
size (``augment.random_resized_crop``: cached or in-memory images), or inside the decoder,
before the image is resized (``batch_decode.batch_decoder`` with ``augment.decoder_draws``:
streamed files and packed records), where JPEGs are decoded only inside the box
(``tf.io.decode_and_crop_jpeg``); the flip goes the same way. The boxes are shares of each
image's height and width; the aspect-ratio rule is in pixels (timm's ``RandomResizedCrop``),
so the same draws give the same kind of crop on a square thumbnail and on a 500x375 photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import tensorflow as tf

CROP_TRIES = 10  # draws per image before timm's fallback box
DRAWS_PER_IMAGE = 2 * CROP_TRIES + 2  # crop_draws' columns


@dataclass(frozen=True)
class DecoderAugment:
    """The random resized crop (its settings) and / or the flip that a streaming decoder
    takes per file, and the layout of the per-image draws it is given: the crop's
    ``DRAWS_PER_IMAGE`` columns (``crop_draws``), then a flip column (1 = mirror).

    Why the flip too: mirrored inside the decoder's per-image map (a ``tf.cond`` around a
    ``tf.reverse`` of the resized image) the streamed 224 pipeline of 500x375 photos kept
    1,217 images/s against 1,150 for the uint8 batch flip after it (``augment.flip_some``;
    1,257 without a flip; 4 alternating passes, 2 cores). The pixels are the same.
    """

    crop: dict | None = field(default=None, hash=False)  # a dict: compared, not hashed
    flip: bool = False

    @property
    def columns(self) -> int:
        return (DRAWS_PER_IMAGE if self.crop else 0) + int(self.flip)

    @property
    def name(self) -> str:
        """Tells the decoders' traced graphs apart (one per kind of draws)."""
        return ("crop" if self.crop else "") + (" flip" if self.flip else "")

    def mirrored(self, image: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
        """One image [H, W, C], left to right when its row of draws says so."""
        if not self.flip:
            return image
        return tf.cond(draws[-1] > 0.5, lambda: tf.reverse(image, [1]), lambda: image)


class Draw:
    """Per-image random numbers for rows ``[offset, offset + count)`` of a batch of ``rows``."""

    def __init__(self, rows: tf.Tensor, offset: int, count: tf.Tensor) -> None:
        self.rows, self.offset, self.count = rows, offset, count

    def uniform(self, shape: list[int], seed: tf.Tensor, low: float = 0.0, high: float = 1.0,
                dtype: tf.DType = tf.float32) -> tf.Tensor:
        values = tf.random.stateless_uniform([self.rows, *shape], seed, low, high, dtype=dtype)
        return values[self.offset:self.offset + self.count]


def crop_draws(seed: tf.Tensor, crop: dict, draw: Draw) -> tf.Tensor:
    """float32 [b, DRAWS_PER_IMAGE]: per image ``CROP_TRIES`` (height, width) pairs of a
    box of area 1 with the drawn area share and aspect ratio (log-uniform, width / height),
    then the box's place (two numbers in [0, 1)). Scaled by sqrt(H * W) they are an
    H x W image's box in pixels, so the per-image work in ``crop_boxes`` stays small."""
    area_seed, ratio_seed, place_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    (area_low, area_high), (ratio_low, ratio_high) = crop["scale"], crop["ratio"]
    area = draw.uniform([CROP_TRIES], area_seed, area_low, area_high)
    ratio = tf.exp(draw.uniform([CROP_TRIES], ratio_seed, math.log(ratio_low),
                                math.log(ratio_high)))
    sides = tf.stack([tf.sqrt(area / ratio), tf.sqrt(area * ratio)], axis=2)
    return tf.concat([tf.reshape(sides, [-1, 2 * CROP_TRIES]), draw.uniform([2], place_seed)],
                     axis=1)


def crop_boxes(draws: tf.Tensor, dims: tf.Tensor, crop: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """(offset, size), float32 [..., 2] (rows, columns) in the units of ``dims``, the
    images' (height, width): [b, 2] for a batch of draws [b, DRAWS_PER_IMAGE], [2] for one
    image's row.

    The first of the tries whose box fits is taken; when none fits, the largest centre
    box with the aspect ratio clamped into the range (timm's fallback).
    """
    tries = tf.reshape(draws[..., :2 * CROP_TRIES], [-1, CROP_TRIES, 2][2 - draws.shape.rank:])
    sides = tries * tf.sqrt(tf.reduce_prod(dims, axis=-1, keepdims=True))[..., None]
    ratio_low, ratio_high = crop["ratio"]
    fallback = tf.minimum(dims, tf.reverse(dims, [-1]) * [1 / ratio_low, ratio_high])
    candidates = tf.concat([sides, fallback[..., None, :]], axis=-2)
    fits = tf.reduce_all(candidates <= dims[..., None, :], axis=-1)  # the fallback always fits
    first = tf.argmax(tf.cast(fits, tf.int32), axis=-1, output_type=tf.int32)
    size = tf.gather(candidates, first, batch_dims=draws.shape.rank - 1)
    place = tf.where((first < CROP_TRIES)[..., None],
                     draws[..., 2 * CROP_TRIES:DRAWS_PER_IMAGE], 0.5)  # a flip column may follow
    return place * (dims - size), size


def box_window(offset: tf.Tensor, size: tf.Tensor, dims: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(start, extent), int32 [2]: one image's box in whole pixels of an image of ``dims``
    (int32 [2]), at least one pixel, inside the image."""
    extent = tf.clip_by_value(tf.cast(tf.round(size), tf.int32), 1, dims)
    return tf.clip_by_value(tf.cast(tf.round(offset), tf.int32), 0, dims - extent), extent
