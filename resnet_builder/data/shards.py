"""Sharding an epoch over workers: each worker's rows of every global batch, and the one
padding row that keeps every worker's step count equal."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from resnet_builder.errors import UserError


def check_sharding(batch_size: int, shard: int, num_shards: int, first_batch: int) -> None:
    """Shards split each global batch evenly; a bad combination is the caller's mistake."""
    if num_shards < 1 or not 0 <= shard < num_shards or first_batch < 0:
        raise ValueError(f"need 0 <= shard < num_shards and first_batch >= 0, got shard={shard}, "
                         f"num_shards={num_shards}, first_batch={first_batch}")
    if batch_size % num_shards:
        raise UserError(f"the global batch size {batch_size} does not split evenly over "
                        f"{num_shards} workers", hint=f"use a data.batch_size that is a multiple "
                        f"of {num_shards}")


def shard_padding(count: int, batch_size: int, shard: int, num_shards: int,
                  first_batch: int = 0) -> int:
    """1 when ``shard`` has no rows in the last global batch of an epoch of ``count`` while
    shard 0 has: without a row there it would run one step fewer, and the other workers'
    last step would wait for it (the run died with "lost contact"). Else 0."""
    batches = -(-count // batch_size)
    if num_shards == 1 or batches <= first_batch:
        return 0
    last_rows = count - (batches - 1) * batch_size
    return int(last_rows <= shard * (batch_size // num_shards))


def unlabelled_last(dataset: tf.data.Dataset, last: int) -> tf.data.Dataset:
    """Batch ``last`` of ``dataset`` with every label -1 (a padded shard's row: it counts in
    no loss, accuracy or image count, like an unreadable file)."""
    def relabel(number: tf.Tensor, batch: tuple) -> tuple:
        images, labels = batch
        return images, tf.where(number == last, -tf.ones_like(labels), labels)

    return dataset.enumerate().map(relabel)


def shard_order(order: np.ndarray, batch_size: int, shard: int, num_shards: int,
                first_batch: int = 0) -> np.ndarray:
    """The indices one shard reads, in order: its rows of each global batch from ``first_batch``."""
    local = batch_size // num_shards
    position = np.arange(len(order))
    mine = ((position % batch_size) // local == shard) & (position // batch_size >= first_batch)
    return order[mine]
