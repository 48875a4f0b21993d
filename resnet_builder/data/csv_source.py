"""The ``csv`` source: a CSV lists image files and their labels, for both ``model.task`` values.

Columns, by header name (case and surrounding spaces ignored):

* the path column: the first of ``path``, ``image``, ``file``, ``filename``; a relative
  path is read from the CSV's folder, an absolute one as it is;
* labels, either one ``labels`` (or ``label``) column holding ``a;b;c`` (empty = no label;
  classes are the labels seen, sorted), or, without such a column, every other column is
  one class, 0 or 1 per row (classes in header order);
* optionally ``split`` with ``train`` or ``val`` (``valid``, ``validation``) per row, which
  then replaces ``data.validation_split``.

A multiclass run needs exactly one label per row. Without a split column the validation
split is drawn from ``data.validation_split`` and the seed: stratified by class for
multiclass, a seeded random share of the rows for multilabel (no class to stratify by);
``data.limit`` likewise. Images stream through the folder source's path (decoded in
tf.data; a bad file is skipped, counted and named in skipped.csv). Mistakes in the CSV
itself (no path column, a missing file, a bad 0/1 value, ...) stop at once, naming the
CSV's file:line.

Labels: multiclass int32 [N] as every source; multilabel int32 [N, K] multi-hot rows.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle, fits_in_cache
from resnet_builder.data.folder import sample_stats, streamed_split
from resnet_builder.data.sources import required_path
from resnet_builder.data.splits import apply_limit, stratified_split
from resnet_builder.errors import UserError

PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("labels", "label")
SPLIT_COLUMN = "split"
SEPARATOR = ";"
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
_FORMAT_HINT = ("use a header such as 'path,labels' (labels as a;b;c) or 'path,cat,dog' "
                "(one 0/1 column per class)")


@dataclass
class LabelTable:
    """A label CSV read whole: files, multi-hot rows, and where each row came from."""

    source: Path
    class_names: list[str]
    paths: list[str]
    rows: np.ndarray  # int32 [N, K], 0/1
    lines: list[int]  # the CSV line of each row, for messages
    splits: list[str] | None  # "train" / "val" per row, when the CSV has a split column

    def where(self, row: int) -> str:
        return f"{self.source}:{self.lines[row]}"

    def single_labels(self) -> np.ndarray:
        """int32 [N] class ids; every row must have exactly one label (multiclass)."""
        counts = self.rows.sum(axis=1)
        bad = np.flatnonzero(counts != 1)
        if len(bad):
            k = int(bad[0])
            raise UserError(f"{self.where(k)}: a multiclass row needs exactly one label, this "
                            f"one has {int(counts[k])} ({self._names(k)})",
                            hint="give one label per row, or set model.task: multilabel")
        return self.rows.argmax(axis=1).astype(np.int32)

    def _names(self, row: int) -> str:
        return ";".join(self.class_names[k] for k in np.flatnonzero(self.rows[row])) or "none"


def read_label_csv(path: Path, known: list[str] | None = None) -> LabelTable:
    """Read a label CSV; ``known`` (a model's classes) fixes the class order and refuses others.

    Raises ``UserError`` naming file:line for a CSV that cannot be used.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            records = [(reader.line_num, row) for reader in [csv.reader(handle)]
                       for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read the CSV {path}: it is not UTF-8 text (byte "
                        f"0x{exc.object[exc.start]:02x}, as in Latin-1 or Windows-1252)",
                        hint="save the CSV as UTF-8 (in a spreadsheet: CSV UTF-8)") from None
    except (OSError, csv.Error) as exc:
        raise UserError(f"cannot read the CSV {path}: {exc}", hint=_FORMAT_HINT) from None
    if len(records) < 2:
        raise UserError(f"{path}: the CSV has no rows below its header", hint=_FORMAT_HINT)
    header = [cell.strip().lower() for cell in records[0][1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if path_col is None:
        raise UserError(f"{path}:{records[0][0]}: no path column (one of "
                        f"{', '.join(PATH_COLUMNS)}) in the header {records[0][1]}",
                        hint=_FORMAT_HINT)
    split_col = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    body = records[1:]
    for line, row in body:
        if len(row) != len(header):
            raise UserError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}",
                            hint=_FORMAT_HINT)
    if label_col is not None:
        names, rows = _label_lists(path, body, label_col, known)
    else:
        columns = [k for k in range(len(header)) if k not in (path_col, split_col)]
        names = [records[0][1][k].strip() for k in columns]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UserError(f"{path}:{records[0][0]}: the header names class column(s) "
                            f"{', '.join(map(repr, twice))} more than once",
                            hint="give every class one column")
        rows = _zero_one_columns(path, body, columns, records[0][1], split_col is not None)
        if known is not None:
            rows = _reorder(path, records[0][0], names, rows, known)
            names = list(known)
    files = [_file(path, line, row[path_col]) for line, row in body]
    _refuse_repeats(path, files, [(line, row[path_col].strip()) for line, row in body])
    splits = None if split_col is None else _splits(path, body, split_col)
    if known is None and len(names) < 2:
        raise UserError(f"{path}: found {len(names)} class(es) ({', '.join(names) or 'none'}); "
                        "a classifier needs at least two", hint=_FORMAT_HINT)
    return LabelTable(path, names, files, rows, [line for line, _ in body], splits)


def _label_lists(path: Path, body: list, column: int,
                 known: list[str] | None) -> tuple[list[str], np.ndarray]:
    """('a;b' per row) -> (class names, multi-hot rows); names sorted unless ``known``."""
    found = [[part.strip() for part in row[column].split(SEPARATOR) if part.strip()]
             for _, row in body]
    names = list(known) if known is not None else sorted({n for labels in found for n in labels})
    index = {name: k for k, name in enumerate(names)}
    rows = np.zeros((len(body), len(names)), np.int32)
    for r, ((line, _), labels) in enumerate(zip(body, found, strict=True)):
        for label in labels:
            if label not in index:
                shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
                raise UserError(f"{path}:{line}: unknown label {label!r}",
                                hint=f"the model's classes are: {shown}")
            rows[r, index[label]] = 1
    return names, rows


def _zero_one_columns(path: Path, body: list, columns: list[int], header: list[str],
                      has_split: bool) -> np.ndarray:
    """One 0/1 column per class -> int32 [N, K]. Without a labels column every column but
    the path (and split) is a class: a bad value names its column, which may be a stray
    text column (``notes``) rather than a class."""
    rows = np.zeros((len(body), len(columns)), np.int32)
    but = "the path and split" if has_split else "the path"
    for r, (line, row) in enumerate(body):
        for c, k in enumerate(columns):
            value = row[k].strip()
            if value not in ("0", "1"):
                raise UserError(f"{path}:{line}: class columns hold 0 or 1, got {value!r} in "
                                f"column {header[k].strip()!r} (without a 'labels' column, "
                                f"every column but {but} is a class column)",
                                hint="remove columns that are not classes, or put the labels "
                                "in one 'labels' column as a;b;c")
            rows[r, c] = value == "1"
    return rows


def _reorder(path: Path, line: int, names: list[str], rows: np.ndarray,
             known: list[str]) -> np.ndarray:
    """0/1 columns named by class -> the model's class order (columns it lacks are 0)."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"{path}:{line}: class column(s) the model does not know: "
                        f"{', '.join(unknown)}", hint=f"the model's classes are: "
                        f"{', '.join(known[:30])}")
    out = np.zeros((len(rows), len(known)), np.int32)
    for c, name in enumerate(names):
        out[:, known.index(name)] = rows[:, c]
    return out


def _file(source: Path, line: int, cell: str) -> str:
    """A row's image path: relative to the CSV's folder; it must exist."""
    name = cell.strip()
    if not name:
        raise UserError(f"{source}:{line}: empty path", hint=_FORMAT_HINT)
    file = Path(name).expanduser()
    file = file if file.is_absolute() else source.parent / file
    if file.is_file():
        return os.fspath(file)
    if file.is_dir():
        raise UserError(f"{source}:{line}: {file} is a folder, not an image file",
                        hint="give one image file per row (a folder of class folders is "
                             "data.source: folder)")
    raise UserError(f"{source}:{line}: image file not found: {file}",
                    hint="paths are read relative to the CSV's folder (absolute ones as they "
                         "are)")


def _refuse_repeats(source: Path, files: list[str], cells: list[tuple[int, str]]) -> None:
    """One row per image: a repeated one would be counted twice, or land in both the
    training and the validation split (inflating validation scores)."""
    first: dict[str, int] = {}
    for file, (line, cell) in zip(files, cells, strict=True):
        key = os.path.normcase(os.path.normpath(os.path.abspath(file)))
        if key in first:
            raise UserError(f"{source}:{line}: {cell} is listed again (first at line "
                            f"{first[key]})", hint="give each image one row; a multilabel "
                            "image lists all its labels in that row (a;b)")
        first[key] = line


def _splits(path: Path, body: list, column: int) -> list[str]:
    out = []
    for line, row in body:
        value = row[column].strip().lower()
        if value not in _SPLIT_NAMES:
            raise UserError(f"{path}:{line}: split must be train or val, got {row[column]!r}",
                            hint="or drop the split column to use data.validation_split")
        out.append(_SPLIT_NAMES[value])
    return out


def csv_bundle(data: DataConfig, seed: int, task: str = "multiclass") -> DataBundle:
    """The CSV's images, streamed; labels int32 [N] (multiclass) or multi-hot [N, K]."""
    table = read_label_csv(required_path(data, "a CSV file with a path column and labels"))
    if data.verify:  # said, not ignored without a word (as for packed records)
        warnings.warn("data.verify applies to the folder source; a CSV's images are checked "
                      "as they are read (an unreadable one is skipped and listed in the run's "
                      "skipped.csv)", UserWarning, stacklevel=3)
    multilabel = task == "multilabel"
    labels = table.rows if multilabel else table.single_labels()
    k = len(table.class_names)
    strata = np.zeros(len(labels), np.int32) if multilabel else labels  # multilabel: one group
    if table.splits is not None:
        train = np.flatnonzero(np.array(table.splits) == "train")
        val = np.flatnonzero(np.array(table.splits) == "val")
    else:
        train, val = stratified_split(strata, data.validation_split, 1 if multilabel else k, seed)
    if len(train) == 0:
        raise UserError(f"{table.source}: no training rows", hint="mark some rows split: train")
    unseen = [] if multilabel else sorted(set(range(k)) - set(labels[train].tolist()))
    if unseen:  # as the folder source: every class needs training images to be learned
        raise UserError(f"{table.source}: no training rows for class(es) "
                        f"{', '.join(table.class_names[c] for c in unseen)}",
                        hint="mark some of their rows split: train")
    train = train[apply_limit(strata[train], data.limit, 1 if multilabel else k, seed)]
    cache = data.cache is True and fits_in_cache(len(train) + len(val), data)
    root = str(table.source.resolve())
    splits = [streamed_split([table.paths[i] for i in rows], labels[rows], data, cache, root)
              for rows in (train, val)]
    mean, std = sample_stats(splits[0], data, seed)
    return DataBundle(class_names=table.class_names, num_train=len(splits[0]),
                      num_val=len(splits[1]), image_size=data.image_size,
                      channels=data.channels, mean=mean, std=std, task=task,
                      _train=splits[0], _val=splits[1] if len(splits[1]) else None)
