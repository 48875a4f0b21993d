"""The ``folder`` source: one sub-folder of images per class, optionally train/ and val/.

Files are only listed (``data.folders.scan_class_folders``, the scanner every command
uses) and decoded as each epoch asks, in ``tf.data`` with TensorFlow's kernels
(``data.decode``): no pass over the images before training. A file that fails to decode
then comes out as label -1 and is named by ``DataBundle.take_skipped``; layout mistakes
(no classes, an empty class, ...) still stop at once, and files left out by name or place
are listed in one ``SkippedFilesWarning``.

``data.verify: true`` decodes every file once up front instead: unreadable ones are left
out, listed in ``DataBundle.skipped`` and in the warning, as before streaming existed.
Decoded images are kept (``data.stream.ImageStore``) in memory with ``data.cache: true``
when both splits fit ``CACHE_BUDGET_BYTES``, in a file with ``data.cache: disk``.

Mean/std: over the whole training split when it is decoded up front (verify), else
over a seeded sample of up to ``STATS_SAMPLE`` training images (all of them when there
are fewer), decoded at most ``splits.STATS_SIZE`` pixels square, as ``pack`` does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from resnet_builder.config import DataConfig
from resnet_builder.data.batch_decode import decode_or_skip
from resnet_builder.data.bundle import (
    STATS_STREAM,
    DataBundle,
    Split,
    decoded_images,
    fits_in_cache,
    seeded_rng,
)
from resnet_builder.data.decode import (
    SKIPPED_LABEL,
    SkipLog,
    native_decode_and_resize,
    without_autotune,
)
from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import IMAGE_KINDS
from resnet_builder.data.resizing import Resize, resize_rule
from resnet_builder.data.sources import required_path
from resnet_builder.data.splits import STATS_SIZE, ChannelStats, apply_limit, stratified_split
from resnet_builder.data.stream import ImageStore, disk_store_path, file_images
from resnet_builder.errors import UserError
from resnet_builder.runs import skipped_lines

STATS_SAMPLE = 500  # streamed training images decoded once for mean/std (time to first batch)
_VAL_DIRS = ("val", "valid", "validation")
# folder names that say "a split", not "a class": never trained on as classes
_SPLIT_LIKE = ("train", "training", *_VAL_DIRS, "test", "testing")
_LAYOUT_HINT = ("use <path>/<class>/<images> (split by data.validation_split) or "
                "<path>/train/<class>/ with <path>/val/<class>/")


class SkippedFilesWarning(UserWarning):
    """Some files in an image folder were left out (listed with reasons)."""


@dataclass
class _Listing:
    """The files of both splits (after split and limit) and what was left out by name."""

    train_dir: Path
    class_names: list[str]
    train: tuple[list[str], np.ndarray]
    val: tuple[list[str], np.ndarray]
    skipped: list[tuple[str, str]]
    val_skipped: list[tuple[str, str]]  # of skipped: the files of a val/ folder


def folder_bundle(data: DataConfig, seed: int) -> DataBundle:
    """One sub-folder per class; bad files are skipped (and named), never fatal."""
    found = list_files(data, seed)
    cache = data.cache is True and fits_in_cache(len(found.train[0]) + len(found.val[0]), data)
    root = str(Path(data.path or "").expanduser().resolve())
    skipped = found.skipped
    if data.verify:
        stats = ChannelStats(data.channels)
        train, bad = _check_files(*found.train, data, cache, stats)
        val, val_bad = _check_files(*found.val, data, cache, None)
        skipped = skipped + bad + val_bad
        _warn_skipped(skipped)
        _every_class_readable(found.train_dir, found.class_names, found.train[1], train.labels)
        mean, std = stats.result()
        if not cache:  # stream the good files (with the disk cache if asked)
            train = streamed_split(train.files or [], train.labels, data, False, root)
            val = streamed_split(val.files or [], val.labels, data, False, root)
    else:
        _warn_skipped(skipped)
        train = streamed_split(*found.train, data, cache, root)
        val = streamed_split(*found.val, data, cache, root)
        mean, std = sample_stats(train, data, seed)
    val_skipped = found.val_skipped + (val_bad if data.verify else [])
    return DataBundle(class_names=found.class_names, num_train=len(train), num_val=len(val),
                      image_size=data.image_size, channels=data.channels, mean=mean, std=std,
                      skipped=skipped, val_skipped=val_skipped, _train=train,
                      _val=val if len(val) else None)


def list_files(data: DataConfig, seed: int) -> _Listing:
    """Scan the class folders, split (when there is no val/) and apply data.limit."""
    train_dir, val_dir = folder_layout(required_path(data, "a folder of class folders"))
    train_files, skipped = _scan_classes(train_dir)
    class_names = sorted(train_files)
    index = {name: k for k, name in enumerate(class_names)}
    train_paths, train_labels = _flatten(train_files, index)
    val_skipped: list[tuple[str, str]] = []
    if val_dir is not None:
        val_files, val_skipped = _scan_classes(val_dir)
        skipped += val_skipped
        _same_classes(train_dir, class_names, val_dir, sorted(val_files))
        val_paths, val_labels = _flatten(val_files, index)
    else:
        tr, va = stratified_split(train_labels, data.validation_split, len(class_names), seed)
        val_paths, val_labels = [train_paths[i] for i in va], train_labels[va]
        train_paths, train_labels = [train_paths[i] for i in tr], train_labels[tr]
    keep = apply_limit(train_labels, data.limit, len(class_names), seed)
    train_paths, train_labels = [train_paths[i] for i in keep], train_labels[keep]
    return _Listing(train_dir, class_names, ([str(p) for p in train_paths], train_labels),
                    ([str(p) for p in val_paths], val_labels), skipped, val_skipped)


def streamed_split(files: list[str], labels: np.ndarray, data: DataConfig, cache: bool,
                   root: str) -> Split:
    """A split decoded as the epochs ask; decoded images kept per ``data.cache``."""
    shape = (data.image_size, data.image_size, data.channels)
    store = None
    if data.cache == "disk" and files:
        path = disk_store_path(root, files, resize_rule(data), data.channels)
        store = ImageStore(len(files), shape, path)
    elif cache:
        store = ImageStore(len(files), shape)
    return Split(labels, files=files, store=store)


def sample_stats(split: Split, data: DataConfig, seed: int) -> tuple[list, list]:
    """Mean/std over a seeded sample of up to ``STATS_SAMPLE`` streamed training images."""
    count = len(split)
    picks = np.arange(count)
    if count > STATS_SAMPLE:
        picks = np.sort(seeded_rng(seed, STATS_STREAM).choice(count, STATS_SAMPLE, replace=False))
    assert split.files is not None
    rule = resize_rule(data)
    how = Resize(min(rule.size, STATS_SIZE), rule.mode, rule.crop_pct)
    images, left = natively_decoded(split.files, picks, how, data.channels)
    stats = ChannelStats(data.channels)
    for start in range(0, len(images), 1024):
        stats.add(images[start:start + 1024])
    if len(left):  # Pillow's files and broken ones: the failure-safe decoder
        lookup = file_images(split.files, split.labels, how, data.channels, SkipLog(), None)
        stats.add(decoded_images(lookup, left, (0, how.size, how.size, data.channels)))
    return stats.result()


def natively_decoded(files: list[str], picks: np.ndarray, how: Resize, channels: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(images of the ``picks`` TensorFlow's kernels decode, the picks left for Pillow).

    One flat parallel map with ``decode.native_decode_and_resize``, the batch decoder's own
    fast path (the same pixels), its failures dropped. The sample went through the batch
    decoder before: ~1.06 s of a 20,000-file folder's time to its first step, nearly all of
    it the start of that pipeline (tracing, the first call, not the decoding); this way
    ~0.5 s (bench/first_step.py). Channel sums are exact, so the order images come in is moot.
    """
    @tf.autograph.experimental.do_not_convert
    def native(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return index, native_decode_and_resize(tf.io.read_file(path), how, channels)

    if not len(picks):
        return np.zeros((0, how.size, how.size, channels), np.uint8), picks
    picked = [files[i] for i in picks]
    dataset = (tf.data.Dataset.from_tensor_slices((picks.astype(np.int64), picked))
               .map(native, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors(log_warning=False).batch(max(len(picks), 1))
               .with_options(without_autotune()))
    for indices, images in dataset.as_numpy_iterator():  # one batch, if any decoded
        return images, np.setdiff1d(picks, indices)
    return np.zeros((0, how.size, how.size, channels), np.uint8), picks


def folder_layout(root: Path) -> tuple[Path, Path | None]:
    """(train folder, val folder or None): ``train/`` + ``val|valid|validation/``, or one
    folder of class folders. ``Train/`` in another case is the split only with a val
    folder beside it: alone, it may be a class (Bus/, Car/, Train/)."""
    if not root.is_dir():
        raise UserError(f"data.path is not a folder: {root}", hint=_LAYOUT_HINT)
    folders = sorted(e for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    trains = [f for f in folders if f.name.lower() == "train"]
    vals = [f for f in folders if f.name.lower() in _VAL_DIRS]
    if len(trains) > 1 or len(vals) > 1:
        several = trains if len(trains) > 1 else vals
        raise UserError(f"{root} has several {'training' if several is trains else 'validation'}"
                        f" folders: {', '.join(f.name + '/' for f in several)}",
                        hint="keep only one")
    if trains and (vals or trains[0].name == "train"):
        return trains[0], vals[0] if vals else None
    if vals and vals[0].name in _VAL_DIRS:
        raise UserError(f"{root} has {vals[0].name}/ but no train/",
                        hint="put the training class folders in train/, " + _LAYOUT_HINT)
    split_like = [f.name for f in folders if f.name.lower() in _SPLIT_LIKE]
    if split_like and len(split_like) == len(folders):  # not classes: a split named otherwise
        raise UserError(f"{root} holds {', '.join(n + '/' for n in split_like)}: split folders, "
                        "not classes", hint="name them train/ and val/, " + _LAYOUT_HINT)
    return root, None


def _scan_classes(split_dir: Path) -> tuple[dict[str, list[Path]], list[tuple[str, str]]]:
    """Image files per class folder, plus files left out because of their name or place."""
    found = scan_class_folders(split_dir)
    for name, images in found.classes.items():
        if not images:
            raise UserError(f"class folder {split_dir / name} has no images",
                            hint=f"add images ({IMAGE_KINDS}) or remove the folder")
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


def _flatten(files: dict[str, list[Path]],
             index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    """(paths, labels) with labels looked up by class name."""
    paths = [p for name in sorted(files) for p in files[name]]
    labels = [index[name] for name in sorted(files) for _ in files[name]]
    return paths, np.array(labels, np.int32)


def _check_files(paths: list[str], labels: np.ndarray, data: DataConfig, cache: bool,
                 stats: ChannelStats | None) -> tuple[Split, list[tuple[str, str]]]:
    """Decode every file once (``data.verify``): bad ones are listed, good ones kept or streamed.

    Decoding is the streaming path's (TensorFlow's kernels in a parallel map), so a
    verified split has the same pixels as a streamed one.
    """
    size, channels = data.image_size, data.channels
    skips = SkipLog()
    elements = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(paths), dtype=np.int64), tf.constant(paths, tf.string),
         labels.astype(np.int32)))
    decoded = decode_or_skip(elements, resize_rule(data), channels, skips,
                             from_files=True).batch(256)
    good = np.ones(len(paths), bool)
    kept: list[np.ndarray] = []
    for images, got in decoded.as_numpy_iterator():
        ok = got != SKIPPED_LABEL
        if stats is not None and ok.any():
            stats.add(images[ok])
        if cache:
            kept.append(images[ok])
    for key, _ in (entries := sorted(skips.take())):
        good[key] = False
    skipped = [(paths[key], reason) for key, reason in entries]
    split_labels = labels[good].astype(np.int32)
    if cache:
        ready = np.concatenate(kept) if kept else np.zeros((0, size, size, channels), np.uint8)
        return Split(split_labels, ready=ready), skipped
    return Split(split_labels, files=[p for p, g in zip(paths, good, strict=True) if g]), skipped


def _warn_skipped(skipped: list[tuple[str, str]], shown: int = 50) -> None:
    """One warning listing each left-out file and why (all of them are in bundle.skipped).

    ``stacklevel=4`` points at the caller of ``load_data``: this function, then
    ``folder_bundle``, then ``load_data``.
    """
    if not skipped:
        return
    lines = skipped_lines(skipped, shown)
    message = f"skipped {len(skipped)} file(s) that are not usable images:\n" + "\n".join(lines)
    warnings.warn(message, SkippedFilesWarning, stacklevel=4)


def _every_class_readable(train_dir: Path, names: list[str], wanted: np.ndarray,
                          got: np.ndarray) -> None:
    """A class whose every (selected) training file was bad cannot be learned: say which."""
    empty = [names[k] for k in np.unique(wanted) if not np.any(got == k)]
    if empty:
        raise UserError(f"no readable training images for class(es) {', '.join(empty)} in "
                        f"{train_dir}", hint="see the skipped files listed above")
