"""Augmentation policies: RandAugment, colour jitter, random erasing, random resized crop,
MixUp / CutMix soft labels; seeded by (seed, epoch, batch), equal per shard, exact on resume,
grayscale refused or handled."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_builder
from resnet_builder.config import AugmentConfig, DataConfig, load_config
from resnet_builder.data import load_data
from resnet_builder.data.augment import augmenter, random_resized_crop
from resnet_builder.data.mixing import partners
from resnet_builder.data.policies import (
    color_jitter_ops,
    rand_augment_ops,
    transformation,
)
from resnet_builder.errors import ConfigError, UserError
from resnet_builder.training.checkpoint import read_meta
from resnet_builder.training.step import _readable, make_loss

TINY = [
    "model.depth=8", "model.block_type=basic", "data.source=digits", "data.image_size=16",
    "data.batch_size=16", "data.limit=96", "optim.optimizer=adam", "optim.lr=0.01",
    "train.epochs=1", "run.progress=none", "run.plots=false", "run.tensorboard=false",
    "hardware.seed=0",
]
EVERY = AugmentConfig(random_resized_crop={"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]},
                      rand_augment={"num_ops": 2, "magnitude": 9.0},
                      color_jitter=[0.4, 0.4, 0.4, 0.1], random_erasing=0.5, mixup=0.2,
                      cutmix=1.0, horizontal_flip=True)


def _batch(aug: AugmentConfig, epoch: int = 0, size: int = 32, channels: int = 3, **kwargs):
    bundle = load_data(DataConfig(image_size=16, channels=channels), aug, seed=0)
    x, y = next(iter(bundle.train_dataset(epoch, size, **kwargs)))
    return x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def plain():
    return _batch(AugmentConfig())


KEYS = ["augment.random_resized_crop={}", "augment.rand_augment={num_ops: 2, magnitude: 9}",
        "augment.color_jitter=[0.4, 0.4, 0.4, 0.1]", "augment.random_erasing=0.5",
        "augment.mixup=0.2", "augment.cutmix=1.0"]


@pytest.mark.parametrize("keys", [KEYS] + [pytest.param([k], marks=pytest.mark.slow)
                                           for k in KEYS])
def test_each_key_trains_end_to_end(tmp_path, keys):
    result = resnet_builder.train(load_config(None, [*TINY, *keys, "data.channels=3",
                                                     f"run.project={tmp_path}"]))
    row = result.history[-1]
    assert result.summary["status"] == "finished"
    assert np.isfinite(row["loss"]) and 0.0 <= row["accuracy"] <= 1.0
    assert 0.0 <= row["val_accuracy"] <= 1.0


def test_random_erasing_fills_one_rectangle_with_noise(plain):
    x, _ = plain
    erased, _ = _batch(AugmentConfig(random_erasing=1.0))
    for before, after in zip(x, erased, strict=True):
        changed = np.any(before != after, axis=-1)
        assert changed.any(), "probability 1 erases every image"
        ys, xs = np.nonzero(changed)
        box = changed[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.mean() > 0.7  # noise may match a pixel by chance, the rest is the box
        assert not changed[:ys.min()].any() and not changed[ys.max() + 1:].any()


def test_color_jitter_changes_colours_not_shapes(plain):
    x, y = plain
    jittered, yj = _batch(AugmentConfig(color_jitter=[0.4, 0.4, 0.4, 0.1]))
    np.testing.assert_array_equal(y, yj)
    assert sum(not np.allclose(a, b) for a, b in zip(x, jittered, strict=True)) > 28
    grey = [(a.mean(-1).ravel(), b.mean(-1).ravel()) for a, b in zip(x, jittered, strict=True)]
    corr = [np.corrcoef(a, b)[0, 1] for a, b in grey if a.std() > 1 and b.std() > 1]
    assert np.median(corr) > 0.95  # the same digit, recoloured


def test_random_resized_crop_keeps_size_and_crops(plain):
    x, _ = plain
    images = tf.constant(x)
    whole = random_resized_crop(images, tf.constant([1, 2], tf.int64),
                                {"scale": [1.0, 1.0], "ratio": [1.0, 1.0]}, 16)
    np.testing.assert_allclose(whole.numpy(), x, atol=1e-3)  # the whole image: unchanged
    quarter = random_resized_crop(images, tf.constant([1, 2], tf.int64),
                                  {"scale": [0.25, 0.25], "ratio": [1.0, 1.0]}, 16).numpy()
    assert quarter.shape == x.shape
    assert np.abs(np.diff(quarter, axis=2)).mean() < 0.7 * np.abs(np.diff(x, axis=2)).mean()
    impossible = random_resized_crop(images, tf.constant([1, 2], tf.int64),
                                     {"scale": [1.0, 1.0], "ratio": [2.0, 3.0]}, 16).numpy()
    centre = tf.image.crop_and_resize(images, [[0.25, 0.0, 0.75, 1.0]] * len(x),
                                      tf.range(len(x)), (16, 16)).numpy()
    np.testing.assert_allclose(impossible, centre, atol=1e-3)  # timm's fallback


def test_mixup_blends_two_images_and_their_labels(plain):
    x, y = plain
    mixed, soft = _batch(AugmentConfig(mixup=0.4))
    assert soft.shape == (32, 10) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    assert ((soft > 0).sum(1) <= 2).all() and ((soft > 1e-3).sum(1) == 2).sum() > 8
    for i in range(32):
        j = i ^ 1
        if y[i] == y[j]:
            continue
        own = soft[i, y[i]]
        np.testing.assert_allclose(soft[i, y[j]], 1 - own, atol=1e-5)
        np.testing.assert_allclose(mixed[i], own * x[i] + (1 - own) * x[j], atol=1e-2)


def test_cutmix_labels_follow_the_pasted_pixels(plain):
    x, y = plain
    mixed, soft = _batch(AugmentConfig(cutmix=1.0))
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    for i in range(32):
        j = i ^ 1
        pasted = np.all(mixed[i] == x[j], axis=-1) & np.any(x[i] != x[j], axis=-1)
        kept = np.all(mixed[i] == x[i], axis=-1)
        assert (pasted | kept).all()
        if y[i] != y[j]:
            share = 1 - soft[i, y[i]]
            different = np.any(x[i] != x[j], axis=-1)
            assert pasted.sum() <= share * 256 + 1e-3 and (share == 0) == (pasted.sum() == 0)
            assert pasted.sum() >= share * 256 - (~different).sum() - 1e-3


def test_same_seed_epoch_and_batch_give_the_same_batch():
    augment = augmenter(EVERY, 16, [120.0] * 3, seed=5, epoch=2, num_classes=10)
    images = tf.random.stateless_uniform([8, 16, 16, 3], [0, 1], 0, 255)
    labels = tf.range(8) % 10
    first = augment(images, labels, tf.constant(3, tf.int64))
    again = augment(images, labels, tf.constant(3, tf.int64))
    other = augment(images, labels, tf.constant(4, tf.int64))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(first[0].numpy(), other[0].numpy())


def test_a_shard_gets_exactly_its_rows_of_the_whole_batch():
    whole_x, whole_y = _batch(EVERY, size=32)
    x, y = _batch(EVERY, size=32, shard=1, num_shards=2)
    np.testing.assert_allclose(x, whole_x[16:], atol=1e-4)
    np.testing.assert_allclose(y, whole_y[16:], atol=1e-6)


def test_mixing_refuses_an_odd_per_worker_batch():
    bundle = load_data(DataConfig(image_size=16), AugmentConfig(mixup=0.2), seed=0)
    with pytest.raises(UserError, match="odd") as err:
        bundle.train_dataset(0, 6, shard=0, num_shards=2)
    assert "multiple of 4" in err.value.hint


def test_keras_transformations_are_per_image_so_slicing_is_exact():
    """Guards the slicing in policies.transformation against a Keras that changes shape."""
    rows = tf.constant(7)
    for layer in [*rand_augment_ops(9.0, 3), *color_jitter_ops([0.4, 0.4, 0.4, 0.1]),
                  keras.layers.RandomErasing(factor=(1.0, 1.0))]:
        drawn = transformation(layer, tf.constant([1, 2], tf.int64), [None, 16, 16, 3], rows,
                               0, rows)
        for value in tf.nest.flatten(drawn):
            if isinstance(value, tf.Tensor) and value.shape.rank:
                assert value.shape[0] == 7, layer.name


def test_unreadable_images_stay_out_of_the_mix_and_the_loss():
    labels = tf.constant([3, -1, 4, 5])
    partner, mixes = partners(labels, tf.constant(4), 0)
    assert partner.numpy().tolist() == [1, 0, 3, 2]
    assert mixes.numpy().tolist() == [False, False, True, True]
    augment = augmenter(AugmentConfig(mixup=1.0), 8, [0.0], seed=0, epoch=0, num_classes=6)
    _, soft = augment(tf.ones([4, 8, 8, 1]), labels, tf.constant(0, tf.int64))
    soft = soft.numpy()
    assert soft[1].sum() == 0 and soft[0, 3] == 1.0
    probabilities = tf.fill([4, 6], 1 / 6)
    safe, valid = _readable(tf.constant(soft), probabilities)
    assert valid.numpy().tolist() == [1, 0, 1, 1]
    loss = make_loss(6, 0.1)(safe, probabilities).numpy()
    np.testing.assert_allclose(loss[[0, 2, 3]], np.log(6), rtol=1e-5)


def test_grayscale_refuses_saturation_and_hue_but_runs_the_rest():
    with pytest.raises(ConfigError, match="saturation and hue") as err:
        load_config(None, ["data.channels=1", "augment.color_jitter=[0.4, 0.4, 0.4, 0]"])
    assert "[0.4, 0.4, 0, 0]" in err.value.hint
    grey = AugmentConfig(rand_augment={"num_ops": 2, "magnitude": 9.0}, random_erasing=0.5,
                         color_jitter=[0.4, 0.4, 0.0, 0.0], cutmix=1.0,
                         random_resized_crop={"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]})
    x, y = _batch(grey, channels=1)
    assert x.shape == (32, 16, 16, 1) and y.shape == (32, 10)
    assert x.min() >= 0 and x.max() <= 255


def _results(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


class _SigtermAt(keras.callbacks.Callback):
    """Asks for a mid-epoch stop (as a cluster's SIGTERM would) once, at one step."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.sent = step, False

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_resume_mid_epoch_is_exact_with_mixup_and_rand_augment(tmp_path):
    extra = ["augment.mixup=0.4", "augment.rand_augment={num_ops: 2, magnitude: 9}",
             "data.image_size=8", "data.channels=1", "data.limit=160", "train.epochs=2",
             "run.log_every=1"]
    reference = resnet_builder.train(load_config(None, [*TINY, *extra,
                                                        f"run.project={tmp_path / 'a'}"]))
    cfg = load_config(None, [*TINY, *extra, f"run.project={tmp_path / 'b'}"])
    with pytest.raises(UserError) as stopped:
        resnet_builder.train(cfg, callbacks=[_SigtermAt(3)])
    assert stopped.value.exit_code == 143
    run = tmp_path / "b" / "exp"
    # the signal came during step 4's read: the run saved at step 5 and left there (it used
    # to leave at step 4 without saving, its message naming a checkpoint it never wrote)
    assert "saved at epoch 1, step 5" in str(stopped.value)
    assert read_meta(run / "checkpoint.npz")["epoch_progress"]["batches"] == 5
    resumed = resnet_builder.resume(run)
    assert resumed.summary["status"] == "finished"
    assert _results(run) == _results(reference.run_dir)


def test_contrast_goes_both_ways_and_solarize_thresholds_are_in_range():
    """Keras read one contrast float c as (0, c) and scaled only Solarization's upper bound:
    the draws themselves, for RandAugment at magnitude 5 and 0 and colour jitter 0.4."""
    from resnet_builder.data.policies import color_jitter_ops, rand_augment_ops

    x = np.random.default_rng(0).uniform(0, 255, (512, 4, 4, 3)).astype("float32")

    def drawn(layer, key):
        return np.asarray(layer.get_random_transformation(x, training=True)[key])

    by_type = {type(op).__name__: op for op in rand_augment_ops(5, 3)}
    contrast = drawn(by_type["RandomContrast"], "contrast_factor")
    assert contrast.min() < 0.7 and contrast.max() > 1.3  # 1 -+ 0.45
    assert contrast.min() >= 0.55 - 1e-6 and contrast.max() <= 1.45 + 1e-6
    thresholds = drawn(by_type["Solarization"], "thresholds")
    assert thresholds.min() >= 128 and thresholds.max() <= 256  # [(1 - 0.5), 1] x 256
    off = {type(op).__name__: op for op in rand_augment_ops(0, 3)}
    assert np.allclose(drawn(off["Solarization"], "thresholds"), 256)  # magnitude 0
    white = np.full((2, 4, 4, 3), 255.0, np.float32)  # inverted to 0 at thresholds of 255
    assert (np.asarray(off["Solarization"](white, training=True)) == 255).all()
    jitter = {type(op).__name__: op for op in color_jitter_ops([0.0, 0.4, 0.0, 0.0])}
    factors = drawn(jitter["RandomContrast"], "contrast_factor")
    assert factors.min() < 0.8 and factors.max() > 1.2 and factors.min() >= 0.6 - 1e-6


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_every_policy_augments_in_float32_under_mixed_precision(policy):
    """The run's precision policy is set before the augmenter is made: under it RandAugment
    failed to trace (a cond of bfloat16 and float32 branches), colour jitter could not
    multiply, and mixup gave half-precision images. Same batch as in float32."""
    images = tf.random.stateless_uniform([8, 16, 16, 3], [0, 1], 0, 255)
    labels = tf.range(8) % 10
    expected = augmenter(EVERY, 16, [120.0] * 3, seed=5, epoch=2, num_classes=10)(
        images, labels, tf.constant(3, tf.int64))
    keras.mixed_precision.set_global_policy(policy)
    try:
        augment = augmenter(EVERY, 16, [120.0] * 3, seed=5, epoch=2, num_classes=10)
        assert keras.config.dtype_policy().name == policy  # the run's policy is left as set
        got = augment(images, labels, tf.constant(3, tf.int64))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got[0].dtype == tf.float32 and got[1].dtype == tf.float32
    np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), atol=1e-3)


def test_saturation_jitter_is_torchvisions():
    """A multiplier uniform in [1 - s, 1 + s] (Keras' median was 0.92 for s = 0.4), applied
    as a blend with the image's gray, clipped: [200, 150, 40] at x1.4 is torchvision's
    [219, 149, 0] (Keras gave [200, 130, -24], its hue moved)."""
    from resnet_builder.data.policies import SaturationJitter

    (layer,) = color_jitter_ops([0.0, 0.0, 0.4, 0.0])
    assert isinstance(layer, SaturationJitter)
    x = np.zeros((4000, 1, 1, 3), np.float32)
    multipliers = np.asarray(layer.get_random_transformation(x)["factor"])
    assert 0.6 <= multipliers.min() < 0.62 and 1.38 < multipliers.max() <= 1.4
    assert abs(np.median(multipliers) - 1.0) < 0.02
    pixel = np.array([[[[200.0, 150.0, 40.0]]]], np.float32)
    out = layer.transform_images(pixel, {"factor": tf.constant([1.4])})
    np.testing.assert_allclose(np.asarray(out).ravel(), [219.04, 149.04, 0.0], atol=0.05)
    same = layer.transform_images(pixel, {"factor": tf.constant([1.0])})
    np.testing.assert_allclose(np.asarray(same), pixel, atol=1e-4)


def test_sharpness_leaves_the_border_as_it_was():
    """Keras smooths with zero padding: a flat image's one-pixel border darkened (blur) or
    brightened (sharpen); PIL's sharpness, which timm uses, leaves it as it is."""
    (layer,) = [op for op in rand_augment_ops(9, 3) if "Sharpness" in type(op).__name__]
    flat = np.full((2, 8, 8, 3), 120.0, np.float32)
    for factor in (0.05, 0.95):  # blur, sharpen
        out = np.asarray(layer.transform_images(flat, {"factor": tf.constant([factor] * 2)}))
        np.testing.assert_allclose(out, flat, atol=1e-3)
    edge = np.zeros((1, 8, 8, 3), np.float32)
    edge[:, :, 4:] = 255.0  # a vertical edge: the inside changes, the border does not
    out = np.asarray(layer.transform_images(edge, {"factor": tf.constant([0.05])}))
    assert not np.allclose(out[0, 1:-1, 1:-1], edge[0, 1:-1, 1:-1])
    np.testing.assert_array_equal(out[0, 0], edge[0, 0])
    np.testing.assert_array_equal(out[0, :, 0], edge[0, :, 0])
