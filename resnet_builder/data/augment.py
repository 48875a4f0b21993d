"""Training-image augmentation: zoom, pad-and-crop shift and flip, a whole batch at a time.

Every op is stateless and seeded from ``(seed, epoch, batch number)``, so epoch k
yields the same images whether or not training was resumed.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from resnet_builder.config import AugmentConfig


def augmenter(cfg: AugmentConfig, size: int, mean: list[float], seed: int,
              epoch: int) -> Callable[..., tf.Tensor] | None:
    """(images float32 [B,H,W,C], batch number[, rows, offset]) -> augmented batch, or None.

    ``rows``/``offset``: the images are rows ``[offset, offset + B)`` of a global batch of
    ``rows`` (a shard's slice); the random numbers are drawn for all ``rows`` and sliced,
    so a shard's images get exactly the changes they get in the whole batch.

    Padding is filled with the training mean colour, which is zero after the model's
    normalization, as in He et al. (they padded mean-subtracted images with zeros).
    """
    if not (cfg.random_crop_padding or cfg.horizontal_flip or cfg.random_scale):
        return None
    fill = tf.constant(mean, tf.float32)
    epoch_key = tf.constant([seed, epoch], tf.int64)

    def apply(images: tf.Tensor, batch: tf.Tensor, rows: tf.Tensor | None = None,
              offset: int = 0) -> tf.Tensor:
        key = tf.random.experimental.stateless_fold_in(epoch_key, batch)
        seeds = tf.random.experimental.stateless_split(key, 3)
        count = tf.shape(images)[0]
        draw = Draw(count if rows is None else tf.cast(rows, tf.int32), offset, count)
        images = images - fill
        if cfg.random_scale:
            images = random_zoom(images, seeds[0], cfg.random_scale, size, draw)
        if cfg.random_crop_padding:
            images = random_shift(images, seeds[1], cfg.random_crop_padding, size, draw)
        if cfg.horizontal_flip:
            flip = draw.uniform([], seeds[2]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
        return tf.ensure_shape(images + fill, (None, size, size, len(mean)))

    return apply


class Draw:
    """Per-image random numbers for rows ``[offset, offset + count)`` of a batch of ``rows``."""

    def __init__(self, rows: tf.Tensor, offset: int, count: tf.Tensor) -> None:
        self.rows, self.offset, self.count = rows, offset, count

    def uniform(self, shape: list[int], seed: tf.Tensor, low: float = 0.0, high: float = 1.0,
                dtype: tf.DType = tf.float32) -> tf.Tensor:
        values = tf.random.stateless_uniform([self.rows, *shape], seed, low, high, dtype=dtype)
        return values[self.offset:self.offset + self.count]


def random_zoom(images: tf.Tensor, seed: tf.Tensor, amount: float, size: int,
                draw: Draw | None = None) -> tf.Tensor:
    """Scale each image by a factor in [1 - amount, 1 + amount] about a random centre.

    Works on mean-subtracted images: what zooming out uncovers is filled with 0.
    """
    count = tf.shape(images)[0]
    draw = draw or Draw(count, 0, count)
    scale_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    scale = draw.uniform([], scale_seed, 1.0 - amount, 1.0 + amount)
    half = 0.5 / scale  # half the crop box side, as a fraction of the image
    room = tf.abs(0.5 - half)
    centre = 0.5 + draw.uniform([2], centre_seed, -1.0, 1.0) * room[:, None]
    boxes = tf.stack([centre[:, 0] - half, centre[:, 1] - half,
                      centre[:, 0] + half, centre[:, 1] + half], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(count), (size, size),
                                    extrapolation_value=0.0)


def random_shift(images: tf.Tensor, seed: tf.Tensor, pad: int, size: int,
                 draw: Draw | None = None) -> tf.Tensor:
    """Pad by ``pad`` pixels (zeros) and crop ``size`` back at a random offset per image."""
    count = tf.shape(images)[0]
    draw = draw or Draw(count, 0, count)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = draw.uniform([2], seed, 0, 2 * pad + 1, dtype=tf.int32)
    window = tf.range(size)
    rows = offsets[:, :1] + window[None, :]
    cols = offsets[:, 1:] + window[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)
