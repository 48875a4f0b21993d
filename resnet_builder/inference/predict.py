"""Predicting classes for image files: records, the Python API and the run-folder outputs.

``predict(model, paths)`` is the Python entry point; ``predict_to_folder`` is what
``resnet-builder predict`` runs (predictions.csv/json, skipped.csv, contact sheet,
Grad-CAM). The pieces underneath are shared with evaluate and export: loading
(``loading.py``), the decode pipeline (``decode.py``), Grad-CAM (``gradcam.py``);
which files to read is ``sources.py``, the pictures ``drawing.py``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.images import IMAGE_KINDS, ImageError
from resnet_builder.errors import UserError
from resnet_builder.files import atomic_open
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.drawing import MirroredNames, contact_sheet, write_cam
from resnet_builder.inference.gradcam import split_classifier
from resnet_builder.inference.loading import (
    InferenceModel,
    check_counts,
    load_inference_model,
    with_threshold,
)
from resnet_builder.inference.sources import ImageSource, Skipped, collect_images, write_skipped
from resnet_builder.runs import DEFAULT_PROJECTS, new_run_dir, remove_entries, skipped_lines

GRID_MAX = 100

# ---------------------------------------------------------------------------- records


@dataclass
class Prediction:
    """One image's prediction: the top class and the top-k (label, probability) pairs.

    A multilabel model's also has ``labels``: every (label, probability) at or above the
    threshold, most probable first (possibly none).
    """

    path: str
    label: str
    probability: float
    top_k: list[tuple[str, float]]
    class_index: int
    file: Path | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    labels: list[tuple[str, float]] | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {} if self.labels is None else {
            "labels": [{"label": lab, "probability": p} for lab, p in self.labels]}
        return {"path": self.path, **found, "label": self.label,
                "probability": self.probability,
                "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k]}


class Predictions(list):
    """A list of ``Prediction``; ``skipped`` lists the files that gave none, with reasons."""

    def __init__(self, records: Iterable[Prediction] = (), skipped: Iterable[Skipped] = (),
                 seconds: float = 0.0, model: str = "") -> None:
        super().__init__(records)
        self.skipped = list(skipped)
        self.seconds = seconds
        self.model = model

    @property
    def images_per_second(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else 0.0


def _refuse_cam_with_tta(cam: bool, tta: bool) -> None:
    if cam and tta:
        raise UserError("--cam and --tta cannot be combined: Grad-CAM explains one image, "
                        "TTA averages two", hint="drop one of them")


def iter_predictions(im: InferenceModel, images: Sequence[ImageSource], *, top_k: int = 5,
                     batch_size: int = 64, cam: bool = False, tta: bool = False
                     ) -> Iterator[Prediction | Skipped]:
    """Predictions (and skips) in file order, batch by batch.

    ``tta``: each image's probabilities are the mean over it and its horizontal flip.
    """
    check_counts(top_k=top_k, batch_size=batch_size)
    _refuse_cam_with_tta(cam, tta)
    k = min(top_k, im.num_classes)
    files = [s.file for s in images]
    for good, pixels, bad in decoded_batches(files, im.resizing, im.channels, batch_size):
        pending: dict[int, Prediction | Skipped] = {
            i: Skipped(images[i].path, reason) for i, reason in bad}
        if len(good):
            if cam:
                probs, heat = im.gradcam(pixels)
            else:
                probs, heat = im.probabilities(pixels, tta=tta), None
            ranked = np.argsort(-probs, axis=1, kind="stable")
            order = ranked[:, :k]
            for row, i in enumerate(good):
                top = [(im.labels[c], float(probs[row, c])) for c in order[row]]
                found = None if not im.multilabel else [
                    (im.labels[c], float(probs[row, c])) for c in ranked[row]
                    if probs[row, c] >= im.threshold]
                pending[int(i)] = Prediction(
                    path=images[i].path, label=top[0][0], probability=top[0][1], top_k=top,
                    class_index=int(order[row, 0]), file=images[i].file,
                    heatmap=None if heat is None else heat[row], labels=found)
        for i in sorted(pending):
            yield pending[i]


def predict(model: Any, paths: str | os.PathLike | Iterable[str | os.PathLike], top_k: int = 5,
            batch_size: int = 64, tta: bool = False,
            threshold: float | None = None) -> Predictions:
    """Predict image files (files, folders, globs) with a model object, file or run folder.

    ``model`` may also be an export (model.tflite, model.onnx, a saved_model folder, with
    the export.json beside it). ``tta`` averages each image's probabilities with its
    horizontal flip's. Returns a list of ``Prediction`` records (path, label,
    probability, top_k; a multilabel model's ``labels`` too, those at or above
    ``threshold``, default the model's); ``result.skipped`` lists unreadable files.
    """
    check_counts(top_k=top_k, batch_size=batch_size)
    im = with_threshold(load_inference_model(model), threshold)
    images, skipped = collect_images(paths)
    start = time.perf_counter()
    records = []
    for item in iter_predictions(im, images, top_k=top_k, batch_size=batch_size, tta=tta):
        (skipped if isinstance(item, Skipped) else records).append(item)
    return Predictions(records, skipped, time.perf_counter() - start, im.source)


# ---------------------------------------------------------------------------- outputs


def csv_columns(k: int, multilabel: bool = False) -> list[str]:
    """path, label, probability, then top1_label, top1_probability, ... topk_probability;
    multilabel: labels ('a;b', those at or above the threshold) and their probabilities
    ('0.97;0.81') after path."""
    columns = ["path", *(("labels", "probabilities") if multilabel else ()), "label",
               "probability"]
    for i in range(1, k + 1):
        columns += [f"top{i}_label", f"top{i}_probability"]
    return columns


def csv_row(p: Prediction) -> list[Any]:
    found = [] if p.labels is None else [";".join(lab for lab, _ in p.labels),
                                         ";".join(f"{prob:.6f}" for _, prob in p.labels)]
    row: list[Any] = [p.path, *found, p.label, f"{p.probability:.6f}"]
    for label, prob in p.top_k:
        row += [label, f"{prob:.6f}"]
    return row


@contextlib.contextmanager
def prediction_writer(path: Path, fmt: str, k: int, multilabel: bool = False
                      ) -> Iterator[Callable[[Prediction], None]]:
    """A function appending one record to predictions.csv or .json; the file appears whole."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        if fmt == "csv":
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(csv_columns(k, multilabel))
            yield lambda p: writer.writerow(csv_row(p))
            return
        written = 0

        def write_json(p: Prediction) -> None:
            nonlocal written
            f.write(("," if written else "") + "\n  " + json.dumps(p.as_dict()))
            written += 1

        f.write("[")
        yield write_json
        f.write("\n]\n" if written else "]\n")


@dataclass
class PredictReport:
    """What ``predict_to_folder`` did."""

    folder: Path
    model: str
    predicted: int
    skipped: list[Skipped]
    seconds: float
    output: Path
    grid: Path | None = None
    cam_folder: Path | None = None
    shown: list[Prediction] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # an earlier predict's, in the folder
    cam_missing: list[Skipped] = field(default_factory=list)  # predicted, not drawn

    @property
    def images_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def _write_predictions(report: PredictReport, im: InferenceModel, images: list[ImageSource], *,
                       fmt: str, top_k: int, batch_size: int, cam: bool, tta: bool,
                       grid_max: int, show: int) -> list[Prediction]:
    """Stream predictions into ``report.output`` (and cam/); returns the contact sheet's records.

    Fills the report's counts, skips, shown records and seconds as it goes.
    """
    k = min(top_k, im.num_classes)
    cam_names = MirroredNames(report.output.parent / "cam", images) if cam else None
    for_grid: list[Prediction] = []
    start = time.perf_counter()
    with prediction_writer(report.output, fmt, k, im.multilabel) as write:
        for item in iter_predictions(im, images, top_k=k, batch_size=batch_size, cam=cam,
                                     tta=tta):
            if isinstance(item, Skipped):
                report.skipped.append(item)
                continue
            write(item)
            if cam_names is not None and item.heatmap is not None and item.file:
                _write_cam(report, cam_names(item.path), item, im)
            if len(for_grid) < grid_max:
                for_grid.append(item)
            if len(report.shown) < show:
                report.shown.append(item)
            report.predicted += 1
    report.seconds = time.perf_counter() - start
    return for_grid


def _write_cam(report: PredictReport, path: Path, item: Prediction, im: InferenceModel) -> None:
    """One Grad-CAM overlay; an image it cannot draw (too large for Pillow, a name taken by
    a folder) is noted, and the run goes on: one such image stopped the whole predict."""
    try:
        write_cam(path, item.file, item.heatmap, im.channels, im.resizing)
    except (ImageError, OSError) as exc:
        reason = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
        report.cam_missing.append(Skipped(item.path, f"no Grad-CAM overlay: {reason}"))
    item.heatmap = None


def predict_to_folder(sources: Sequence[str], model: Any = None, *, top_k: int = 5,
                      batch_size: int = 64, fmt: str = "csv", grid: bool = False,
                      grid_max: int = GRID_MAX, cam: bool = False, tta: bool = False,
                      project: str | os.PathLike = DEFAULT_PROJECTS["predict"],
                      name: str = "exp", exist_ok: bool = False, show: int = 20,
                      on_model: Callable[[InferenceModel], None] | None = None,
                      threshold: float | None = None) -> PredictReport:
    """Predict ``sources`` into a new run folder; raises UserError if nothing was predicted.

    The files are written beside the folder's own in a hidden staging folder and moved in
    once something was predicted: a reused folder (``exist_ok``) keeps an earlier predict's
    results when this one fails, and a new folder that would stay empty is removed.
    ``threshold``: a multilabel model's labels at or above it (default: the model's own).
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    _refuse_cam_with_tta(cam, tta)
    im = with_threshold(load_inference_model(model), threshold)
    if on_model is not None:
        on_model(im)
    if cam:  # fail before any work when Grad-CAM cannot apply
        split_classifier(im.keras_model("Grad-CAM (--cam)"))
    images, skipped = collect_images(sources)
    reused = exist_ok and (Path(project) / name).is_dir()
    folder = new_run_dir(project, name, exist_ok)
    earlier = _earlier_predictions(folder, images)
    for stale in folder.glob(STAGING_PREFIX + "*"):  # a killed predict's
        shutil.rmtree(stale, ignore_errors=True)
    if cam and (folder / "cam").exists() and not (folder / "cam").is_dir() and not earlier:
        raise UserError(f"{folder / 'cam'} is a file: --cam writes its overlays in a cam/ "
                        "folder there", hint="predict into another --name, or move the file")
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    report = PredictReport(folder=folder, model=im.source, predicted=0, skipped=skipped,
                           seconds=0.0, output=staging / f"predictions.{fmt}")
    try:
        for_grid = _write_predictions(report, im, images, fmt=fmt, top_k=top_k,
                                      batch_size=batch_size, cam=cam, tta=tta,
                                      grid_max=grid_max if grid else 0, show=show)
    except BaseException:
        _discard(staging, folder, new=not reused)
        raise
    if report.predicted == 0:
        _nothing_predicted(report, staging, kept=bool(earlier), new=not reused)
    report.replaced = remove_entries(earlier)
    _move_into(staging, folder)
    report.output = folder / report.output.name
    write_skipped(folder / "skipped.csv", report.skipped)
    if cam:
        report.cam_folder = folder / "cam"
    if grid:
        report.grid = folder / "grid.png"
        contact_sheet(report.grid, for_grid, im.channels, total=report.predicted)
    return report


def _move_into(source: Path, target: Path) -> None:
    """Move ``source``'s entries into ``target`` (a folder of the user's own with a cam/ of
    its own gets ours beside its files), then remove ``source``."""
    for entry in source.iterdir():
        dest = target / entry.name
        if entry.is_dir() and dest.is_dir():  # a link to a folder: written through, as before
            _move_into(entry, dest)
        else:
            os.replace(entry, dest)
    source.rmdir()


def _discard(staging: Path, folder: Path, new: bool) -> None:
    """A predict without results: its staging folder goes, and a folder it made, if empty."""
    shutil.rmtree(staging, ignore_errors=True)
    if new:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def _nothing_predicted(report: PredictReport, staging: Path, kept: bool, new: bool) -> None:
    """Raise the error for a predict without results, leaving an earlier predict's files as
    they were; skipped.csv only where nothing is kept, a new folder only if it holds that."""
    listed = None
    if report.skipped and not kept:
        listed = report.folder / "skipped.csv"
        write_skipped(listed, report.skipped)
    _discard(staging, report.folder, new)
    message = _nothing_message(report.skipped, listed)
    if kept:
        message += f"\nthe earlier predictions in {report.folder} are left as they were"
    raise UserError(message, hint=f"pass image files, folders or globs ({IMAGE_KINDS})")


# what a predict writes in its folder: a reused one (--exist-ok) loses the earlier files,
# so predictions.csv of one run never sits beside predictions.json of another
PREDICT_FILES = ("predictions.csv", "predictions.json", "skipped.csv", "grid.png", "cam")
STAGING_PREFIX = ".predicting-"  # this predict's files until it has results


def _earlier_predictions(folder: Path, images: Sequence[ImageSource]) -> list[Path]:
    """An earlier predict's files in a reused folder (--exist-ok), replaced once this one
    has results. Only a folder that shows one (its predictions file) is cleared, and never
    over the images being predicted: a folder of the user's own with a cam/ or grid.png in it
    was emptied."""
    if not any((folder / f"predictions.{fmt}").is_file() for fmt in ("csv", "json")):
        return []
    entries = [Path(os.path.abspath(folder / name)) for name in PREDICT_FILES]
    for image in images:
        file = Path(os.path.abspath(image.file))
        inside = next((e for e in entries if file == e or e in file.parents), None)
        if inside is not None:
            raise UserError(f"{image.file} is in {inside}, which --exist-ok would replace",
                            hint="predict into another --name, or move the images")
    return entries


def _nothing_message(skipped: Sequence[Skipped], listed: Path | None, shown: int = 10) -> str:
    if not skipped:
        return "nothing could be predicted: no files were found"
    where = f" (listed in {listed})" if listed else ""
    lines = [f"nothing could be predicted: all {len(skipped)} file(s) were skipped{where}:"]
    lines += skipped_lines([(s.path, s.reason) for s in skipped], shown)
    return "\n".join(lines)
