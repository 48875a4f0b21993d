"""The ``DataBundle``: prepared splits that hand out reproducible ``tf.data`` pipelines.

Epoch order is a full permutation drawn from ``(seed, epoch)`` (indices are
shuffled, not images, so no shuffle buffer is needed); augmentation is seeded from
``(seed, epoch, batch number)``. Every random choice of the data room draws from
``seeded_rng`` with its own stream number, so one seed gives independent streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data.augment import augmenter

CACHE_BUDGET_BYTES = 2_000_000_000  # decoded images kept in memory up to this (and < 2 GiB)

# Independent random streams derived from the one seed.
SPLIT_STREAM, LIMIT_STREAM, SYNTH_STREAM, SAMPLE_STREAM, ORDER_STREAM = range(1, 6)


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for one purpose (split, order of epoch k, ...) of one seed."""
    return np.random.default_rng([seed, *stream])


def fits_in_cache(count: int, data: DataConfig) -> bool:
    """Whether ``count`` prepared images may be kept decoded in memory."""
    size = count * data.image_size**2 * data.channels
    return data.cache and size <= CACHE_BUDGET_BYTES


@dataclass
class Split:
    """One split's labels and its images: prepared in memory (``ready``) or per index."""

    labels: np.ndarray  # int32 [N]
    ready: np.ndarray | None = None  # uint8 [N, S, S, C]
    prepare: Callable[[int], np.ndarray] | None = None  # index -> uint8 [S, S, C]

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """One prepared uint8 image."""
        if self.ready is not None:
            return self.ready[index]
        assert self.prepare is not None
        return self.prepare(index)


@dataclass(eq=False)
class DataBundle:
    """Prepared splits plus what the model needs to know about them."""

    class_names: list[str]
    num_train: int
    num_val: int
    image_size: int
    channels: int
    mean: list[float]  # per channel, 0..255 scale, train split only, before augmentation
    std: list[float]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    _train: Split | None = field(default=None, repr=False)
    _val: Split | None = field(default=None, repr=False)
    _augment: AugmentConfig = field(default_factory=AugmentConfig, repr=False)
    _seed: int = field(default=0, repr=False)
    _tensors: dict[str, tf.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_dataset(self, epoch: int, batch_size: int) -> tf.data.Dataset:
        """One shuffled, augmented epoch of (float32 [B,H,W,C] 0..255, int32 [B]) batches.

        Images are augmented a whole batch at a time (a few vectorised ops per
        batch instead of per image), seeded by (seed, epoch, batch number).
        """
        if epoch < 0 or batch_size < 1:
            raise ValueError(f"need epoch >= 0 and batch_size >= 1, got {epoch}, {batch_size}")
        assert self._train is not None
        order = seeded_rng(self._seed, ORDER_STREAM, epoch).permutation(self.num_train)
        dataset = self._batches(self._train, "train", order.astype(np.int64), batch_size)
        augment = augmenter(self._augment, self.image_size, self.mean, self._seed, epoch)
        if augment is not None:
            dataset = dataset.enumerate().map(
                lambda i, batch: (augment(batch[0], i), batch[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def val_dataset(self, batch_size: int) -> tf.data.Dataset | None:
        """Validation batches in a fixed order, not augmented; None without a validation split."""
        if self._val is None or self.num_val == 0:
            return None
        order = np.arange(self.num_val, dtype=np.int64)
        return self._batches(self._val, "val", order, batch_size).prefetch(tf.data.AUTOTUNE)

    def _batches(self, split: Split, name: str, order: np.ndarray,
                 batch_size: int) -> tf.data.Dataset:
        """Batches of (float32 images, int32 labels) in ``order``.

        In-memory images are gathered a batch at a time; others are decoded
        one by one in parallel and then batched.
        """
        lookup = self._lookup(name, split)
        dataset = tf.data.Dataset.from_tensor_slices(order)
        if split.ready is not None:
            dataset = dataset.batch(batch_size).map(lookup)
        else:
            dataset = dataset.map(lookup, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        return dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels))

    def sample_images(self, n: int = 200) -> np.ndarray:
        """Up to ``n`` prepared training images (uint8, not augmented), e.g. for int8 calibration.

        The choice is seeded, so an export repeats exactly.
        """
        assert self._train is not None
        n = min(n, self.num_train)
        rng = seeded_rng(self._seed, SAMPLE_STREAM)
        picks = np.sort(rng.choice(self.num_train, n, replace=False))
        shape = (0, self.image_size, self.image_size, self.channels)
        if n == 0:
            return np.zeros(shape, np.uint8)
        return np.stack([self._train.image(int(i)) for i in picks])

    def _lookup(self, name: str, split: Split) -> Callable[[tf.Tensor], tuple]:
        """Graph function index -> (uint8 image, int32 label), from memory or decoded on demand."""
        labels = tf.constant(split.labels, tf.int32)
        shape = (self.image_size, self.image_size, self.channels)
        if split.ready is not None:
            if name not in self._tensors:  # convert once; every epoch's pipeline reuses it
                self._tensors[name] = tf.constant(split.ready)
            images = self._tensors[name]

            def from_memory(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return tf.gather(images, index), tf.gather(labels, index)

            return from_memory
        prepare = split.prepare
        assert prepare is not None

        def prepare_one(index: np.ndarray) -> np.ndarray:
            return prepare(int(index))

        def on_demand(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.numpy_function(prepare_one, [index], tf.uint8, stateful=False)
            image.set_shape(shape)
            return image, tf.gather(labels, index)

        return on_demand
