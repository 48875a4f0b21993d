"""Evaluating a classifier on labelled images: accuracy, balanced accuracy, macro F1, top-k,
per-class P/R/F1, confusion.

Labelled images come from one of:

* a run folder: its ``config.yaml`` data, rebuilt with the run's seed, so the
  validation split is the one the run held out (``evaluate RUN_DIR``);
* ``--config CONFIG.yaml``: that config's validation split;
* ``--data FOLDER``: every image in ``FOLDER/<class>/...``. Classes are matched to
  the model's class names **by name**; a folder class the model does not know is
  an error, a model class with no folder simply has no support;
* ``--data LABELS.csv``: the images and labels a CSV lists (``data.csv_source``'s
  format), for either task; labels are matched to the model's classes by name.

A multilabel model (``task``) is scored by mAP, per-class AP, precision, recall and F1
at its threshold, micro and macro F1 (``metrics.LabelTally``).

The metrics' definitions are in ``metrics.py``; the figure is ``plots.plot_confusion_matrix``
(the one training draws too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import IMAGE_KINDS, is_image_file
from resnet_builder.errors import UserError
from resnet_builder.files import write_json
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.loading import (
    InferenceModel,
    check_counts,
    load_inference_model,
    with_threshold,
)
from resnet_builder.inference.metrics import LabelTally, Tally
from resnet_builder.inference.sources import Skipped, write_skipped
from resnet_builder.plots import plot_confusion_matrix
from resnet_builder.runs import (
    DEFAULT_PROJECTS,
    RunPaths,
    latest_run,
    model_path,
    output_folder,
    skipped_lines,
)

TTA_VIEWS = "horizontal flip"  # what --tta averages over, besides the image itself

# --------------------------------------------------------------------------- sources


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
    skipped: list[Skipped] = []

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for good, pixels, bad in decoded_batches(table.paths, im.resizing, im.channels,
                                                 batch_size):
            skipped.extend(Skipped(table.paths[i], reason) for i, reason in bad)
            if len(good):
                yield pixels, labels[good]

    return LabelledData(f"CSV {path} ({len(table.paths)} images, "
                        f"{len(table.class_names)} classes)", batches(), skipped)


def config_data(cfg: Any, im: InferenceModel, batch_size: int, where: str) -> LabelledData:
    """The validation split of a config's data, rebuilt with its seed."""
    from resnet_builder.data import load_data

    d = cfg.data
    if (d.image_size, d.channels) != (im.image_size, im.channels):
        raise UserError(f"{where} prepares {d.image_size}x{d.image_size}x{d.channels} images "
                        f"but the model takes {im.image_size}x{im.image_size}x{im.channels}",
                        hint="evaluate with the config the model was trained with, or --data")
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


# -------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """The metrics (as written to metrics.json) and where things came from."""

    metrics: dict[str, Any]
    model: str
    data: str
    skipped: list[Skipped]
    seconds: float
    folder: Path | None = None
    files: list[str] = field(default_factory=list)


def resolve(run: str | os.PathLike | None, model: Any, data: str | os.PathLike | None,
            config: str | os.PathLike | None) -> tuple[Any, Any, str]:
    """(model source, config or None, where) from the evaluate arguments."""
    from resnet_builder.config import load_config

    if data is not None and config is not None:
        raise UserError("pass --data or --config, not both")
    if (run is None and isinstance(model, (str, os.PathLike))
            and RunPaths(Path(model)).config.exists()):
        run, model = model, None  # evaluate("runs/train/exp"): a run folder, as on the CLI
    if isinstance(model, (str, os.PathLike)) and not Path(model).exists():
        raise UserError(f"{model} does not exist",
                        hint="pass a run folder (runs/train/exp) or a model file")
    if run is not None and not Path(run).is_dir():
        raise UserError(f"{run} is not a run folder",
                        hint="pass a run folder (runs/train/exp), or --model FILE with --data")
    if model is None:
        if run is not None:
            model = model_path(run)
        elif data is not None or config is not None:
            model = model_path(latest_run())
        else:
            raise UserError("nothing to evaluate on",
                            hint="pass a run folder (its validation data), --data FOLDER or "
                                 "--config CONFIG.yaml")
    cfg, where = None, ""
    if config is not None:
        cfg, where = load_config(config), str(config)
    elif data is None:
        if run is None:
            raise UserError("a model alone has nothing to evaluate on",
                            hint="give labelled data: --data FOLDER|CSV or --config CONFIG.yaml "
                                 "(from Python: data=... or config=...)")
        path = RunPaths(Path(run)).config
        if not path.exists():
            raise UserError(f"run folder {run} has no config.yaml",
                            hint="pass --data FOLDER or --config CONFIG.yaml")
        cfg, where = load_config(path), str(path)
    return model, cfg, where


def _tally(im: InferenceModel, labelled: LabelledData, top_k: int, tta: bool
           ) -> tuple[Any, Any]:
    """(the tally, the tally without TTA when ``tta``): TTA averages image and flip."""
    def new() -> Tally | LabelTally:
        return LabelTally(im.threshold) if im.multilabel else Tally(im.num_classes, top_k)

    tally, plain = new(), (new() if tta else None)
    for images, labels in labelled.batches:
        if im.multilabel and labels.ndim == 1:  # a class folder: one label per image
            labels = np.eye(im.num_classes, dtype=np.float32)[labels]
        if plain is None:
            tally.add(labels, im.probabilities(images))
            continue
        probs, flipped = im.flip_probabilities(images)
        plain.add(labels, probs)
        tally.add(labels, (probs + flipped) / 2)
    return tally, plain


def evaluate(model: Any = None, *, run: str | os.PathLike | None = None,
             data: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
             batch_size: int = 64, top_k: int = 5, tta: bool = False,
             threshold: float | None = None) -> Evaluation:
    """Metrics of a model on a run's validation split, a config's, a class folder or a CSV.

    ``model`` may be an export (model.tflite, model.onnx, a saved_model folder). With
    ``tta`` the metrics are of the mean over each image and its horizontal flip, and
    ``metrics["without_tta"]`` holds the overall numbers without it. ``threshold``: a
    multilabel model's F1 threshold (default: the model's own).
    """
    check_counts(top_k=top_k, batch_size=batch_size)
    source, cfg, where = resolve(run, model, data, config)
    im = with_threshold(load_inference_model(source), threshold)
    start = time.perf_counter()
    if data is not None and Path(data).is_file():
        if is_image_file(data):
            raise UserError(f"--data {data} is an image: evaluation needs labels",
                            hint="give a folder of class folders (<class>/<images>) or a CSV "
                                 "of paths and labels; predict runs on unlabelled images")
        labelled = csv_data(data, im, batch_size)
    elif data is not None:
        labelled = folder_data(data, im, batch_size)
    else:
        labelled = config_data(cfg, im, batch_size, where)
    tally, plain = _tally(im, labelled, top_k, tta)
    seconds = time.perf_counter() - start
    if tally.count == 0:
        rows = [(skip.path, skip.reason) for skip in labelled.skipped]
        raise UserError("\n".join([f"no image could be evaluated in {labelled.description}"
                                   f" ({len(rows)} skipped):", *skipped_lines(rows, 10)]),
                        hint="evaluate needs readable images (jpg, png, ...) in the class "
                             "folders or CSV rows")
    metrics = {"model": im.source, "data": labelled.description, **tally.metrics(im.labels),
               "tta": TTA_VIEWS if tta else None,
               "skipped": len(labelled.skipped), "seconds": round(seconds, 3),
               "images_per_second": round(tally.count / seconds, 1) if seconds else None}
    if plain is not None:
        metrics["without_tta"] = {key: value for key, value in plain.metrics(im.labels).items()
                                  if value is None or isinstance(value, (int, float))}
    return Evaluation(metrics, im.source, labelled.description, labelled.skipped, seconds)


def evaluate_to_folder(model: Any = None, *, run: str | os.PathLike | None = None,
                       data: str | os.PathLike | None = None,
                       config: str | os.PathLike | None = None, batch_size: int = 64,
                       top_k: int = 5, tta: bool = False,
                       output: str | os.PathLike | None = None,
                       project: str | os.PathLike = DEFAULT_PROJECTS["evaluate"],
                       name: str = "exp", exist_ok: bool = False,
                       threshold: float | None = None) -> Evaluation:
    """``evaluate`` and write metrics.json, confusion_matrix.png (multiclass; and
    skipped.csv)."""
    result = evaluate(model, run=run, data=data, config=config, batch_size=batch_size,
                      top_k=top_k, tta=tta, threshold=threshold)
    folder = output_folder(output, project, name, exist_ok)
    metrics = result.metrics
    write_json(folder / "metrics.json", metrics)
    result.files = ["metrics.json"]
    if "confusion_matrix" in metrics:
        _draw_confusion(metrics, folder)
        result.files.append("confusion_matrix.png")
    if result.skipped:
        write_skipped(folder / "skipped.csv", result.skipped)
        result.files.append("skipped.csv")
    result.folder = folder
    return result


def _draw_confusion(metrics: dict[str, Any], folder: Path) -> None:
    title = "confusion matrix" + (" with TTA" if metrics["tta"] else "")
    if metrics["accuracy"] is not None:
        title += f" (accuracy {metrics['accuracy']:.4f}, {metrics['images']} images)"
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), metrics["class_names"],
                          folder / "confusion_matrix.png", title=title)


# --------------------------------------------------------------------------- terminal


def format_metrics(m: dict[str, Any], max_rows: int = 30) -> str:
    """The compact terminal table: totals, then one row per class (the worst when many)."""
    if m.get("task") == "multilabel":
        return format_label_metrics(m, max_rows)
    k = m["top_k"]

    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:.3f}"

    lines = [f"accuracy {m['accuracy']:.4f}   balanced accuracy {f(m['balanced_accuracy'])}   "
             f"macro F1 {f(m['macro_f1'])}   top-{k} {m[f'top{k}_accuracy']:.4f}   "
             f"macro P {f(m['macro_precision'])}   ({m['images']} images, "
             f"{m['skipped']} skipped)"]
    if m.get("tta"):
        plain = m["without_tta"]
        lines.append(f"with TTA ({m['tta']}): accuracy {m['accuracy']:.4f}, top-{k} "
                     f"{m[f'top{k}_accuracy']:.4f}; without TTA: accuracy "
                     f"{plain['accuracy']:.4f}, top-{k} {plain[f'top{k}_accuracy']:.4f}")
    rows = list(m["per_class"].items())
    width = max([5, *(len(n) for n, _ in rows[:200])])
    width = min(width, 24)
    note = ""
    if len(rows) > max_rows:
        rows = sorted((r for r in rows if r[1]["f1"] is not None), key=lambda r: r[1]["f1"])
        rows = rows[:max_rows]
        note = f"({max_rows} classes with the lowest F1 of {len(m['per_class'])}; all in " \
               "metrics.json)"
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}")
    for name, c in rows:
        lines.append(f"{name[:width]:<{width}} {f(c['precision']):>9} {f(c['recall']):>7} "
                     f"{f(c['f1']):>7} {c['support']:>7}")
    if note:
        lines.append(note)
    return "\n".join(lines)


def format_label_metrics(m: dict[str, Any], max_rows: int = 30) -> str:
    """A multilabel model's table: mAP and F1 at the threshold, then AP/P/R/F1 per class."""
    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:.3f}"

    lines = [f"mAP {f(m['map'])}   micro F1 {f(m['micro_f1'])}   macro F1 {f(m['macro_f1'])}"
             f"   at threshold {m['threshold']:g}   ({m['images']} images, {m['skipped']} "
             "skipped)"]
    if m.get("tta"):
        plain = m["without_tta"]
        lines.append(f"with TTA ({m['tta']}): mAP {f(m['map'])}; without TTA: mAP "
                     f"{f(plain['map'])}, micro F1 {f(plain['micro_f1'])}")
    rows = list(m["per_class"].items())
    if len(rows) > max_rows:
        rows = sorted((r for r in rows if r[1]["ap"] is not None), key=lambda r: r[1]["ap"])
        rows = rows[:max_rows]
    width = min(max([5, *(len(n) for n, _ in rows)]), 24)
    lines.append(f"{'class':<{width}} {'AP':>7} {'precision':>9} {'recall':>7} {'f1':>7} "
                 f"{'support':>7}")
    for name, c in rows:
        lines.append(f"{name[:width]:<{width}} {f(c['ap']):>7} {f(c['precision']):>9} "
                     f"{f(c['recall']):>7} {f(c['f1']):>7} {c['support']:>7}")
    return "\n".join(lines)
