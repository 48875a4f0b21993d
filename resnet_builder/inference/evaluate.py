"""Evaluating a classifier on labelled images: accuracy, balanced accuracy, macro F1, top-k,
per-class P/R/F1, confusion.

Labelled images (``labelled.py``) come from a run folder (the validation split it held
out, rebuilt with its seed), ``--config CONFIG.yaml`` (that config's validation split),
``--data FOLDER`` (``FOLDER/<class>/...``, classes matched to the model's **by name**) or
``--data LABELS.csv`` (its rows; with a split column, its val rows).

A multilabel model is scored by mAP, per-class AP, precision, recall and F1 at its
threshold, micro and macro F1 (``metrics.LabelTally``). Definitions: ``metrics.py``; the
figure: ``plots.plot_confusion_matrix`` (the one training draws too).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.images import is_image_file
from resnet_builder.errors import UserError
from resnet_builder.files import write_json
from resnet_builder.inference.exported import export_kind
from resnet_builder.inference.labelled import LabelledData, config_data, csv_data, folder_data
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
    remove_entries,
    skipped_lines,
)

TTA_VIEWS = "horizontal flip"  # what --tta averages over, besides the image itself

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
    if (run is not None and model is None and Path(run).is_dir()
            and not RunPaths(Path(run)).config.exists() and export_kind(Path(run))):
        run, model = None, run  # an exported SavedModel folder, given where a run goes
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
    """``evaluate`` and write metrics.json, confusion_matrix.png (multiclass), skipped.csv."""
    result = evaluate(model, run=run, data=data, config=config, batch_size=batch_size,
                      top_k=top_k, tta=tta, threshold=threshold)
    folder = output_folder(output, project, name, exist_ok)
    metrics = result.metrics
    if (folder / "metrics.json").is_file():  # an earlier evaluate's: none of its files stay
        remove_entries([folder / "confusion_matrix.png", folder / "skipped.csv"])
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
