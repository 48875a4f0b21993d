"""Training-image augmentation, a whole batch at a time: the geometric ops here (random
resized crop, zoom, pad-and-crop shift, flip), Keras' layers for RandAugment, colour
jitter and random erasing (policies.py), MixUp / CutMix with soft labels (mixing.py).

Every op is stateless and seeded from ``(seed, epoch, batch number)``, so epoch k
yields the same images whether or not training was resumed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import keras
import tensorflow as tf

from resnet_builder.config import AugmentConfig
from resnet_builder.data import mixing, policies
from resnet_builder.data.crops import DecoderAugment, Draw, crop_boxes, crop_draws

# Streams of the batch key, one per policy (zoom, shift and flip split theirs off as before).
CROP, RAND_AUGMENT, COLOR_JITTER, ERASING, MIXING = range(11, 16)


def augmenter(cfg: AugmentConfig, size: int, mean: list[float], seed: int, epoch: int,
              num_classes: int) -> Callable[..., tuple[tf.Tensor, tf.Tensor]] | None:
    """(images uint8 or float32 [B,H,W,C], labels int32 [B], batch number[, rows, offset])
    -> (augmented images, labels), or None when nothing is on. Images come back float32
    when an op computes new pixels (crop, zoom, shift, pixel policies, mixing); a flip
    alone keeps uint8 images uint8 (the model casts them).

    Labels come back as they came, except with mixup / cutmix: float32 [B, num_classes]
    soft rows (all zeros for an image that could not be decoded, label -1).

    ``rows``/``offset``: the images are rows ``[offset, offset + B)`` of a global batch of
    ``rows`` (a shard's slice); the random numbers are drawn for all ``rows`` and sliced,
    so a shard's images get exactly the changes they get in the whole batch (mixing pairs
    stay inside an even slice: ``mixing.check_pairing``).

    Padding is filled with the training mean colour, which is zero after the model's
    normalization, as in He et al. (they padded mean-subtracted images with zeros).
    """
    with float32_layers():
        pixel_ops = image_policies(cfg, len(mean))
        mix = mixing.mixer(cfg, num_classes) if mixing.mixing_on(cfg) else None
    if not (pixel_ops or cfg.random_resized_crop or cfg.random_crop_padding
            or cfg.horizontal_flip or cfg.random_scale or mixing.mixing_on(cfg)):
        return None
    fill = tf.constant(mean, tf.float32)

    def apply(images: tf.Tensor, labels: tf.Tensor, batch: tf.Tensor,
              rows: tf.Tensor | None = None, offset: int = 0,
              at_epoch: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``at_epoch`` overrides the epoch given to ``augmenter`` (a traced epoch)."""
        key = batch_key(seed, epoch if at_epoch is None else at_epoch, batch)
        seeds = tf.random.experimental.stateless_split(key, 3)
        count = tf.shape(images)[0]
        rows = count if rows is None else tf.cast(rows, tf.int32)
        draw = Draw(rows, offset, count)
        images = geometric(images, cfg, key, seeds, draw, size, fill)
        if pixel_ops or mix is not None:
            images = tf.cast(images, tf.float32)
        for number, policy in pixel_ops:
            images = policy(images, stream(key, number), rows, offset)
        if pixel_ops:
            images = tf.clip_by_value(images, 0.0, 255.0)
        if mix is not None:
            images, labels = mix(images, labels, stream(key, MIXING), rows, offset)
        return tf.ensure_shape(images, (None, size, size, len(mean))), labels

    return apply


@contextlib.contextmanager
def float32_layers() -> Iterator[None]:
    """Keras layers made inside compute in float32 whatever the run's precision: made under
    mixed_bfloat16 / mixed_float16 (``auto`` on a GPU), RandAugment failed to trace (a cond
    of bfloat16 and float32 branches) and mixup gave half-precision images."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def geometric(images: tf.Tensor, cfg: AugmentConfig, key: tf.Tensor, seeds: tf.Tensor,
              draw: Draw, size: int, fill: tf.Tensor) -> tf.Tensor:
    """The crop / zoom / shift / flip part of ``augmenter``: uint8 or float images in,
    float32 out, except a flip alone, which mirrors the pixels in their own type. Only ops
    that uncover borders need the mean subtracted (two passes over the float batch)."""
    flips = flip_draws(seeds, draw) if cfg.horizontal_flip else None
    pads = bool(cfg.random_resized_crop or cfg.random_scale or cfg.random_crop_padding)
    if not pads:
        return images if flips is None else flip_some(images, flips)
    images = tf.cast(images, tf.float32) - fill
    if cfg.random_resized_crop:
        images = random_resized_crop(images, stream(key, CROP), cfg.random_resized_crop,
                                     size, draw)
    if cfg.random_scale:
        images = random_zoom(images, seeds[0], cfg.random_scale, size, draw)
    if cfg.random_crop_padding:
        images = random_shift(images, seeds[1], cfg.random_crop_padding, size, draw)
    if flips is not None:
        images = flip_some(images, flips)
    return images + fill


def traced_augmenter(cfg: AugmentConfig, size: int, mean: list[float], seed: int,
                     num_classes: int) -> Callable[..., tuple[tf.Tensor, tf.Tensor]] | None:
    """``augmenter`` with the epoch as an argument, in one ``tf.function``: every epoch's
    pipeline reuses its graph instead of tracing the policies again (with RandAugment on
    that was about 2.5 s before each epoch's first batch).

    Call as ``run(images, labels, batch_number, rows, offset, epoch)``; ``offset`` is a
    Python int (one trace per shard offset), the rest tensors.
    """
    apply = augmenter(cfg, size, mean, seed, 0, num_classes)  # Keras layers made once, here
    if apply is None:
        return None

    # autograph off: the policies branch on settings (Python values) alone, and converting
    # them took ~0.9 s before every run's first batch (7 functions, measured)
    @tf.function(reduce_retracing=True, autograph=False)
    def run(images: tf.Tensor, labels: tf.Tensor, number: tf.Tensor, rows: tf.Tensor,
            offset: int, epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return apply(images, labels, number, rows, offset, at_epoch=epoch)

    return run


def flip_some(images: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Mirror the images where ``flips`` (bool [B]) is true, left to right.

    Two ways, each the fastest measured for its case (tf.functions on 2 cores, batch 64 at
    224x224x3, against 17.1 / 27.0 ms for ``tf.where`` over a reversed copy, the previous
    flip): uint8 (a flip on its own, handed on as uint8): only the flipped images are
    reversed, then stitched back in place, 4.1 ms (a gather: 9.0); float32 (after a crop,
    zoom or shift): one gather of per-image column orders, 12.7 ms (stitching: 14.7), and
    at 16x16x1 the stitch's extra ops cost the digits pipeline ~6% where the gather did not.
    """
    if images.dtype == tf.uint8:
        places = tf.range(tf.shape(images)[0])
        flipped, kept = places[flips], places[tf.logical_not(flips)]
        return tf.dynamic_stitch([flipped, kept], [tf.reverse(tf.gather(images, flipped), [2]),
                                                   tf.gather(images, kept)])
    forward = tf.range(tf.shape(images)[2])
    columns = tf.where(flips[:, None], tf.reverse(forward, [0])[None], forward[None])
    return tf.gather(images, columns, axis=2, batch_dims=1)


def batch_key(seed: int, epoch: int | tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """The random key of one global batch: every policy's numbers derive from it."""
    epoch_key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(epoch_key, batch)


def decoder_augment(cfg: AugmentConfig) -> DecoderAugment | None:
    """What a decoder that makes batches from files takes of ``cfg`` (None: nothing): the
    random resized crop, and the flip unless a zoom or shift comes between the two (the
    augmenter flips last, and a shift does not commute with a flip)."""
    flip = cfg.horizontal_flip and not (cfg.random_scale or cfg.random_crop_padding)
    if not (cfg.random_resized_crop or flip):
        return None
    return DecoderAugment(cfg.random_resized_crop, flip)


def left_to_augmenter(cfg: AugmentConfig, taken: DecoderAugment | None) -> AugmentConfig:
    """``cfg`` without what the decoder takes (``decoder_augment``)."""
    if taken is None:
        return cfg
    return replace(cfg, random_resized_crop=None if taken.crop else cfg.random_resized_crop,
                   horizontal_flip=cfg.horizontal_flip and not taken.flip)


def decoder_draws(taken: DecoderAugment, seed: int, epoch: tf.Tensor, batch: tf.Tensor,
                  rows: tf.Tensor, offset: int, count: tf.Tensor) -> tf.Tensor:
    """float32 [count, taken.columns] for rows ``[offset, offset + count)`` of global batch
    ``batch``: the numbers ``random_resized_crop`` and the flip would draw in the augmenter,
    for a decoder that takes them per file (``batch_decode.batch_decoder`` with ``taken``)."""
    key = batch_key(seed, epoch, batch)
    draw = Draw(tf.cast(rows, tf.int32), offset, count)
    parts = []
    if taken.crop:
        parts.append(crop_draws(stream(key, CROP), taken.crop, draw))
    if taken.flip:
        flips = flip_draws(tf.random.experimental.stateless_split(key, 3), draw)
        parts.append(tf.cast(flips, tf.float32)[:, None])
    return tf.concat(parts, axis=1)


def flip_draws(seeds: tf.Tensor, draw: Draw) -> tf.Tensor:
    """bool [count]: which images the flip mirrors (the third of the batch key's splits)."""
    return draw.uniform([], seeds[2]) < 0.5


def stream(key: tf.Tensor, number: int) -> tf.Tensor:
    """The batch key's own stream for one policy."""
    return tf.random.experimental.stateless_fold_in(key, number)


def image_policies(cfg: AugmentConfig, channels: int) -> list[tuple[int, Callable]]:
    """(stream, policy) of the Keras-layer policies that are on, in the order they run."""
    found: list[tuple[int, Callable]] = []
    if cfg.rand_augment:
        found.append((RAND_AUGMENT, policies.rand_augment(
            int(cfg.rand_augment["num_ops"]), float(cfg.rand_augment["magnitude"]), channels)))
    if cfg.color_jitter and any(cfg.color_jitter):
        found.append((COLOR_JITTER,
                      policies.in_sequence(policies.color_jitter_ops(cfg.color_jitter))))
    if cfg.random_erasing:
        found.append((ERASING, policies.random_erasing(cfg.random_erasing)))
    return found


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


def random_resized_crop(images: tf.Tensor, seed: tf.Tensor, crop: dict, size: int,
                        draw: Draw | None = None) -> tf.Tensor:
    """The Inception / timm training crop (``crops.crop_boxes``) of square images already at
    the model's size, resized back to ``size``. Streamed files take the same crop inside
    the decoder instead, before resizing (``batch_decode.batch_decoder`` with crop draws)."""
    count = tf.shape(images)[0]
    draw = draw or Draw(count, 0, count)
    offset, extent = crop_boxes(crop_draws(seed, crop, draw), tf.ones([count, 2]), crop)
    corners = tf.concat([offset, offset + extent], axis=1)
    return tf.image.crop_and_resize(images, corners, tf.range(count), (size, size))
