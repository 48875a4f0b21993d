"""Which indices a batch holds: each worker's rows of every global batch of an epoch, the one
padding row that keeps every worker's step count equal, and a run's batches by number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import tensorflow as tf

from resnet_builder.errors import UserError

plain = tf.autograph.experimental.do_not_convert  # maps of plain TF ops: nothing to convert


def check_sharding(batch_size: int, shard: int, num_shards: int, first_batch: int,
                   epochs: range = range(1)) -> None:
    """Shards split each global batch evenly; a bad combination (or an empty or stepped
    run of ``epochs``) is the caller's mistake."""
    if not epochs or epochs.start < 0 or epochs.step != 1 or batch_size < 1:
        raise ValueError(f"need epochs from 0 in steps of 1 and batch_size >= 1, got "
                         f"{epochs}, {batch_size}")
    if num_shards < 1 or not 0 <= shard < num_shards or first_batch < 0:
        raise ValueError(f"need 0 <= shard < num_shards and first_batch >= 0, got shard={shard}, "
                         f"num_shards={num_shards}, first_batch={first_batch}")
    check_batch_split(batch_size, num_shards)


def check_batch_split(batch_size: int, workers: int) -> None:
    """Each worker reads the same share of every global batch (the trainer asks before a
    multi-worker run makes its folder)."""
    if batch_size % workers:
        raise UserError(f"the global batch size {batch_size} does not split evenly over "
                        f"{workers} workers", hint=f"use a data.batch_size that is a multiple "
                        f"of {workers}", exit_code=2)


def shard_rows(order: np.ndarray, number: int, batch_size: int, offset: int, local: int
               ) -> np.ndarray:
    """The indices of one shard's rows ``[offset, offset + local)`` of global batch
    ``number`` of an epoch in ``order``, what ``shard_order`` gives for that batch.

    A shard with no rows in the epoch's last global batch (it is too short to reach
    ``offset``) gets one padding row there, the epoch's first index, which the pipeline
    labels -1: without it that worker would run one step fewer, and the other workers'
    last step would wait for it (the run died with "lost contact"). It counts in no loss,
    accuracy or image count, like an unreadable file.
    """
    start = number * batch_size + offset
    stop = min(start + local, len(order))
    return order[start:stop] if start < stop else order[:1]


@dataclass(frozen=True)
class BatchRows:
    """The indices each batch of ``numbers`` holds, two ways: ``of(number)``, a graph
    function for one batch (one made again after a failure), and ``numbered()``, a dataset
    of (number, int64 indices) for them all in order, the way a pipeline reads them."""

    numbers: range
    of: Callable[[tf.Tensor], tf.Tensor]
    numbered: Callable[[], tf.data.Dataset]


def computed_rows(numbers: range, of: Callable[[tf.Tensor], tf.Tensor]) -> BatchRows:
    """Rows TensorFlow computes from the batch number alone (validation's file order)."""
    return BatchRows(numbers, of, lambda: tf.data.Dataset.range(numbers.start, numbers.stop)
                     .map(plain(lambda number: (number, of(number)))))


def run_rows(epoch_order: Callable[[int], np.ndarray], steps: int, batch_size: int,
             offset: int, local: int, numbers: range) -> BatchRows:
    """One shard's rows (``shard_rows``) of the run's global batches ``numbers`` (epoch *
    steps + batch), from ``epoch_order(epoch)``, drawn in numpy.

    ``numbered()`` draws each epoch's order once, in a ``tf.numpy_function`` as the run
    reaches the epoch, and cuts its batches out of it in TensorFlow. A numpy call per
    batch, holding the GIL, made reading 16x16x1 batches of 64 from memory cost 430 us of
    CPU per batch against 254 us (2,000 batches, process CPU time, the reads included).
    ``of(number)`` finds one batch in numpy (the last two orders are kept: a batch and the
    next epoch's first may be made at once): pipelines that decode call it inside their
    parallel map, where its cost disappears beside the decoding, and fed by ``numbered``
    instead the streamed JPEG pipeline ran ~6% slower (``guarded.guarded_batches``).
    """
    # ``epoch_order`` must hold no bundle (``bundle.drawn_order``): TensorFlow keeps every
    # numpy_function's callable for the life of the process, and through a bound method each
    # run's bundle and images stayed alive (~180 MB a notebook run of 3,000 96x96 images).
    orders = lru_cache(maxsize=2)(lambda epoch: np.asarray(epoch_order(epoch), np.int64))

    def picks(number: np.int64) -> np.ndarray:
        epoch, in_epoch = divmod(int(number), steps)
        return shard_rows(orders(epoch), in_epoch, batch_size, offset, local)

    def of(number: tf.Tensor) -> tf.Tensor:
        found = tf.numpy_function(picks, [number], tf.int64, stateful=False)
        return tf.ensure_shape(found, [None])

    @plain
    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.numpy_function(lambda e: orders(int(e)), [epoch], tf.int64, stateful=False)
        order = tf.ensure_shape(order, [None])
        size = tf.size(order, tf.int64)

        @plain
        def batch(number: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            start = tf.minimum((number - epoch * steps) * batch_size + offset, size)
            stop = tf.minimum(start + local, size)
            return number, tf.cond(start < stop, lambda: order[start:stop], lambda: order[:1])

        return tf.data.Dataset.range(tf.maximum(epoch * steps, numbers.start),
                                     tf.minimum((epoch + 1) * steps, numbers.stop)).map(batch)

    def numbered() -> tf.data.Dataset:
        epochs = range(numbers.start // steps, -(-numbers.stop // steps)) if numbers else range(0)
        return tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(epoch_batches).apply(
            tf.data.experimental.assert_cardinality(len(numbers)))  # flat_map hides it (fit)

    return BatchRows(numbers, of, numbered)


def global_rows(total: int, number: tf.Tensor, batch_size: int, offset: int = 0,
                count: tf.Tensor | None = None) -> tf.Tensor:
    """Rows of global batch ``number`` (int64) of ``total`` images: ``batch_size``, fewer in
    the last; with ``count`` (this shard's rows, from ``offset``) at least ``offset +
    count``, so a padded shard's draws exist (``shard_rows``: its row is past the real ones)."""
    rows = tf.minimum(tf.cast(batch_size, tf.int64), total - number * batch_size)
    if count is None:
        return rows
    return tf.maximum(rows, offset + tf.cast(count, tf.int64))
