"""MixUp and CutMix: pairs of images and their labels mixed, soft labels out.

The ops are Keras' own (``keras.layers.MixUp`` / ``CutMix`` ``transform_images`` and
``transform_labels``); the transformation is ours, drawn statelessly from the batch's key
(seed, epoch, batch number) as every augmentation here, so resume stays exact.

Pairs are neighbours in the epoch's (already random) order: place 2k with 2k + 1 of the
global batch, the last place of an odd batch with itself. A pair never crosses a worker's
slice when the per-worker batch is even (``check_pairing``), so a shard's images and
labels equal those rows of the whole batch. Keras' layers pair by a random permutation of
the batch, which would need every worker's images. Each image keeps its own weight: image
a becomes lam_a * a + (1 - lam_a) * b, with lam ~ Beta(alpha, alpha) (timm draws one per
batch). CutMix pastes a box of b with sides sqrt(1 - lam) of a's, placed inside the image
(as Keras does), and mixes the labels by the pixels actually pasted.

An image that could not be decoded (label -1) is mixed with nothing and nothing is mixed
with it; its label row is all zeros, which the loss and accuracy leave out.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from resnet_builder.config import AugmentConfig
from resnet_builder.errors import UserError


def mixing_on(cfg: AugmentConfig) -> bool:
    return bool(cfg.mixup or cfg.cutmix)


def check_pairing(cfg: AugmentConfig, batch_size: int, num_shards: int) -> None:
    """An odd per-worker batch would pair an image with one on another worker: refused."""
    local = batch_size // num_shards
    if mixing_on(cfg) and num_shards > 1 and local % 2:
        raise UserError(f"augment.mixup / augment.cutmix pair neighbouring images, and the "
                        f"per-worker batch of {local} ({batch_size} over {num_shards} "
                        "workers) is odd, so a pair would span two workers",
                        hint=f"use a data.batch_size that is a multiple of {2 * num_shards}")


def beta(key: tf.Tensor, rows: tf.Tensor, alpha: float) -> tf.Tensor:
    """float32 [rows] draws of Beta(alpha, alpha), as the ratio of two gamma draws."""
    first, second = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    a = tf.random.stateless_gamma([rows], first, alpha)
    b = tf.random.stateless_gamma([rows], second, alpha)
    return a / tf.maximum(a + b, 1e-12)


def partners(labels: tf.Tensor, rows: tf.Tensor, offset: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(local index of each image's partner, whether the pair mixes)."""
    count = tf.shape(labels)[0]
    place = tf.range(count) + offset
    partner = tf.bitwise.bitwise_xor(place, 1)
    partner = tf.where(partner < rows, partner, place) - offset
    inside = (partner >= 0) & (partner < count)  # only with an odd slice (tfrecord shards)
    partner = tf.where(inside, partner, place - offset)
    readable = labels >= 0
    return partner, inside & readable & tf.gather(readable, partner)


def mixup(layer: keras.layers.MixUp, images: tf.Tensor, targets: tf.Tensor, key: tf.Tensor,
          alpha: float, rows: tf.Tensor, offset: int, partner: tf.Tensor,
          mixes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    count = tf.shape(images)[0]
    weight = beta(key, rows, alpha)[offset:offset + count]
    drawn = {"mix_weight": tf.where(mixes, weight, 1.0), "permutation_order": partner}
    layer.backend.set_backend("tensorflow")
    return (layer.transform_images(images, drawn, training=True),
            layer.transform_labels(targets, drawn, training=True))


def cutmix(layer: keras.layers.CutMix, images: tf.Tensor, targets: tf.Tensor, key: tf.Tensor,
           alpha: float, rows: tf.Tensor, offset: int, partner: tf.Tensor,
           mixes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    count = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    weight_key, place_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    weight = beta(weight_key, rows, alpha)[offset:offset + count]
    side = tf.sqrt(1.0 - weight)[:, None] * tf.cast(size, tf.float32)[None]
    box = tf.cast(tf.round(side), tf.int32) * tf.cast(mixes, tf.int32)[:, None]  # [B, 2] h, w
    start = tf.random.stateless_uniform([rows, 2], place_key)[offset:offset + count]
    start = tf.cast(start * tf.cast(size[None] - box + 1, tf.float32), tf.int32)
    ys = tf.range(size[0])[None, :]
    xs = tf.range(size[1])[None, :]
    in_y = (ys >= start[:, :1]) & (ys < start[:, :1] + box[:, :1])
    in_x = (xs >= start[:, 1:]) & (xs < start[:, 1:] + box[:, 1:])
    mask = in_y[:, :, None, None] & in_x[:, None, :, None]
    mask = tf.broadcast_to(mask, tf.shape(images))
    pasted = tf.cast(box[:, 0] * box[:, 1], tf.float32) / tf.cast(size[0] * size[1], tf.float32)
    drawn = {"permutation_order": partner, "batch_masks": mask, "mix_weight": 1.0 - pasted}
    layer.backend.set_backend("tensorflow")
    return (layer.transform_images(images, drawn, training=True),
            layer.transform_labels(targets, drawn, training=True))


def mixer(cfg: AugmentConfig, num_classes: int) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """``(images, labels, key, rows, offset) -> (images, float32 [B, num_classes] soft
    labels)`` for a shard's slice of a global batch.

    With both mixup and cutmix on, each batch takes one of them (a coin from the batch's
    key, the same on every worker). The Keras layers are made here, outside the traced map.
    """
    mixup_layer, cutmix_layer = keras.layers.MixUp(), keras.layers.CutMix()

    def mix(images: tf.Tensor, labels: tf.Tensor, key: tf.Tensor, rows: tf.Tensor,
            offset: int) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        targets = tf.one_hot(labels, num_classes, dtype=tf.float32)  # label -1: zeros
        partner, mixes = partners(labels, rows, offset)
        coin_key, mix_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))

        def run_mixup() -> tuple[tf.Tensor, tf.Tensor]:
            return mixup(mixup_layer, images, targets, mix_key, cfg.mixup, rows, offset,
                         partner, mixes)

        def run_cutmix() -> tuple[tf.Tensor, tf.Tensor]:
            return cutmix(cutmix_layer, images, targets, mix_key, cfg.cutmix, rows, offset,
                          partner, mixes)

        if not cfg.cutmix:
            return run_mixup()
        if not cfg.mixup:
            return run_cutmix()
        return tf.cond(tf.random.stateless_uniform([], coin_key) < 0.5, run_mixup, run_cutmix)

    return mix
