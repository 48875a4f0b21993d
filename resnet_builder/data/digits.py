"""The ``digits`` source: scikit-learn's bundled 8x8 handwritten digits, no download needed."""

from __future__ import annotations

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle
from resnet_builder.data.images import to_channels
from resnet_builder.data.sources import bundle_from_arrays


def digits_bundle(data: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (values 0..16), scaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    images = to_channels(pixels, data.channels)
    labels = digits.target.astype(np.int32)
    names = [str(k) for k in range(10)]
    return bundle_from_arrays(data, seed, names, (images, labels), None)
