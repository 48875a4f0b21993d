"""``load_data``: the one entry point that turns ``data.source`` into a ``DataBundle``."""

from __future__ import annotations

import logging

import numpy as np

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data.bundle import DataBundle
from resnet_builder.data.cifar import cifar_bundle
from resnet_builder.data.digits import digits_bundle
from resnet_builder.data.folder import folder_bundle
from resnet_builder.data.npz import npz_bundle
from resnet_builder.data.synthetic import synthetic_bundle
from resnet_builder.data.tfrecord import tfrecord_bundle
from resnet_builder.errors import UserError

log = logging.getLogger(__name__)

_SOURCES = {"digits": digits_bundle, "cifar10": cifar_bundle, "cifar100": cifar_bundle,
            "folder": folder_bundle, "npz": npz_bundle, "synthetic": synthetic_bundle,
            "tfrecord": tfrecord_bundle}


def load_data(data: DataConfig, augment: AugmentConfig | None = None,
              seed: int | None = 0) -> DataBundle:
    """Read ``data.source`` into a bundle; ``seed=None`` draws a fresh seed for this run."""
    seed = _resolve_seed(seed)
    if data.source not in _SOURCES:
        raise UserError(f"unknown data.source {data.source!r}",
                        hint=f"use one of: {', '.join(_SOURCES)}")
    bundle = _SOURCES[data.source](data, seed)  # folder's warning stacklevel counts this frame
    bundle._augment = augment or AugmentConfig()
    bundle._seed = seed
    log.info("data %s: %d train / %d val images, %d classes, %dx%dx%d", data.source,
             bundle.num_train, bundle.num_val, bundle.num_classes, bundle.image_size,
             bundle.image_size, bundle.channels)
    return bundle


def _resolve_seed(seed: int | None) -> int:
    """A non-negative seed; None becomes a random one (fixed for this bundle)."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**31)
    return int(seed) % 2**31
