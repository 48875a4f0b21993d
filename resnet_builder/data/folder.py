"""The ``folder`` source: one sub-folder of images per class, optionally train/ and val/.

Bad files: every file is decoded once up front; unreadable ones are left out,
listed in ``DataBundle.skipped`` and reported in one ``SkippedFilesWarning``. Only
layout mistakes (no classes, an empty class, ...) stop. The class folders are found
by ``resnet_builder.data.folders.scan_class_folders``, the scanner every command uses.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle, Split, fits_in_cache
from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import ImageError, prepare_image
from resnet_builder.data.sources import required_path
from resnet_builder.data.splits import ChannelStats, apply_limit, stratified_split
from resnet_builder.errors import UserError

_VAL_DIRS = ("val", "valid", "validation")
_LAYOUT_HINT = ("use <path>/<class>/<images> (split by data.validation_split) or "
                "<path>/train/<class>/ with <path>/val/<class>/")


class SkippedFilesWarning(UserWarning):
    """Some files in an image folder were left out (listed with reasons)."""


def folder_bundle(data: DataConfig, seed: int) -> DataBundle:
    """One sub-folder per class; bad files are skipped with a warning, never fatal."""
    train_dir, val_dir = _folder_layout(required_path(data, "a folder of class folders"))
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
        tr, va = stratified_split(train_labels, data.validation_split, len(class_names), seed)
        val_paths, val_labels = [train_paths[i] for i in va], train_labels[va]
        train_paths, train_labels = [train_paths[i] for i in tr], train_labels[tr]
    keep = apply_limit(train_labels, data.limit, len(class_names), seed)
    train_paths, train_labels = [train_paths[i] for i in keep], train_labels[keep]

    cache = fits_in_cache(len(train_paths) + len(val_paths), data)
    stats = ChannelStats(data.channels)
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
                 stats: ChannelStats | None) -> tuple[Split, list[tuple[str, str]]]:
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
        return Split(split_labels, ready=ready), skipped
    return Split(split_labels, prepare=lambda i: prepare_image(good[i], size, channels)), skipped


def _warn_skipped(skipped: list[tuple[str, str]], shown: int = 50) -> None:
    """One warning listing each left-out file and why (all of them are in bundle.skipped).

    ``stacklevel=4`` points at the caller of ``load_data``: this function, then
    ``folder_bundle``, then ``load_data``.
    """
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
