"""Every data source (digits, CIFAR, image folders, .npz, synthetic) becomes one ``DataBundle``.

A bundle holds the prepared training and validation splits (uint8, ``image_size``
square, ``channels`` deep) and hands out ``tf.data`` pipelines per epoch. Images stay
on the raw 0..255 scale: the model carries a Normalization layer built from
``mean``/``std`` (train split only, before augmentation), so a saved model
preprocesses itself.

Reproducibility: the epoch order is a full permutation drawn from ``(seed, epoch)``
(indices are shuffled, not images, so no shuffle buffer is needed) and every
augmentation is a stateless op seeded from ``(seed, epoch, image index)``, so epoch k
yields the same batches whether or not training was resumed.

Memory: prepared images are kept in memory when ``data.cache`` is on and both splits
fit in ``CACHE_BUDGET_BYTES``; otherwise each image is resized (arrays) or decoded
(files) on demand in a parallel ``tf.data`` map.

Bad files (``folder`` source): every file is decoded once up front; unreadable ones
are left out, listed in ``DataBundle.skipped`` and reported in one
``SkippedFilesWarning``. Only layout mistakes (no classes, an empty class, ...) stop.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data.cifar import load_cifar
from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import (
    ImageError,
    composite_on_white,
    prepare_image,
    resize_image,
    to_channels,
)
from resnet_builder.errors import UserError

log = logging.getLogger(__name__)

CACHE_BUDGET_BYTES = 2_000_000_000  # decoded images kept in memory up to this (and < 2 GiB)

# Independent random streams derived from the one seed.
_SPLIT, _LIMIT, _SYNTH, _SAMPLE, _ORDER = range(1, 6)


class SkippedFilesWarning(UserWarning):
    """Some files in an image folder were left out (listed with reasons)."""


# ----------------------------------------------------------------------------- bundle


@dataclass
class _Split:
    """One split's labels and its images: prepared in memory (``ready``) or per index."""

    labels: np.ndarray  # int32 [N]
    ready: np.ndarray | None = None  # uint8 [N, S, S, C]
    prepare: Callable[[int], np.ndarray] | None = None  # index -> uint8 [S, S, C]

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """One prepared uint8 image."""
        if self.ready is not None:
            return self.ready[index]
        assert self.prepare is not None
        return self.prepare(index)


@dataclass(eq=False)
class DataBundle:
    """Prepared splits plus what the model needs to know about them."""

    class_names: list[str]
    num_train: int
    num_val: int
    image_size: int
    channels: int
    mean: list[float]  # per channel, 0..255 scale, train split only, before augmentation
    std: list[float]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    _train: _Split | None = field(default=None, repr=False)
    _val: _Split | None = field(default=None, repr=False)
    _augment: AugmentConfig = field(default_factory=AugmentConfig, repr=False)
    _seed: int = field(default=0, repr=False)
    _tensors: dict[str, tf.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_dataset(self, epoch: int, batch_size: int) -> tf.data.Dataset:
        """One shuffled, augmented epoch of (float32 [B,H,W,C] 0..255, int32 [B]) batches.

        Images are augmented a whole batch at a time (a few vectorised ops per
        batch instead of per image), seeded by (seed, epoch, batch number).
        """
        if epoch < 0 or batch_size < 1:
            raise ValueError(f"need epoch >= 0 and batch_size >= 1, got {epoch}, {batch_size}")
        assert self._train is not None
        order = _rng(self._seed, _ORDER, epoch).permutation(self.num_train)
        dataset = self._batches(self._train, "train", order.astype(np.int64), batch_size)
        augment = _augmenter(self._augment, self.image_size, self.mean, self._seed, epoch)
        if augment is not None:
            dataset = dataset.enumerate().map(
                lambda i, batch: (augment(batch[0], i), batch[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def val_dataset(self, batch_size: int) -> tf.data.Dataset | None:
        """Validation batches in a fixed order, not augmented; None without a validation split."""
        if self._val is None or self.num_val == 0:
            return None
        order = np.arange(self.num_val, dtype=np.int64)
        return self._batches(self._val, "val", order, batch_size).prefetch(tf.data.AUTOTUNE)

    def _batches(self, split: _Split, name: str, order: np.ndarray,
                 batch_size: int) -> tf.data.Dataset:
        """Batches of (float32 images, int32 labels) in ``order``.

        In-memory images are gathered a batch at a time; others are decoded
        one by one in parallel and then batched.
        """
        lookup = self._lookup(name, split)
        dataset = tf.data.Dataset.from_tensor_slices(order)
        if split.ready is not None:
            dataset = dataset.batch(batch_size).map(lookup)
        else:
            dataset = dataset.map(lookup, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        return dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels))

    def sample_images(self, n: int = 200) -> np.ndarray:
        """Up to ``n`` prepared training images (uint8, not augmented), e.g. for int8 calibration.

        The choice is seeded, so an export repeats exactly.
        """
        assert self._train is not None
        n = min(n, self.num_train)
        picks = np.sort(_rng(self._seed, _SAMPLE).choice(self.num_train, n, replace=False))
        shape = (0, self.image_size, self.image_size, self.channels)
        if n == 0:
            return np.zeros(shape, np.uint8)
        return np.stack([self._train.image(int(i)) for i in picks])

    def _lookup(self, name: str, split: _Split) -> Callable[[tf.Tensor], tuple]:
        """Graph function index -> (uint8 image, int32 label), from memory or decoded on demand."""
        labels = tf.constant(split.labels, tf.int32)
        shape = (self.image_size, self.image_size, self.channels)
        if split.ready is not None:
            if name not in self._tensors:  # convert once; every epoch's pipeline reuses it
                self._tensors[name] = tf.constant(split.ready)
            images = self._tensors[name]

            def from_memory(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return tf.gather(images, index), tf.gather(labels, index)

            return from_memory
        prepare = split.prepare
        assert prepare is not None

        def prepare_one(index: np.ndarray) -> np.ndarray:
            return prepare(int(index))

        def on_demand(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.numpy_function(prepare_one, [index], tf.uint8, stateful=False)
            image.set_shape(shape)
            return image, tf.gather(labels, index)

        return on_demand


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for one purpose (split, order of epoch k, ...) of one seed."""
    return np.random.default_rng([seed, *stream])


# ----------------------------------------------------------------------- augmentation


def _augmenter(cfg: AugmentConfig, size: int, mean: list[float], seed: int,
               epoch: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None:
    """(images float32 [B,H,W,C], batch number) -> augmented batch, or None when off.

    Padding is filled with the training mean colour, which is zero after the model's
    normalization, as in He et al. (they padded mean-subtracted images with zeros).
    """
    if not (cfg.random_crop_padding or cfg.horizontal_flip or cfg.random_scale):
        return None
    fill = tf.constant(mean, tf.float32)
    epoch_key = tf.constant([seed, epoch], tf.int64)

    def apply(images: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        key = tf.random.experimental.stateless_fold_in(epoch_key, batch)
        seeds = tf.random.experimental.stateless_split(key, 3)
        count = tf.shape(images)[0]
        images = images - fill
        if cfg.random_scale:
            images = _random_zoom(images, seeds[0], cfg.random_scale, size)
        if cfg.random_crop_padding:
            images = _random_shift(images, seeds[1], cfg.random_crop_padding, size)
        if cfg.horizontal_flip:
            flip = tf.random.stateless_uniform([count], seeds[2]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
        return tf.ensure_shape(images + fill, (None, size, size, len(mean)))

    return apply


def _random_zoom(images: tf.Tensor, seed: tf.Tensor, amount: float, size: int) -> tf.Tensor:
    """Scale each image by a factor in [1 - amount, 1 + amount] about a random centre.

    Works on mean-subtracted images: what zooming out uncovers is filled with 0.
    """
    count = tf.shape(images)[0]
    scale_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    scale = tf.random.stateless_uniform([count], scale_seed, 1.0 - amount, 1.0 + amount)
    half = 0.5 / scale  # half the crop box side, as a fraction of the image
    room = tf.abs(0.5 - half)
    centre = 0.5 + tf.random.stateless_uniform([count, 2], centre_seed, -1.0, 1.0) * room[:, None]
    boxes = tf.stack([centre[:, 0] - half, centre[:, 1] - half,
                      centre[:, 0] + half, centre[:, 1] + half], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(count), (size, size),
                                    extrapolation_value=0.0)


def _random_shift(images: tf.Tensor, seed: tf.Tensor, pad: int, size: int) -> tf.Tensor:
    """Pad by ``pad`` pixels (zeros) and crop ``size`` back at a random offset per image."""
    count = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([count, 2], seed, 0, 2 * pad + 1, dtype=tf.int32)
    window = tf.range(size)
    rows = offsets[:, :1] + window[None, :]
    cols = offsets[:, 1:] + window[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)


# ------------------------------------------------------------------------ load_data


def load_data(data: DataConfig, augment: AugmentConfig | None = None,
              seed: int | None = 0) -> DataBundle:
    """Read ``data.source`` into a bundle; ``seed=None`` draws a fresh seed for this run."""
    seed = _resolve_seed(seed)
    loaders = {"digits": _load_digits, "cifar10": _load_cifar, "cifar100": _load_cifar,
               "folder": _load_folder, "npz": _load_npz, "synthetic": _load_synthetic}
    if data.source not in loaders:
        raise UserError(f"unknown data.source {data.source!r}",
                        hint=f"use one of: {', '.join(loaders)}")
    bundle = loaders[data.source](data, seed)
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


def _fits_in_cache(count: int, data: DataConfig) -> bool:
    """Whether ``count`` prepared images may be kept decoded in memory."""
    size = count * data.image_size**2 * data.channels
    return data.cache and size <= CACHE_BUDGET_BYTES


class _Stats:
    """Running per-channel mean and std on the 0..255 scale."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.count = 0

    def add(self, pixels: np.ndarray) -> None:
        flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        self.total += flat.sum(axis=0)
        self.squares += np.square(flat).sum(axis=0)
        self.count += len(flat)

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std); std is floored at 1 so a flat channel cannot blow up normalization."""
        mean = self.total / max(self.count, 1)
        var = np.maximum(self.squares / max(self.count, 1) - mean**2, 0.0)
        return [float(m) for m in mean], [float(max(s, 1.0)) for s in np.sqrt(var)]


# --------------------------------------------------------------- splits and subsets


def _allocate(counts: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
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


def _pick_per_class(labels: np.ndarray, take: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: ``take[k]`` random members of each class k."""
    picked = [rng.permutation(np.flatnonzero(labels == k))[:n] for k, n in enumerate(take)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _stratified_split(labels: np.ndarray, fraction: float, num_classes: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices; val is ceil(fraction * N) images, each class keeps >= 1 for train."""
    if fraction <= 0 or len(labels) == 0:
        return np.arange(len(labels)), np.zeros(0, np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    wanted = math.ceil(round(fraction * len(labels), 9))
    take = _allocate(counts, wanted, np.maximum(counts - 1, 0))
    val = _pick_per_class(labels, take, _rng(seed, _SPLIT))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _limit(labels: np.ndarray, limit: int | None, num_classes: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` training images, drawn per class in proportion."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    return _pick_per_class(labels, _allocate(counts, limit, counts), _rng(seed, _LIMIT))


# ------------------------------------------------------------------ in-memory arrays


def _bundle_from_arrays(data: DataConfig, seed: int, class_names: list[str],
                        train: tuple[np.ndarray, np.ndarray],
                        val: tuple[np.ndarray, np.ndarray] | None) -> DataBundle:
    """Split (if no val), limit, resize and measure uint8 ``N x H x W x C`` arrays."""
    x_train, y_train = train
    num_classes = len(class_names)
    if val is None:
        train_idx, val_idx = _stratified_split(y_train, data.validation_split, num_classes, seed)
        val = (x_train[val_idx], y_train[val_idx])
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    keep = _limit(y_train, data.limit, num_classes, seed)
    x_train, y_train = x_train[keep], y_train[keep]
    cache = _fits_in_cache(len(x_train) + len(val[0]), data)
    train_split = _array_split(x_train, y_train, data.image_size, cache)
    val_split = _array_split(val[0], val[1], data.image_size, cache)
    mean, std = _split_stats(train_split, data.channels)
    return DataBundle(class_names=class_names, num_train=len(train_split),
                      num_val=len(val_split), image_size=data.image_size,
                      channels=data.channels, mean=mean, std=std,
                      _train=train_split, _val=val_split if len(val_split) else None)


def _array_split(images: np.ndarray, labels: np.ndarray, size: int, cache: bool) -> _Split:
    """Resize now when caching (or when already the right size), else per element."""
    labels = labels.astype(np.int32)
    if images.shape[1:3] == (size, size):
        return _Split(labels, ready=np.ascontiguousarray(images))
    if cache:
        ready = np.zeros((len(images), size, size, images.shape[-1]), np.uint8)
        for i, image in enumerate(images):
            ready[i] = resize_image(image, size)
        return _Split(labels, ready=ready)
    return _Split(labels, prepare=lambda i: resize_image(images[i], size))


def _split_stats(split: _Split, channels: int, chunk: int = 1024) -> tuple[list, list]:
    """Mean/std of a prepared split, in chunks so no float copy of the whole set is made."""
    stats = _Stats(channels)
    if split.ready is not None:
        for start in range(0, len(split), chunk):
            stats.add(split.ready[start:start + chunk])
    else:
        for i in range(len(split)):
            stats.add(split.image(i))
    return stats.result()


def _load_cifar(data: DataConfig, seed: int) -> DataBundle:
    """CIFAR-10/100 (data.path, the Keras cache, or a checked download); val = the test batch."""
    names, train, test = load_cifar(data.source, data.path)
    train = (to_channels(train[0], data.channels), train[1])
    test = (to_channels(test[0], data.channels), test[1])
    return _bundle_from_arrays(data, seed, names, train, test)


def _load_digits(data: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (values 0..16), scaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    images = to_channels(pixels, data.channels)
    labels = digits.target.astype(np.int32)
    names = [str(k) for k in range(10)]
    return _bundle_from_arrays(data, seed, names, (images, labels), None)


def _load_synthetic(data: DataConfig, seed: int) -> DataBundle:
    """Seeded random images a tiny model can learn: class colour + class stripes + noise."""
    rng = _rng(seed, _SYNTH)
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
    return _bundle_from_arrays(data, seed, names, (images, labels), None)


# ------------------------------------------------------------------------------ npz


def _load_npz(data: DataConfig, seed: int) -> DataBundle:
    """x_train/y_train (+ optional x_val/y_val, class_names) from an .npz, no pickles allowed."""
    path = _required_path(data, "an .npz file with x_train and y_train")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"cannot read {path} as .npz: {exc}",
                        hint="save it with numpy.savez(path, x_train=..., y_train=...)") from None
    missing = [name for name in ("x_train", "y_train") if name not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (has: "
                        f"{', '.join(sorted(arrays)) or 'nothing'})",
                        hint="the .npz needs x_train and y_train; x_val and y_val go together")
    x_train = _npz_images(arrays["x_train"], "x_train", data.channels)
    y_train = _npz_labels(arrays["y_train"], "y_train", len(x_train))
    val = None
    if "x_val" in arrays:
        x_val = _npz_images(arrays["x_val"], "x_val", data.channels)
        val = (x_val, _npz_labels(arrays["y_val"], "y_val", len(x_val)))
    names = _npz_class_names(arrays, y_train, val[1] if val else None)
    return _bundle_from_arrays(data, seed, names, (x_train, y_train), val)


def _npz_images(x: np.ndarray, name: str, channels: int) -> np.ndarray:
    """``N x H x W`` or ``N x H x W x C`` (C = 1, 3, 4), uint8 or float 0..1/0..255, to uint8."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise UserError(f"{name} has shape {x.shape}; expected N x H x W or N x H x W x C "
                        "with C = 1, 3 or 4 and N > 0")
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise UserError(f"{name} contains NaN or infinite values")
        scale = 255.0 if x.max() <= 1.0 else 1.0
        x = np.clip(np.round(x * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise UserError(f"{name} has values outside 0..255 ({x.min()}..{x.max()})",
                            hint="store uint8 0..255 or float 0..1")
        x = x.astype(np.uint8)
    else:
        raise UserError(f"{name} has dtype {x.dtype}; expected uint8 or float")
    if x.shape[-1] == 4:
        x = composite_on_white(x)
    return to_channels(x, channels)


def _npz_labels(y: np.ndarray, name: str, count: int) -> np.ndarray:
    """Integer class ids, shape N or N x 1."""
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != count:
        raise UserError(f"{name} has shape {y.shape}; expected {count} labels (one per image)")
    if not (np.issubdtype(y.dtype, np.integer) or
            (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise UserError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.min() < 0:
        raise UserError(f"{name} has negative class ids")
    return y.astype(np.int32)


def _npz_class_names(arrays: dict[str, np.ndarray], y_train: np.ndarray,
                     y_val: np.ndarray | None) -> list[str]:
    """``class_names`` from the file, else "0".."K-1" from the largest label."""
    top = int(max(y_train.max(), y_val.max() if y_val is not None and len(y_val) else 0))
    if "class_names" in arrays:
        names = [str(n) for n in arrays["class_names"].reshape(-1)]
        if top >= len(names):
            raise UserError(f"labels go up to {top} but class_names has {len(names)} entries")
    else:
        names = [str(k) for k in range(top + 1)]
    if len(names) < 2:
        raise UserError("the .npz has a single class; a classifier needs at least two")
    return names


def _required_path(data: DataConfig, what: str) -> Path:
    """``data.path``, which must be set and exist."""
    if not data.path:
        raise UserError(f"data.source {data.source!r} needs data.path",
                        hint=f"set data.path to {what}")
    path = Path(data.path).expanduser()
    if not path.exists():
        raise UserError(f"data.path not found: {path}", hint=f"set data.path to {what}")
    return path


# --------------------------------------------------------------------------- folder

_VAL_DIRS = ("val", "valid", "validation")
_LAYOUT_HINT = ("use <path>/<class>/<images> (split by data.validation_split) or "
                "<path>/train/<class>/ with <path>/val/<class>/")


def _load_folder(data: DataConfig, seed: int) -> DataBundle:
    """One sub-folder per class; bad files are skipped with a warning, never fatal."""
    train_dir, val_dir = _folder_layout(_required_path(data, "a folder of class folders"))
    train_files, skipped = _scan_classes(train_dir)
    class_names = sorted(train_files)
    index = {name: k for k, name in enumerate(class_names)}
    train_paths, train_labels = _flatten(train_files, index)
    if val_dir is not None:
        val_files, val_skipped = _scan_classes(val_dir)
        skipped += val_skipped
        _same_classes(train_dir, class_names, val_dir, sorted(val_files))
        val_paths, val_labels = _flatten(val_files, index)
    else:
        tr, va = _stratified_split(train_labels, data.validation_split, len(class_names), seed)
        val_paths, val_labels = [train_paths[i] for i in va], train_labels[va]
        train_paths, train_labels = [train_paths[i] for i in tr], train_labels[tr]
    keep = _limit(train_labels, data.limit, len(class_names), seed)
    train_paths, train_labels = [train_paths[i] for i in keep], train_labels[keep]

    cache = _fits_in_cache(len(train_paths) + len(val_paths), data)
    stats = _Stats(data.channels)
    train, bad = _check_files(train_paths, train_labels, data, cache, stats)
    val, val_bad = _check_files(val_paths, val_labels, data, cache, None)
    skipped += bad + val_bad
    _warn_skipped(skipped)
    _every_class_readable(train_dir, class_names, train_labels, train.labels)
    mean, std = stats.result()
    return DataBundle(class_names=class_names, num_train=len(train), num_val=len(val),
                      image_size=data.image_size, channels=data.channels, mean=mean, std=std,
                      skipped=skipped, _train=train, _val=val if len(val) else None)


def _folder_layout(root: Path) -> tuple[Path, Path | None]:
    """(train folder, val folder or None): ``train/`` + ``val|valid|validation/``, or one folder."""
    if not root.is_dir():
        raise UserError(f"data.path is not a folder: {root}", hint=_LAYOUT_HINT)
    vals = [root / name for name in _VAL_DIRS if (root / name).is_dir()]
    if (root / "train").is_dir():
        if len(vals) > 1:
            raise UserError(f"{root} has several validation folders: "
                            f"{', '.join(v.name + '/' for v in vals)}", hint="keep only one")
        return root / "train", vals[0] if vals else None
    if vals:
        raise UserError(f"{root} has {vals[0].name}/ but no train/",
                        hint="put the training class folders in train/, " + _LAYOUT_HINT)
    return root, None


def _scan_classes(split_dir: Path) -> tuple[dict[str, list[Path]], list[tuple[str, str]]]:
    """Image files per class folder, plus files left out because of their name or place."""
    found = scan_class_folders(split_dir)
    for name, images in found.classes.items():
        if not images:
            raise UserError(f"class folder {split_dir / name} has no images",
                            hint="add images (jpg, png, bmp, gif) or remove the folder")
    if not found.classes:
        raise UserError(f"no class folders in {split_dir}", hint=_LAYOUT_HINT)
    if len(found.classes) == 1:
        raise UserError(f"only one class folder in {split_dir} ({found.names[0]}/); "
                        "a classifier needs at least two", hint=_LAYOUT_HINT)
    return found.classes, [(str(path), reason) for path, reason in found.skipped]


def _same_classes(train_dir: Path, train: list[str], val_dir: Path, val: list[str]) -> None:
    """Classes are matched by name, so both splits must name the same ones."""
    if train == val:
        return
    parts = []
    if missing := sorted(set(train) - set(val)):
        parts.append(f"missing in {val_dir.name}/: {', '.join(missing)}")
    if extra := sorted(set(val) - set(train)):
        parts.append(f"only in {val_dir.name}/: {', '.join(extra)}")
    raise UserError(f"class folders differ between {train_dir} and {val_dir} ({'; '.join(parts)})",
                    hint=f"use the same class folder names in both, or remove {val_dir.name}/ "
                    "to split train/ by data.validation_split")


def _flatten(files: dict[str, list[Path]], index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    """(paths, labels) with labels looked up by class name."""
    paths = [p for name in sorted(files) for p in files[name]]
    labels = [index[name] for name in sorted(files) for _ in files[name]]
    return paths, np.array(labels, np.int32)


def _check_files(paths: list[Path], labels: np.ndarray, data: DataConfig, cache: bool,
                 stats: _Stats | None) -> tuple[_Split, list[tuple[str, str]]]:
    """Decode every file once (in threads): bad ones are listed, good ones cached or indexed."""
    size, channels = data.image_size, data.channels

    def attempt(path: Path) -> np.ndarray | ImageError:
        try:
            return prepare_image(path, size, channels)
        except ImageError as exc:
            return exc

    good: list[Path] = []
    good_labels: list[int] = []
    kept: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    workers = min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for path, label, result in zip(paths, labels, pool.map(attempt, paths), strict=True):
            if isinstance(result, ImageError):
                skipped.append((str(path), result.reason))
                continue
            good.append(path)
            good_labels.append(int(label))
            if stats is not None:
                stats.add(result)
            if cache:
                kept.append(result)
    split_labels = np.array(good_labels, np.int32)
    if cache:
        shape = (0, size, size, channels)
        ready = np.stack(kept) if kept else np.zeros(shape, np.uint8)
        return _Split(split_labels, ready=ready), skipped
    return _Split(split_labels, prepare=lambda i: prepare_image(good[i], size, channels)), skipped


def _warn_skipped(skipped: list[tuple[str, str]], shown: int = 50) -> None:
    """One warning listing each left-out file and why (all of them are in bundle.skipped)."""
    if not skipped:
        return
    lines = [f"  {path}: {reason}" for path, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    message = f"skipped {len(skipped)} file(s) that are not usable images:\n" + "\n".join(lines)
    warnings.warn(message, SkippedFilesWarning, stacklevel=4)


def _every_class_readable(train_dir: Path, names: list[str], wanted: np.ndarray,
                          got: np.ndarray) -> None:
    """A class whose every (selected) training file was bad cannot be learned: say which."""
    empty = [names[k] for k in np.unique(wanted) if not np.any(got == k)]
    if empty:
        raise UserError(f"no readable training images for class(es) {', '.join(empty)} in "
                        f"{train_dir}", hint="see the skipped files listed above")
