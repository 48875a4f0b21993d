"""Which indices a batch holds: each worker's rows of every global batch of an epoch, the one
padding row that keeps every worker's step count equal, and a run's batches by number."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import tensorflow as tf

from resnet_builder.errors import UserError


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
    if batch_size % num_shards:
        raise UserError(f"the global batch size {batch_size} does not split evenly over "
                        f"{num_shards} workers", hint=f"use a data.batch_size that is a multiple "
                        f"of {num_shards}")


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


def run_rows(epoch_order: Callable[[int], np.ndarray], steps: int, batch_size: int,
             offset: int, local: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Graph function: a global batch number of the run (epoch * steps + batch) -> one
    shard's indices in it (int64 [<= local], ``shard_rows``), from ``epoch_order(epoch)``.

    The order is drawn in numpy, so a ``tf.numpy_function`` runs it, once per epoch (the
    last two are kept: a batch and the next epoch's first may be made at once); a batch
    then slices its rows out of it.
    """
    orders = lru_cache(maxsize=2)(lambda epoch: np.asarray(epoch_order(epoch), np.int64))

    def picks(number: np.int64) -> np.ndarray:
        epoch, in_epoch = divmod(int(number), steps)
        return shard_rows(orders(epoch), in_epoch, batch_size, offset, local)

    def rows(number: tf.Tensor) -> tf.Tensor:
        found = tf.numpy_function(picks, [number], tf.int64, stateful=False)
        return tf.ensure_shape(found, [None])

    return rows
