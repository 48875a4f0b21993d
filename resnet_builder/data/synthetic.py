"""The ``synthetic`` source: seeded random images for smoke tests and benchmarks."""

from __future__ import annotations

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import SYNTH_STREAM, DataBundle, seeded_rng
from resnet_builder.data.sources import bundle_from_arrays


def synthetic_bundle(data: DataConfig, seed: int) -> DataBundle:
    """Seeded random images a tiny model can learn: class colour + class stripes + noise."""
    rng = seeded_rng(seed, SYNTH_STREAM)
    n, k, size, c = data.synthetic_samples, data.synthetic_classes, data.image_size, data.channels
    labels = rng.permutation(np.arange(n) % k).astype(np.int32)
    colours = rng.uniform(60, 195, size=(k, c))
    angles = rng.uniform(0, np.pi, size=k)
    freqs = rng.integers(1, 4, size=k)
    yy, xx = np.mgrid[0:size, 0:size] / size
    waves = np.sin(2 * np.pi * freqs[:, None, None]
                   * (xx * np.cos(angles)[:, None, None] + yy * np.sin(angles)[:, None, None]))
    images = np.zeros((n, size, size, c), np.uint8)
    for start in range(0, n, 256):
        part = labels[start:start + 256]
        noise = rng.normal(0, 20, size=(len(part), size, size, c))
        values = colours[part][:, None, None, :] + 40 * waves[part][..., None] + noise
        images[start:start + len(part)] = np.clip(np.round(values), 0, 255)
    names = [str(i) for i in range(k)]
    return bundle_from_arrays(data, seed, names, (images, labels), None)
