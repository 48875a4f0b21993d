"""The ``tfrecord`` source: streams the shards ``resnet-builder pack`` wrote.

The folder's format (shard names, records, ``dataset.json``) is ``pack_format.py``'s. Training
starts without a pass over the data: everything the model needs is in ``dataset.json``,
which also gives each shard's size, checked (one ``stat`` each) before anything is read.

Reading: the train shards are interleaved in parallel (deterministic order), the
shard order is shuffled per epoch and records pass a shuffle buffer, both seeded
by (seed, epoch); batched and parsed a batch at a time (a label that is no class of the
pack becomes -1, named like a bad record), then decoded (``batch_decode``: a
bad record becomes label -1; a pack of JPEGs only without the per-image format check) and
augmented like every source. tf.data combines the buffer's seed with
TensorFlow's global seed, which the trainer sets from ``hardware.seed``, so a run and
its resume see the same batches. Validation shards are read in file order, unaugmented,
also parsed and decoded a batch at a time.
``data.limit`` takes the first records in pack order; ``data.cache``/``verify`` do not
apply (pack checked every file).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import tensorflow as tf

from resnet_builder.config import DataConfig
from resnet_builder.data.augment import decoder_augment, decoder_draws
from resnet_builder.data.batch_decode import DECODE_CHUNK, batch_decoder
from resnet_builder.data.bundle import ORDER_STREAM, DataBundle, seeded_rng
from resnet_builder.data.crops import DecoderAugment
from resnet_builder.data.decode import BATCHES_AT_ONCE, SKIPPED_LABEL, SkipLog, without_autotune
from resnet_builder.data.pack_format import (
    FEATURES,
    PACK_HINT,
    example_bytes,
    is_url,
    join,
    read_dataset_info,
)
from resnet_builder.data.pack_lock import reading_pack
from resnet_builder.data.shards import check_sharding
from resnet_builder.errors import UserError

SHUFFLE_BUFFER = 4096  # records (encoded bytes: ~120 MB of 30 kB JPEGs) mixed across shards
CYCLE_LENGTH = 16  # shard files read at once


def tfrecord_bundle(data: DataConfig, seed: int) -> DataBundle:
    """The bundle of a packed folder: facts from dataset.json, images streamed per epoch."""
    if not data.path:
        raise UserError("data.source 'tfrecord' needs data.path", hint=PACK_HINT)
    folder = data.path if is_url(data.path) else os.path.expanduser(data.path)
    # held until the run closes the bundle: no pack rewrites the folder meanwhile; taken
    # before dataset.json is read, which a pack in progress has removed
    reading = reading_pack(folder, create=False)
    try:
        info = read_dataset_info(folder)
        reading = reading or reading_pack(folder, create=True)
    except BaseException:
        if reading is not None:
            reading.close()
        raise
    stats = "rgb" if data.channels == 3 else "gray"
    train = [Shard(k, join(folder, s["file"]), int(s["count"]))
             for k, s in enumerate(info["splits"]["train"]["shards"])]
    val = [Shard(k, join(folder, s["file"]), int(s["count"]))
           for k, s in enumerate(info["splits"]["val"]["shards"])]
    packed_shards = len(train)
    train = limit_shards(train, data.limit)
    _warn_unused_settings(data, folder, info.get("image_size"))
    return TFRecordBundle(class_names=list(info["class_names"]),
                          num_train=sum(s.count for s in train),
                          num_val=sum(s.count for s in val), image_size=data.image_size,
                          channels=data.channels, mean=list(info["mean"][stats]),
                          std=list(info["std"][stats]), train_shards=train, val_shards=val,
                          jpeg_only=_jpeg_only(info["splits"]["train"]),
                          val_jpeg_only=_jpeg_only(info["splits"]["val"]),
                          packed_shards=packed_shards, reading=reading)


def _jpeg_only(split: dict) -> bool:
    """Whether pack counted only JPEG records in ``split`` (packs before that count: no)."""
    return split.get("formats", {}).get("other") == 0


def _warn_unused_settings(data: DataConfig, folder: str, packed: int | None) -> None:
    """Say what a packed folder makes pointless, rather than ignoring it without a word."""
    if packed and data.image_size > packed:
        warnings.warn(f"{folder} was packed with --image-size {packed}; data.image_size "
                      f"{data.image_size} enlarges every image", UserWarning, stacklevel=3)
    unused = [name for name, on in (("data.verify", data.verify),
                                    ("data.cache: disk", data.cache == "disk")) if on]
    if unused:
        warnings.warn(f"{' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} not "
                      "apply to packed records (pack decoded every file once; records are "
                      "always streamed)", UserWarning, stacklevel=3)


@dataclass(frozen=True)
class Shard:
    """One shard file: its number in its split, where it is, how many records it gives."""

    index: int
    path: str
    count: int


def limit_shards(shards: list[Shard], limit: int | None) -> list[Shard]:
    """``data.limit``: the first ``limit`` records in pack order (a random sample: pack shuffles
    the training records before it deals them into shards), not stratified per class."""
    if limit is None:
        return shards
    kept, left = [], limit
    for shard in shards:
        if left > 0:
            kept.append(Shard(shard.index, shard.path, min(shard.count, left)))
            left -= kept[-1].count
    return kept


@dataclass(eq=False)
class TFRecordBundle(DataBundle):
    """A ``DataBundle`` that streams packed shards instead of holding prepared splits."""

    train_shards: list[Shard] = field(default_factory=list, repr=False)
    val_shards: list[Shard] = field(default_factory=list, repr=False)
    jpeg_only: bool = False  # every training record a JPEG: decoded without the format check
    val_jpeg_only: bool = False  # the same for the validation records
    packed_shards: int = 0  # training shard files in the pack, before data.limit
    reading: IO[bytes] | None = field(default=None, repr=False)  # pack_lock.reading_pack

    def close(self) -> None:
        if self.reading is not None:
            self.reading.close()
    _skips: SkipLog = field(default_factory=SkipLog, repr=False)
    _names: dict[int, str] = field(default_factory=dict, repr=False)  # skipped key -> its name

    def train_batches(self, epochs: range, batch_size: int, *, shard: int = 0,
                      num_shards: int = 1, first_batch: int = 0) -> tf.data.Dataset:
        """The shuffled, augmented batches of ``epochs`` (0-based) of this worker's shard
        files, one epoch after the other in one dataset, in local batches.

        ``batch_size`` is the global batch; each of ``num_shards`` workers gives batches of
        ``batch_size / num_shards``. Worker ``shard`` reads shard files ``shard, shard +
        num_shards, ...`` (file sharding, the standard for TFRecords, where each worker reads
        only its files): every record is seen exactly once per epoch over all workers, but
        a global batch holds other records than in a one-worker run. A worker whose files
        hold fewer records is padded with label -1 zeros (the trainer ignores them), so all
        give ``batches_per_epoch`` batches an epoch. ``first_batch=k`` starts at
        batch k of the first epoch. Decoding and augmentation run once over all the epochs'
        records (``_epoch_records``).
        """
        check_sharding(batch_size, shard, num_shards, first_batch, epochs)
        if num_shards > len(self.train_shards):
            limited = self.packed_shards >= num_shards  # data.limit left too few files
            raise UserError(f"{num_shards} workers but only {len(self.train_shards)} training "
                            "shard file(s)" + (" within data.limit" if limited else "")
                            + ": each worker reads its own files",
                            hint="raise data.limit (or leave it out) so each worker has a shard "
                            "file" if limited else f"pack again with --shards {10 * num_shards} "
                            "(about 10 per worker) and --overwrite")
        local = batch_size // num_shards
        steps = self.batches_per_epoch(batch_size, num_shards)
        epoch_batches = self._epoch_records(epochs, shard, num_shards, local, steps,
                                            first_batch)
        numbered = tf.data.Dataset.range(epochs.start * steps + first_batch,
                                         epochs.stop * steps)
        batches = self._decoded_batches(tf.data.Dataset.zip(numbered, epoch_batches),
                                        batch_size, shard * local, steps)
        augment = self.augment_function()
        if augment is not None:  # this worker's rows of the global batch's random draws
            @tf.autograph.experimental.do_not_convert
            def augmented(number: tf.Tensor, batch: tuple) -> tuple[tf.Tensor, tf.Tensor]:
                return augment(batch[0], batch[1], number % steps,
                               tf.constant(batch_size, tf.int64), shard * local, number // steps)

            batches = tf.data.Dataset.zip(numbered, batches).map(
                augmented, num_parallel_calls=tf.data.AUTOTUNE)
        return batches.prefetch(tf.data.AUTOTUNE)

    def _epoch_records(self, epochs: range, shard: int, num_shards: int, local: int,
                       steps: int, first_batch: int) -> tf.data.Dataset:
        """Batches of (key, encoded image, label) of ``epochs``, ``steps`` an epoch (fewer
        in the first after ``first_batch``).

        Each epoch's records are their own small dataset (shard order and shuffle seed drawn
        from (seed, epoch): ``shuffle`` takes its seed as a Python number, so these cannot
        come from one ``flat_map``), joined by ``concatenate`` in a balanced tree (depth
        log2 of the epochs), which starts an epoch's reading only when the one before ends.
        """
        most = self._most_per_worker(num_shards)
        parts = []
        for epoch in epochs:
            rng = seeded_rng(self._seed, ORDER_STREAM, epoch)
            mine = [self.train_shards[i] for i in rng.permutation(len(self.train_shards))
                    if self.train_shards[i].index % num_shards == shard]
            records = self._records(mine, "train", parallel=True)
            records = records.shuffle(SHUFFLE_BUFFER, seed=int(rng.integers(2**31)))
            start = first_batch * local if epoch == epochs.start else 0
            records = records.skip(start)
            padding = most - max(start, sum(s.count for s in mine))
            if padding > 0:  # key -1: the decoder leaves the place blank, label -1, unrecorded
                records = records.concatenate(tf.data.Dataset.from_tensors(
                    (tf.constant(-1, tf.int64), tf.constant(_PADDING))).repeat(padding))
            parts.append(records.batch(local).take(steps - start // local))
        return _joined(parts).map(batch_parser(len(self.class_names), self._skips),
                                  num_parallel_calls=tf.data.AUTOTUNE)

    def decoder_augment(self) -> DecoderAugment | None:
        """Packed records are always decoded as batches are made: the crop and flip are
        taken as they are decoded."""
        return decoder_augment(self._augment)

    def _decoded_batches(self, batches: tf.data.Dataset, batch_size: int, offset: int,
                         steps: int) -> tf.data.Dataset:
        """(the run's global batch number, batch of (key, bytes, label)) -> (uint8 images,
        labels), a batch per decoder call; with ``decoder_augment`` each record's random
        resized crop and flip, drawn from (seed, epoch, batch number in the epoch) as ``DataBundle``
        draws it for files."""
        decode = self._record_decoder(batch_size, offset)
        drawing = self.decoder_augment() is not None

        @tf.autograph.experimental.do_not_convert  # plain TF ops: see batch_decode
        def decoded(number: tf.Tensor, batch: tuple) -> tuple[tf.Tensor, tf.Tensor]:
            return decode(*batch, number % steps, number // steps) if drawing else decode(*batch)

        return batches.with_options(without_autotune()).map(decoded,
                                                            num_parallel_calls=BATCHES_AT_ONCE)

    def _record_decoder(self, batch_size: int, offset: int) -> Callable[..., tuple]:
        """The batch decoder as one graph function per bundle, the epoch and the global batch
        number its arguments: every epoch's pipeline reuses the graph instead of tracing the
        decoder again, as ``DataBundle._lookup`` does for files."""
        taken = self.decoder_augment()
        key = "records" if taken is None else f"records {taken.name} {batch_size} {offset}"
        if key in self._lookups:
            return self._lookups[key]
        decode = batch_decoder(self.resizing, self.channels, self._skips, from_files=False,
                               taken=taken, only_jpeg=self.jpeg_only)
        signature = [tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string),
                     tf.TensorSpec([None], tf.int32)]
        if taken is None:
            function = decode
        else:
            signature += [tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)]
            seed = self._seed  # not self: the cached function would keep the bundle alive

            def function(keys: tf.Tensor, contents: tf.Tensor, labels: tf.Tensor,
                         number: tf.Tensor, epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                draws = decoder_draws(taken, seed, epoch, number,
                                      tf.constant(batch_size, tf.int64), offset,
                                      tf.shape(keys)[0])
                return decode(keys, contents, labels, draws)

        self._lookups[key] = tf.function(function, input_signature=signature,
                                         autograph=False)  # plain TF ops: see decode
        return self._lookups[key]

    def val_dataset(self, batch_size: int) -> tf.data.Dataset | None:
        """Validation batches in file order, not augmented; None without validation shards."""
        if self.num_val == 0:
            return None
        records = self._records(self.val_shards, "val", parallel=False)
        return self._decoded(records, batch_size, self.val_jpeg_only).prefetch(tf.data.AUTOTUNE)

    def sample_images(self, n: int = 200) -> np.ndarray:
        """The first ``n`` training records in pack order (a seeded random sample), uint8."""
        n = min(n, self.num_train)
        batches = self._decoded(self._records(self.train_shards, "train", parallel=False)
                                .take(n), DECODE_CHUNK, self.jpeg_only)
        picked = [image for images, labels in batches.as_numpy_iterator()
                  for image in images[labels >= 0]]
        shape = (0, self.image_size, self.image_size, self.channels)
        return np.stack(picked) if picked else np.zeros(shape, np.uint8)

    def take_skipped(self) -> list[tuple[str, str]]:
        """Records that failed to decode since the last call: ("<the packed file> (<shard
        file>#<record>)", reason), the file read back from the record (rare: cached)."""
        paths = {("train", s.index): s.path for s in self.train_shards}
        paths.update({("val", s.index): s.path for s in self.val_shards})
        out = []
        for key, reason in self._skips.take():
            if key not in self._names:
                split, index, position = key >> 62, (key >> 32) & 0x3FFFFFFF, key & 0xFFFFFFFF
                shard = paths[("val" if split else "train", index)]
                record = next(iter(tf.data.TFRecordDataset(shard).skip(position).take(1)))
                packed = tf.io.parse_single_example(record, {"path": FEATURES["path"]})
                self._names[key] = (f"{packed['path'].numpy().decode()} "
                                    f"({os.path.basename(shard)}#{position})")
            out.append((self._names[key], reason))
        return out

    def batches_per_epoch(self, batch_size: int, num_shards: int = 1) -> int:
        """Global batches in an epoch: enough for the worker whose shard files hold the most
        records (``ceil(num_train / batch_size)`` on one worker). With fewer, the loop ended
        the epoch before that worker's last batches, which were never trained on."""
        return -(-self._most_per_worker(num_shards) // (batch_size // num_shards))

    def _most_per_worker(self, num_shards: int) -> int:
        """Records of the worker with the most: every worker pads up to it."""
        return max(sum(s.count for s in self.train_shards if s.index % num_shards == w)
                   for w in range(num_shards))

    def _records(self, shards: list[Shard], split: str, parallel: bool) -> tf.data.Dataset:
        """(key, serialized record) of ``shards`` in that order, interleaved when ``parallel``.

        The key names the record for the skip log: split, shard number, position in it.
        Keys are zipped on (no per-record function) and records are parsed later, in a
        parallel map: 1.4x the records/s of parsing inside the interleave (measured).
        """
        keys = [(int(split == "val") << 62) | (s.index << 32) for s in shards]
        files = tf.data.Dataset.from_tensor_slices(
            (tf.constant(keys, tf.int64), tf.constant([s.path for s in shards], tf.string),
             tf.constant([s.count for s in shards], tf.int64)))

        def read(key: tf.Tensor, path: tf.Tensor, count: tf.Tensor) -> tf.data.Dataset:
            return tf.data.Dataset.zip(tf.data.Dataset.range(key, key + count),
                                       tf.data.TFRecordDataset(path).take(count))

        if not parallel:
            return files.flat_map(read)
        return files.interleave(read, cycle_length=max(1, min(CYCLE_LENGTH, len(shards))),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _decoded(self, records: tf.data.Dataset, batch_size: int, only_jpeg: bool
                 ) -> tf.data.Dataset:
        """(key, record) -> batches of (uint8 images, labels) in order, failures as label -1
        in the skip log. Parsed and decoded a batch at a time, as for training: no per-record
        parse, and no unbatching into chunks for the decoder and batching again."""
        decode = batch_decoder(self.resizing, self.channels, self._skips, from_files=False,
                               only_jpeg=only_jpeg)
        parsed = records.batch(batch_size).map(
            batch_parser(len(self.class_names), self._skips), deterministic=True,
            num_parallel_calls=tf.data.AUTOTUNE)
        return (parsed.map(decode, num_parallel_calls=BATCHES_AT_ONCE, deterministic=True)
                .with_options(without_autotune()))


def _joined(parts: list[tf.data.Dataset]) -> tf.data.Dataset:
    """``parts[0].concatenate(parts[1])...`` as a balanced tree, so a run of many epochs
    does not nest hundreds of datasets deep."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return _joined(parts[:middle]).concatenate(_joined(parts[middle:]))


def batch_parser(num_classes: int, skips: SkipLog) -> Callable[..., tuple]:
    """(keys [b], serialized examples [b]) -> (keys, encoded images, int32 labels): one
    ``parse_example`` a batch, ~40 us of CPU less per record than one at a time.

    A label outside 0..num_classes-1 (a record from another pack) would train as an
    all-zero one-hot target: it becomes -1 (not trained on) and goes to ``skips`` with its
    key, named like a record that fails to decode. The check is one compare per record
    and a ``reduce_any`` per batch; Python runs only for a batch that has one."""
    def note(keys: np.ndarray, labels: np.ndarray) -> np.int64:
        for key, label in zip(keys.tolist(), labels.tolist(), strict=True):
            skips.add(key, f"label {label} is not a class of this pack (0..{num_classes - 1})")
        return np.int64(len(keys))

    @tf.autograph.experimental.do_not_convert  # plain TF ops
    def parse(keys: tf.Tensor, records: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        examples = tf.io.parse_example(records, FEATURES)
        labels = examples["label"]
        bad = (keys >= 0) & ((labels < 0) | (labels >= num_classes))  # key -1: padding
        noted = tf.cond(tf.reduce_any(bad), lambda: tf.numpy_function(
            note, [tf.boolean_mask(keys, bad), tf.boolean_mask(labels, bad)], tf.int64,
            stateful=True), lambda: tf.constant(0, tf.int64))
        with tf.control_dependencies([noted]):
            labels = tf.where(bad, tf.constant(SKIPPED_LABEL, tf.int64), labels)
        return keys, examples["image"], tf.cast(labels, tf.int32)

    return parse


# the record a padding place holds (key -1): no image, label -1
_PADDING = example_bytes(b"", SKIPPED_LABEL, "")
