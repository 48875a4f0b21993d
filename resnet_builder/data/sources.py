"""What the sources share: finding ``data.path`` and turning uint8 arrays into a bundle.

Array sources (digits, CIFAR, .npz, synthetic) all end in ``bundle_from_arrays``:
split (when the source has no validation set), limit, resize, measure. Images are
resized up front when they fit in ``CACHE_BUDGET_BYTES`` (or are already the right
size), else one by one as the pipeline asks for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle, Split, fits_in_cache
from resnet_builder.data.pack_format import is_url
from resnet_builder.data.resizing import Resize, fit_array, resize_rule
from resnet_builder.data.splits import apply_limit, split_stats, stratified_split
from resnet_builder.errors import UserError


def required_path(data: DataConfig, what: str) -> Path:
    """``data.path``, which must be set and exist."""
    if not data.path:
        raise UserError(f"data.source {data.source!r} needs data.path",
                        hint=f"set data.path to {what}")
    path = Path(data.path).expanduser()
    if not path.exists():
        raise UserError(f"data.path not found: {path}", hint=f"set data.path to {what}")
    return path


def check_run_data_path(data: Any, where: str | os.PathLike, fix: str) -> None:
    """A run's ``data.path`` is kept as typed, relative to the folder ``train`` ran in: from
    another folder "data.path not found: held" did not say why. ``fix``: how the command
    that reads the run (evaluate, export, a resume) takes another path."""
    path = getattr(data, "path", None)
    if (path and not is_url(str(path)) and not Path(path).expanduser().is_absolute()
            and not Path(path).exists()):
        raise UserError(f"data.path {path} in {where} is relative to the folder the run was "
                        f"trained from, and is not found from here ({os.getcwd()})", hint=fix)


def bundle_from_arrays(data: DataConfig, seed: int, class_names: list[str],
                       train: tuple[np.ndarray, np.ndarray],
                       val: tuple[np.ndarray, np.ndarray] | None) -> DataBundle:
    """Split (if no val), limit, resize and measure uint8 ``N x H x W x C`` arrays."""
    x_train, y_train = train
    num_classes = len(class_names)
    if val is None:
        train_idx, val_idx = stratified_split(y_train, data.validation_split, num_classes, seed)
        val = (x_train[val_idx], y_train[val_idx])
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    keep = apply_limit(y_train, data.limit, num_classes, seed)
    if len(keep) < len(y_train):  # no copy without a limit: CIFAR-10's took 0.37 s, 150 MB
        x_train, y_train = x_train[keep], y_train[keep]
    cache = fits_in_cache(len(x_train) + len(val[0]), data)
    how = resize_rule(data)
    train_split = array_split(x_train, y_train, how, cache)
    val_split = array_split(val[0], val[1], how, cache)
    mean, std = split_stats(train_split, data.channels)
    return DataBundle(class_names=class_names, num_train=len(train_split),
                      num_val=len(val_split), image_size=data.image_size,
                      channels=data.channels, mean=mean, std=std,
                      _train=train_split, _val=val_split if len(val_split) else None)


def array_split(images: np.ndarray, labels: np.ndarray, how: Resize, cache: bool) -> Split:
    """Resize now when caching (or when already the right size), else per element."""
    labels = labels.astype(np.int32)
    if images.shape[1:3] == (how.size, how.size):
        return Split(labels, ready=np.ascontiguousarray(images))
    if cache:
        return Split(labels, ready=fit_array(images, how))
    return Split(labels, raw=images)
