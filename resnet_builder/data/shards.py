"""Sharding an epoch over workers: each worker's rows of every global batch, and the one
padding row that keeps every worker's step count equal."""

from __future__ import annotations

import numpy as np

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
