"""Which images go where: the stratified validation split, ``data.limit``, channel statistics.

Both the split and the limit share images out per class in proportion (largest
remainder), so small classes are neither dropped nor over-represented. The mean/std
the model normalizes with are measured on the training split only, before augmentation.
"""

from __future__ import annotations

import math

import numpy as np

from resnet_builder.data.bundle import LIMIT_STREAM, SPLIT_STREAM, Split, seeded_rng

# Mean/std of a sample of files are measured on images of at most this size: per-channel
# statistics barely depend on resolution, and small images decode several times faster
# (JPEGs at 1/8 scale), which keeps the time to the first training step short.
STATS_SIZE = 64

_LEVELS = np.arange(256, dtype=np.float64)  # the values a uint8 pixel can take


def allocate(counts: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``counts`` (largest remainder), <= cap."""
    total = min(total, int(cap.sum()))
    quota = counts * total / max(int(counts.sum()), 1)
    take = np.minimum(np.floor(quota).astype(np.int64), cap)
    while take.sum() < total:
        for k in np.argsort(-(quota - take), kind="stable"):
            if take.sum() == total:
                break
            if take[k] < cap[k]:
                take[k] += 1
    return take


def pick_per_class(labels: np.ndarray, take: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: ``take[k]`` random members of each class k."""
    picked = [rng.permutation(np.flatnonzero(labels == k))[:n] for k, n in enumerate(take)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def stratified_split(labels: np.ndarray, fraction: float, num_classes: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices; val is ceil(fraction * N) images, each class keeps >= 1 for train."""
    if fraction <= 0 or len(labels) == 0:
        return np.arange(len(labels)), np.zeros(0, np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    wanted = math.ceil(round(fraction * len(labels), 9))
    take = allocate(counts, wanted, np.maximum(counts - 1, 0))
    val = pick_per_class(labels, take, seeded_rng(seed, SPLIT_STREAM))
    return np.setdiff1d(np.arange(len(labels)), val), val


def apply_limit(labels: np.ndarray, limit: int | None, num_classes: int,
                seed: int) -> np.ndarray:
    """Indices of at most ``limit`` training images, drawn per class in proportion."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    return pick_per_class(labels, allocate(counts, limit, counts), seeded_rng(seed, LIMIT_STREAM))


class ChannelStats:
    """Running per-channel mean and std on the 0..255 scale."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.count = 0

    def add(self, pixels: np.ndarray) -> None:
        flat = pixels.reshape(-1, pixels.shape[-1])
        if flat.dtype == np.uint8:
            self._add_levels(flat)
        else:
            wide = flat.astype(np.float64)
            self.total += wide.sum(axis=0)
            self.squares += np.square(wide).sum(axis=0)
        self.count += len(flat)

    def _add_levels(self, flat: np.ndarray) -> None:
        """uint8 pixels by a histogram of their 256 levels per channel: the same exact sums
        at 0.24 s for CIFAR-10's 50,000 training images against 1.9 s through float64
        (and 0.02 vs 0.11-0.23 s for a folder's 500-image sample at 64x64; 2 cores)."""
        for channel in range(flat.shape[1]):
            counts = np.bincount(flat[:, channel], minlength=256).astype(np.float64)
            self.total[channel] += counts @ _LEVELS
            self.squares[channel] += counts @ np.square(_LEVELS)

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std); std is floored at 1 so a flat channel cannot blow up normalization."""
        mean = self.total / max(self.count, 1)
        var = np.maximum(self.squares / max(self.count, 1) - mean**2, 0.0)
        return [float(m) for m in mean], [float(max(s, 1.0)) for s in np.sqrt(var)]


def split_stats(split: Split, channels: int, chunk: int = 1024) -> tuple[list, list]:
    """Mean/std of an array split, in chunks so no float copy of the whole set is made.

    A split too big to resize up front (``raw``) is measured before resizing: resizing
    barely moves per-channel mean and std, and it saves a pass over every image.
    """
    stats = ChannelStats(channels)
    images = split.ready if split.ready is not None else split.raw
    assert images is not None
    for start in range(0, len(split), chunk):
        stats.add(images[start:start + chunk])
    return stats.result()
