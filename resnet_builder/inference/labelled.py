"""The labelled images ``evaluate`` scores, as batches of (raw images, model class indices):

* a run folder: its ``config.yaml`` data, rebuilt with the run's seed, so the
  validation split is the one the run held out (``evaluate RUN_DIR``);
* ``--config CONFIG.yaml``: that config's validation split;
* ``--data FOLDER``: every image in ``FOLDER/<class>/...``, classes matched to the model's
  **by name** (a class the model does not know is an error; a model class with no folder
  has no support);
* ``--data LABELS.csv``: the rows a CSV lists (``data.csv_source``'s format; with a split
  column, its val rows: its training rows would inflate the scores), labels matched to the
  model's classes by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import IMAGE_KINDS
from resnet_builder.data.sources import check_run_data_path
from resnet_builder.errors import UserError
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.loading import InferenceModel
from resnet_builder.inference.sources import Skipped


@dataclass
class LabelledData:
    """Batches of (raw images, model class indices) and what was left out."""

    description: str
    batches: Iterator[tuple[np.ndarray, np.ndarray]]
    skipped: list[Skipped] = field(default_factory=list)


def _model_indices(names: Sequence[str], im: InferenceModel, where: str) -> list[int]:
    """The model's class index for each data class name; unknown names are an error."""
    index = {name: k for k, name in enumerate(im.labels)}
    unknown = [n for n in names if n not in index]
    if unknown:
        shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        raise UserError(f"{where} has classes the model does not know: {shown}",
                        hint=f"the model's classes are: {', '.join(im.labels[:30])}"
                             f"{' ...' if len(im.labels) > 30 else ''}; classes are matched by "
                             "name (point --data at the folder that holds the class folders)")
    return [index[n] for n in names]


def folder_data(folder: str | os.PathLike, im: InferenceModel, batch_size: int) -> LabelledData:
    """Every image below ``folder/<class>/``, decoded as predict does, labelled by folder name.

    A class folder with no images is allowed (that class has no support here).
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--data {root} is not a folder",
                        hint="pass a folder with one sub-folder of images per class")
    scan = scan_class_folders(root)
    skipped = [Skipped(file.relative_to(root).as_posix(), reason) for file, reason in scan.skipped]
    if not scan.classes:
        raise UserError(f"no class folders in {root}",
                        hint="use FOLDER/<class>/<images>, class names as the model's")
    names = sorted(scan.classes)
    mapping = _model_indices(names, im, f"--data {root}")
    files = [f for n in names for f in scan.classes[n]]
    labels = np.array([mapping[k] for k, n in enumerate(names) for _ in scan.classes[n]],
                      np.int64)
    if not files:
        raise UserError(f"the class folders in {root} hold no images",
                        hint=f"add images ({IMAGE_KINDS})")

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for good, pixels, bad in decoded_batches(files, im.resizing, im.channels, batch_size):
            skipped.extend(Skipped(files[i].relative_to(root).as_posix(), reason)
                           for i, reason in bad)
            if len(good):
                yield pixels, labels[good]

    return LabelledData(f"folder {root} ({len(files)} images, {len(names)} classes)",
                        batches(), skipped)


def csv_data(path: str | os.PathLike, im: InferenceModel, batch_size: int) -> LabelledData:
    """The images a label CSV lists, labelled as it says (model class ids, or multi-hot
    rows in the model's class order for a multilabel model)."""
    from resnet_builder.data.csv_source import read_label_csv

    table = read_label_csv(Path(path), known=im.labels)
    labels = table.rows if im.multilabel else table.single_labels().astype(np.int64)
    rows, which = np.arange(len(table.paths)), ""
    if table.splits is not None:  # its training rows would inflate the scores
        rows = np.flatnonzero(np.array(table.splits) == "val")
        if not len(rows):
            raise UserError(f"{path} has a split column but no val rows to evaluate",
                            hint="mark the held-out rows split: val, or drop the column to "
                                 "evaluate every row")
        which = f"its {len(rows)} val rows of {len(table.paths)}, "
    paths, labels = [table.paths[i] for i in rows], labels[rows]
    present = (labels.max(axis=0) > 0).sum() if im.multilabel else len(np.unique(labels))
    skipped: list[Skipped] = []

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for good, pixels, bad in decoded_batches(paths, im.resizing, im.channels, batch_size):
            skipped.extend(Skipped(paths[i], reason) for i, reason in bad)
            if len(good):
                yield pixels, labels[good]

    return LabelledData(f"CSV {path} ({which}{len(paths)} images, {present} classes)",
                        batches(), skipped)


def config_data(cfg: Any, im: InferenceModel, batch_size: int, where: str) -> LabelledData:
    """The validation split of a config's data, rebuilt with its seed."""
    from resnet_builder.data import load_data

    d = cfg.data
    if (d.image_size, d.channels) != (im.image_size, im.channels):
        raise UserError(f"{where} prepares {d.image_size}x{d.image_size}x{d.channels} images "
                        f"but the model takes {im.image_size}x{im.image_size}x{im.channels}",
                        hint="evaluate with the config the model was trained with, or --data")
    check_run_data_path(d, where, fix="run this from the folder train ran in, or pass --data "
                                       "FOLDER")
    seed = cfg.hardware.seed
    if seed is None and d.source not in ("cifar10", "cifar100"):
        raise UserError(f"{where} has hardware.seed: null, so its validation split cannot be "
                        "rebuilt (it may overlap the training images)",
                        hint="pass --data FOLDER with held-out images")
    bundle = load_data(d, cfg.augment, seed, im.task)
    dataset = bundle.val_dataset(batch_size)
    if dataset is None:
        why = (f"its packed folder {d.path} has no val shards (packed with --validation-split"
               " 0)" if d.source == "tfrecord" else "data.validation_split is 0")
        raise UserError(f"{where} has no validation split ({why})",
                        hint="pass --data FOLDER with labelled images")
    mapping = np.array(_model_indices(bundle.class_names, im, where), np.int64)
    skipped = [Skipped(path, reason) for path, reason in bundle.val_skipped]  # not train's

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for images, labels in dataset.as_numpy_iterator():
            if labels.ndim == 2:  # multilabel rows: the model's class order; -1 rows unread
                rows = np.zeros((len(labels), im.num_classes), np.float32)
                rows[:, mapping] = labels
                keep = labels.min(axis=1) >= 0
                yield images[keep], rows[keep]
            else:  # label -1: a streamed file that could not be decoded
                keep = labels >= 0
                yield images[keep], mapping[labels[keep]]
        skipped.extend(Skipped(path, reason) for path, reason in bundle.take_skipped())

    return LabelledData(f"validation split of {where} ({d.source}, {bundle.num_val} images)",
                        batches(), skipped)
