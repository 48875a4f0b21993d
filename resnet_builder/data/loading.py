"""``load_data``: the one entry point that turns ``data.source`` into a ``DataBundle``."""

from __future__ import annotations

import logging

import numpy as np

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data.bundle import DataBundle
from resnet_builder.data.cifar import cifar_bundle
from resnet_builder.data.csv_source import csv_bundle
from resnet_builder.data.digits import digits_bundle
from resnet_builder.data.folder import folder_bundle
from resnet_builder.data.npz import npz_bundle
from resnet_builder.data.resizing import resize_rule
from resnet_builder.data.synthetic import synthetic_bundle
from resnet_builder.data.tfrecord import tfrecord_bundle
from resnet_builder.errors import UserError

log = logging.getLogger(__name__)

_SOURCES = {"digits": digits_bundle, "cifar10": cifar_bundle, "cifar100": cifar_bundle,
            "folder": folder_bundle, "npz": npz_bundle, "synthetic": synthetic_bundle,
            "tfrecord": tfrecord_bundle, "csv": csv_bundle}


def load_data(data: DataConfig, augment: AugmentConfig | None = None,
              seed: int | None = 0, task: str = "multiclass") -> DataBundle:
    """Read ``data.source`` into a bundle; ``seed=None`` draws a fresh seed for this run.

    ``task`` (model.task): how the csv source reads its labels (multilabel: multi-hot rows);
    every other source has one label per image and refuses multilabel.
    """
    seed = _resolve_seed(seed)
    if data.source not in _SOURCES:
        raise UserError(f"unknown data.source {data.source!r}",
                        hint=f"use one of: {', '.join(_SOURCES)}")
    if data.source == "csv":
        bundle = csv_bundle(data, seed, task)
    elif task != "multiclass":
        raise UserError(f"model.task {task} needs data.source csv, got {data.source}",
                        hint="list the images and their labels in a CSV", exit_code=2)
    else:  # folder's warning stacklevel counts this frame
        bundle = _SOURCES[data.source](data, seed)
    bundle._augment = augment or AugmentConfig()
    bundle._seed = seed
    bundle._resize = resize_rule(data)
    bundle.use_balance(data.sampler, data.class_weight)
    log.info("data %s: %d train / %d val images, %d classes, %dx%dx%d", data.source,
             bundle.num_train, bundle.num_val, bundle.num_classes, bundle.image_size,
             bundle.image_size, bundle.channels)
    return bundle


def _resolve_seed(seed: int | None) -> int:
    """A seed in [0, 2**31) (hardware.seed and pack --seed allow no more, so no two seeds
    give the same split); None becomes a random one (fixed for this bundle)."""
    if seed is not None and not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    return draw_seed() if seed is None else int(seed)


def draw_seed() -> int:
    """A fresh non-negative seed from the OS's entropy (``hardware.seed: null``)."""
    return int(np.random.SeedSequence().entropy % 2**31)
