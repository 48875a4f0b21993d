"""The ``DataBundle``: prepared splits that hand out reproducible ``tf.data`` pipelines.

Epoch order is a full permutation drawn from ``(seed, epoch)`` (indices are shuffled, not
images, so no shuffle buffer is needed), or with ``data.sampler: balanced`` a class-balanced
draw of as many indices (``balance.py``); augmentation is seeded from ``(seed, epoch, batch
number)``. Every random choice of the data room draws from ``seeded_rng`` with its own stream
number, so one seed gives independent streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import tensorflow as tf

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data.augment import (
    decoder_augment,
    decoder_draws,
    left_to_augmenter,
    traced_augmenter,
)
from resnet_builder.data.balance import balanced_order, class_counts, class_weight_vector
from resnet_builder.data.crops import DecoderAugment
from resnet_builder.data.decode import BATCHES_AT_ONCE, SkipLog, without_autotune
from resnet_builder.data.guarded import guarded_batches
from resnet_builder.data.mixing import check_pairing
from resnet_builder.data.resizing import Resize, resized_on_demand
from resnet_builder.data.shards import (
    BatchRows,
    check_sharding,
    computed_rows,
    global_rows,
    plain,
    run_rows,
)
from resnet_builder.data.skips import all_skipped
from resnet_builder.data.stream import ImageStore, fast_file_images, file_images, pillow_places
from resnet_builder.errors import UserError

CACHE_BUDGET_BYTES = 2_000_000_000  # decoded images kept in memory up to this (and < 2 GiB)

# Independent random streams derived from the one seed.
SPLIT_STREAM, LIMIT_STREAM, SYNTH_STREAM, SAMPLE_STREAM, ORDER_STREAM, STATS_STREAM = range(1, 7)


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for one purpose (split, order of epoch k, ...) of one seed."""
    return np.random.default_rng([seed, *stream])


def fits_in_cache(count: int, data: DataConfig) -> bool:
    """Whether ``count`` prepared images may be kept decoded in memory. ``data.cache: disk``
    counts as on: array sources are in memory already; the folder source checks disk first."""
    size = count * data.image_size**2 * data.channels
    return bool(data.cache) and size <= CACHE_BUDGET_BYTES


@dataclass
class Split:
    """One split's labels and its images: in memory (``ready``), per index, or streamed files.

    A streamed split (``files``) is decoded in tf.data; a file that fails there comes out
    with label -1 and is recorded in ``skips``; ``store`` keeps decoded images (stream.py)."""

    labels: np.ndarray  # int32 [N]; multilabel (csv source): int32 [N, K] multi-hot rows
    ready: np.ndarray | None = None  # uint8 [N, S, S, C]
    raw: np.ndarray | None = None  # uint8 [N, H, W, C] not yet resized (resized per element)
    files: list[str] | None = None
    store: ImageStore | None = None
    skips: SkipLog = field(default_factory=SkipLog)

    def __len__(self) -> int:
        return len(self.labels)


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
    val_skipped: list[tuple[str, str]] = field(default_factory=list)  # those of the val split
    _train: Split | None = field(default=None, repr=False)
    _val: Split | None = field(default=None, repr=False)
    _augment: AugmentConfig = field(default_factory=AugmentConfig, repr=False)
    _seed: int = field(default=0, repr=False)
    _resize: Resize | None = field(default=None, repr=False)  # load_data sets data.resize
    _sampler: str = field(default="uniform", repr=False)  # data.sampler
    # data.class_weight resolved for these classes: float32 [num_classes], None = unweighted
    class_weights: np.ndarray | None = field(default=None, repr=False)
    # model.task: multilabel batches carry float32 [B, K] multi-hot rows (-1 rows: unreadable)
    task: str = "multiclass"
    _tensors: dict[str, tf.Tensor] = field(default_factory=dict, repr=False)
    _lookups: dict[str, Callable] = field(default_factory=dict, repr=False)  # per split
    _augment_run: tuple[Callable | None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Let go of what the bundle holds outside the process (a pack's read lock)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resizing(self) -> Resize:
        """The resize rule images are prepared with (stored in the model as resize/crop_pct)."""
        return self._resize or Resize(self.image_size)

    def batches_per_epoch(self, batch_size: int, num_shards: int = 1) -> int:
        """Global batches in an epoch of ``train_batches``: ``ceil(num_train / batch_size)``."""
        return -(-self.num_train // batch_size)

    def train_dataset(self, epoch: int, batch_size: int, *, shard: int = 0, num_shards: int = 1,
                      first_batch: int = 0) -> tf.data.Dataset:
        """One epoch of ``train_batches``: ``train_batches(range(epoch, epoch + 1), ...)``."""
        return self.train_batches(range(epoch, epoch + 1), batch_size, shard=shard,
                                  num_shards=num_shards, first_batch=first_batch)

    def train_batches(self, epochs: range, batch_size: int, *, shard: int = 0,
                      num_shards: int = 1, first_batch: int = 0) -> tf.data.Dataset:
        """The shuffled, augmented (images [B,H,W,C] 0..255, int32 [B]) batches of ``epochs``
        (0-based), one epoch after the other in one dataset, so a run iterates once and the
        next epoch's first batches are made while this one ends (float32 [B, num_classes]
        soft labels with augment.mixup / cutmix). Each epoch gives ``batches_per_epoch``.

        Images stay uint8 (a quarter of float32's bytes through prefetch and to a GPU) unless
        an augmentation computes new pixels (crop, zoom, shift, pixel policies, mixing),
        which gives float32; the model takes either (Keras casts its input).

        ``batch_size`` is the global batch. With ``num_shards`` > 1 this shard reads (and
        decodes) only rows ``[shard*b, (shard+1)*b)`` of each global batch (b = batch_size /
        num_shards), so the shards cover every place of the epoch's order (``epoch_order``)
        once, and its images and their augmentation equal those rows of the unsharded batch.
        ``first_batch=k`` starts at global batch k of the first epoch (a mid-epoch resume).
        Images are augmented a whole batch at a time, seeded by (seed, epoch, global batch
        number).
        Streamed files that cannot be decoded come out with label -1 (``take_skipped``).
        A shard with no rows in an epoch's last global batch gets one row labelled -1 there
        (``shards.shard_rows``), so every shard runs the same number of steps. Each
        epoch's order is drawn in numpy as the run reaches it (``shards.run_rows``).
        """
        check_sharding(batch_size, shard, num_shards, first_batch, epochs)
        assert self._train is not None
        steps = self.batches_per_epoch(batch_size)
        local = batch_size // num_shards
        offset = shard * local
        numbers = range(epochs.start * steps + first_batch, epochs.stop * steps)
        rows = run_rows(self.epoch_order, steps, batch_size, offset, local, numbers)
        taken = self.decoder_augment()
        draws = None if taken is None else self._decoder_draws(taken, batch_size, offset, steps)
        dataset = self._batches(self._train, "train", rows, draws)
        augment = self.augment_function()
        if augment is not None:
            check_pairing(self._augment, batch_size, num_shards)
        if augment is None and num_shards == 1:
            return dataset.prefetch(tf.data.AUTOTUNE)

        @plain
        def prepare(number: tf.Tensor, batch: tuple) -> tuple:
            """Padding rows unlabelled (``shard_rows``), then the augmenter (run batch number)."""
            images, labels = batch
            epoch, in_epoch = number // steps, number % steps
            if num_shards > 1:
                padding = in_epoch * batch_size + offset >= self.num_train
                labels = tf.where(padding, -tf.ones_like(labels), labels)
            if augment is None:
                return images, labels
            rows = global_rows(self.num_train, in_epoch, batch_size, offset,
                               tf.shape(labels)[0])
            return augment(images, labels, in_epoch, rows, offset, epoch)

        return dataset.enumerate(start=numbers.start).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    @property
    def epoch_order(self) -> Callable[[int], np.ndarray]:
        """Epoch -> training-split indices, drawn from (seed, epoch) alone.

        ``data.sampler: uniform``: a permutation (each image once). ``balanced``: as many
        places per class, images repeated or left out to fill them (``balanced_order``).
        Either way ``num_train`` places, so epochs, shards and resume points keep their size.
        A function of values, not of the bundle (``drawn_order``): the pipelines' numpy_function
        calls it, and TensorFlow keeps that for the life of the process."""
        assert self._train is not None
        labels = self._train.labels if self._sampler == "balanced" else None
        return partial(drawn_order, self._seed, self.num_train, labels)

    def train_counts(self) -> np.ndarray | None:
        """Training images per class (int64 [num_classes]) as listed before decoding; None
        when the labels are only known while streaming (packed shards)."""
        if self._train is None:
            return None
        if self._train.labels.ndim == 2:  # multilabel: images carrying each label
            return self._train.labels.sum(axis=0).astype(np.int64)
        return class_counts(self._train.labels, self.num_classes)

    def use_balance(self, sampler: str, class_weight: str | dict | None) -> None:
        """Take ``data.sampler`` and resolve ``data.class_weight`` for these classes, so a
        class name the data lacks is refused before any training."""
        counts = self.train_counts()
        if counts is None and "balanced" in (sampler, class_weight):
            which = "data.sampler" if sampler == "balanced" else "data.class_weight"
            raise UserError(f"{which}: balanced needs every training label up front, which "
                            "packed tfrecord shards only give while streaming",
                            hint="train from the class folder (data.source: folder), or give "
                                 "data.class_weight as {class name: weight}", exit_code=2)
        self._sampler = sampler
        self.class_weights = class_weight_vector(class_weight, self.class_names, counts)

    def augment_function(self) -> Callable | None:
        """The training augmenter, traced once per bundle (``augment.traced_augmenter``),
        without what the decoder takes (``decoder_augment``)."""
        if self._augment_run is None:
            cfg = left_to_augmenter(self._augment, self.decoder_augment())
            self._augment_run = (traced_augmenter(cfg, self.image_size, self.mean, self._seed,
                                                  self.num_classes),)
        return self._augment_run[0]

    def decoder_augment(self) -> DecoderAugment | None:
        """The random resized crop and flip the decoder takes when training files are
        decoded as the batches are made (streamed, no store; ``augment.decoder_augment``):
        the crop is then taken from each file before it is resized (``decode.decode_cropped``;
        a JPEG is decoded only inside its box) rather than from the image already resized."""
        split = self._train
        streamed = split is not None and split.files is not None and split.store is None
        return decoder_augment(self._augment) if streamed else None

    def _decoder_draws(self, taken: DecoderAugment, batch_size: int, offset: int, steps: int
                       ) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """(the run's global batch number, rows) -> each file's crop and flip numbers for
        this shard's rows from ``offset``, drawn from (seed, epoch, batch number in the
        epoch) like the augmenter's own."""
        seed, total = self._seed, self.num_train  # not self: runs in a redo (drawn_order)

        def draws(number: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
            epoch, in_epoch = number // steps, number % steps
            return decoder_draws(taken, seed, epoch, in_epoch,
                                 global_rows(total, in_epoch, batch_size, offset, count),
                                 offset, count)

        return draws

    def val_dataset(self, batch_size: int) -> tf.data.Dataset | None:
        """Validation batches (uint8 images) in a fixed order, not augmented; None without a
        validation split."""
        if self._val is None or self.num_val == 0:
            return None
        count = self.num_val

        def rows(number: tf.Tensor) -> tf.Tensor:  # in file order
            return tf.range(number * batch_size, tf.minimum((number + 1) * batch_size, count))

        return self._batches(self._val, "val", computed_rows(range(-(-count // batch_size)), rows)
                             ).prefetch(tf.data.AUTOTUNE)

    def take_skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of streamed files that failed to decode since the last call, once
        each; they fill their places as zeros, label -1 (the trainer names them per epoch)."""
        found: dict[tuple[str, str], None] = {}
        for split in (self._train, self._val):
            if split is not None and split.files is not None:
                found.update({(split.files[k], reason): None for k, reason in split.skips.take()})
        return list(found)

    def unreadable_classes(self, skipped: set[str]) -> list[str]:
        """Classes whose every training file is in ``skipped`` (``skips.all_skipped``)."""
        return all_skipped(self._train, self.class_names, skipped)

    def _batches(self, split: Split, name: str, rows: BatchRows,
                 draws: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None
                 ) -> tf.data.Dataset:
        """Batches ``rows.numbers`` of (uint8 images, int32 labels), in order, holding
        ``rows``' indices. The lookup takes a batch of indices at a time (a gather in
        memory; files decoded in parallel within it, and several batches at once). Streamed
        files without a store go through ``_streamed``; ``draws`` (``_decoder_draws``) makes
        each file's random resized crop and flip."""
        if split.files is not None and split.store is None:
            dataset = self._streamed(split, name, rows, draws)
        elif split.ready is not None:  # in memory: a gather, each batch's rows read in turn
            lookup = self._lookup(name, split)
            dataset = rows.numbered().map(plain(lambda number, indices: lookup(indices)))
        else:  # decoded (files into a store, raw arrays): each batch on every core; its rows
            lookup = self._lookup(name, split)  # found inside that map (see guarded_batches)
            parallel = BATCHES_AT_ONCE if split.files is not None else tf.data.AUTOTUNE
            dataset = tf.data.Dataset.range(rows.numbers.start, rows.numbers.stop).map(
                plain(lambda number: lookup(rows.of(number))), num_parallel_calls=parallel)
        dataset = dataset.with_options(without_autotune())
        if split.labels.ndim == 2:  # multi-hot rows
            dataset = dataset.map(plain(lambda images, rows: (images, tf.cast(rows, tf.float32))))
        return dataset

    def _streamed(self, split: Split, name: str, rows: BatchRows,
                  draws: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None) -> tf.data.Dataset:
        """Streamed files (no store): ``guarded.guarded_batches``, the fast lookup first, the
        safe one where it failed, Pillow for the places it left (``stream.pillow_places``)."""
        taken = None if draws is None else self.decoder_augment()

        def inputs(number: tf.Tensor) -> tuple[tf.Tensor, ...]:
            indices = rows.of(number)
            return (indices,) if draws is None else (indices, draws(number, tf.size(indices)))

        spec = (tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.uint8),
                tf.TensorSpec([None, *split.labels.shape[1:]], tf.int32))
        fast, safe = self._lookup(name, split, taken, fast=True), self._lookup(name, split, taken)
        return guarded_batches(rows.numbers, inputs, fast, safe, spec, split.skips.note_redone,
                               pillow_places(split.files, split.labels, self.resizing,
                                             self.channels, split.skips, taken))

    def sample_images(self, n: int = 200) -> np.ndarray:
        """Up to ``n`` prepared training images (uint8, not augmented), e.g. for int8 calibration.

        The choice is seeded, so an export repeats exactly. Streamed files that cannot be
        decoded are left out of the sample."""
        assert self._train is not None
        n = min(n, self.num_train)
        rng = seeded_rng(self._seed, SAMPLE_STREAM)
        picks = np.sort(rng.choice(self.num_train, n, replace=False))
        shape = (0, self.image_size, self.image_size, self.channels)
        if n == 0:
            return np.zeros(shape, np.uint8)
        if self._train.ready is not None:
            return self._train.ready[picks]
        return decoded_images(self._lookup("train", self._train), picks, shape)

    def _lookup(self, name: str, split: Split, taken: DecoderAugment | None = None, *,
                fast: bool = False) -> Callable[..., tuple]:
        """Graph function indices [b] -> (uint8 images, labels), traced once per split (and
        once more with ``taken``: (indices, draws), ``stream.file_images``; ``fast``:
        ``stream.fast_file_images``, which fails where this one keeps places).

        Every epoch builds a new pipeline; handing ``map`` the same ``tf.function`` lets
        tf.data reuse its graph instead of tracing the decoder again (on a 20,000-file
        folder the first epoch's build, which traces, took 0.7 s; a later epoch's build and
        first batch together 0.5 s; timed around ``train_dataset`` and ``next``).
        """
        key = f"{name} {taken.name if taken else ''}" + (" fast" if fast else "")
        if key not in self._lookups:
            signature = [tf.TensorSpec([None], tf.int64)]
            if taken is not None:
                signature.append(tf.TensorSpec([None, taken.columns], tf.float32))
            if fast:
                lookup = fast_file_images(split.files, split.labels, self.resizing,
                                          self.channels, split.skips, taken)
            elif taken is not None:
                lookup = file_images(split.files, split.labels, self.resizing, self.channels,
                                     split.skips, None, taken)
            else:
                lookup = self._make_lookup(name, split)
            self._lookups[key] = tf.function(lookup, input_signature=signature,
                                             autograph=False)  # plain TF ops: see decode
        return self._lookups[key]

    def _make_lookup(self, name: str, split: Split) -> Callable[[tf.Tensor], tuple]:
        """Graph function indices [b] -> (uint8 images, labels), from memory or decoded."""
        labels = tf.constant(split.labels, tf.int32)
        if split.ready is not None:
            if name not in self._tensors:  # convert once; every epoch's pipeline reuses it
                self._tensors[name] = tf.constant(split.ready)
            images = self._tensors[name]

            def from_memory(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return tf.gather(images, index), tf.gather(labels, index)

            return from_memory
        if split.files is not None:
            return file_images(split.files, split.labels, self.resizing, self.channels,
                               split.skips, split.store)
        assert split.raw is not None
        return resized_on_demand(split.raw, labels, self.resizing, self.channels)


def drawn_order(seed: int, count: int, labels: np.ndarray | None, epoch: int) -> np.ndarray:
    """``DataBundle.epoch_order`` from values alone: a permutation of ``count``, or with the
    balanced sampler's ``labels`` a class-balanced draw of as many places (``run_rows``)."""
    rng = seeded_rng(seed, ORDER_STREAM, epoch)
    if labels is not None:
        return balanced_order(labels, count, rng)
    return rng.permutation(count)


def decoded_images(lookup: Callable[[tf.Tensor], tuple], picks: np.ndarray,
                   shape: tuple[int, ...]) -> np.ndarray:
    """The images of ``picks`` through a (batch) lookup, leaving out those that failed
    (label < 0)."""
    dataset = tf.data.Dataset.from_tensor_slices(picks.astype(np.int64)).batch(64)
    dataset = dataset.map(plain(lookup), num_parallel_calls=tf.data.AUTOTUNE).with_options(
        without_autotune())  # AUTOTUNE: every core (see decode.without_autotune)
    kept = [images[labels.reshape(len(labels), -1).min(axis=1) >= 0]  # -1 (rows): unreadable
            for images, labels in dataset.as_numpy_iterator()]
    return np.concatenate(kept) if kept else np.zeros(shape, np.uint8)
