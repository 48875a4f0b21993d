"""Exporting a trained classifier to SavedModel, TFLite (float and int8) and ONNX, checked.

Every export takes **raw pixels** (0..255, the model's channels): the model's own
normalisation layer is part of the exported graph, so no preprocessing is needed
beyond decoding and resizing the image.

* ``savedmodel``: ``saved_model/`` with signatures ``serving_default`` (float32
  images ``[B, H, W, C]`` of any height and width) and ``serve_uint8`` (the same for
  uint8). Images not of the model's size are resized inside the graph by the model's own
  rule (``data.resizing.fit_image``, as ``predict``). Outputs: ``probabilities`` [B, K],
  ``class_index`` [B], ``label`` [B]; multilabel: ``probabilities`` and ``positive``
  [B, K] (bool, at the model's threshold).
* ``tflite``: ``model.tflite``, float32 input ``[B, H, W, C]`` (B resizable), float32
  probabilities.
* ``tflite-int8``: ``model_int8.tflite``, full-integer quantisation calibrated on
  training images; uint8 input (raw pixels) and uint8 output; the quantisation
  (scale, zero point) of both is in ``export.json``.
* ``onnx``: ``model.onnx`` through tf2onnx (``pip install 'resnet-builder[onnx]'``),
  float32 input ``images`` ``[B, H, W, C]``.

Each export is run on sample images and compared with the Keras model before it
counts as done: the largest absolute difference of the probabilities and the top-1
agreement (multilabel: the share of images whose whole label set agrees at the
threshold), which must reach 99% (float) or 95% (int8). Sample images: the run's
validation images (calibration: its training images, ``DataBundle.sample_images``),
or ``--calibration FOLDER`` for both. ``labels.txt`` lists the class names in
output order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.images import find_images
from resnet_builder.data.sources import check_run_data_path
from resnet_builder.errors import UserError
from resnet_builder.files import atomic_write_bytes, write_json
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.export_formats import (
    FILES,
    FORMATS,
    ONNX_HINT,
    agreement,
    disk_size,
    run_export,
    write_export,
)
from resnet_builder.inference.loading import InferenceModel, load_inference_model
from resnet_builder.runs import (
    DEFAULT_PROJECTS,
    RunPaths,
    latest_run,
    output_folder,
    remove_entries,
)

THRESHOLDS = {"savedmodel": 0.99, "tflite": 0.99, "tflite-int8": 0.95, "onnx": 0.99}


# ------------------------------------------------------------------------- formats


def onnx_available() -> list[str]:
    """The missing packages of the onnx extra (empty when all are installed)."""
    return [name for name in ("tf2onnx", "onnx", "onnxruntime")
            if importlib.util.find_spec(name) is None]


def resolve_formats(formats: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """(formats to export in order, notes); ``all`` = every format whose packages exist; one
    name alone (``"tflite"``) is one format, not its letters."""
    wanted: list[str] = []
    notes: list[str] = []
    for f in ([formats] if isinstance(formats, str) else formats) or ("savedmodel",):
        f = f.lower()
        if f == "all":
            for g in FORMATS:
                if g == "onnx" and onnx_available():
                    notes.append(f"onnx left out of 'all': {', '.join(onnx_available())} not "
                                 f"installed ({ONNX_HINT})")
                    continue
                if g not in wanted:
                    wanted.append(g)
        elif f not in FORMATS:
            raise UserError(f"unknown export format {f!r}",
                            hint=f"use {', '.join(FORMATS)} or all")
        elif f not in wanted:
            wanted.append(f)
    if "onnx" in wanted and (missing := onnx_available()):
        raise UserError(f"ONNX export needs {', '.join(missing)}, which is not installed",
                        hint=ONNX_HINT)
    return wanted, notes


# ---------------------------------------------------------------------- sample images


@dataclass
class Samples:
    """Images (uint8, model size) to calibrate int8 on and to check exports with."""

    check: np.ndarray
    check_source: str
    calibration: np.ndarray | None = None
    calibration_source: str = ""
    skipped: list = field(default_factory=list)


def _run_config(source: Any) -> Path | None:
    """config.yaml of a run folder, or beside a .keras file in a run folder."""
    if source is None or not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    config = RunPaths(path).config if path.is_dir() else path.parent / "config.yaml"
    return config if config.exists() else None


def folder_images(folder: str | os.PathLike, im: InferenceModel, n: int
                  ) -> tuple[np.ndarray, list]:
    """Up to ``n`` images spread evenly over a folder's (sorted, recursive) image files."""
    files = find_images(folder)
    if not files:
        raise UserError(f"no images in --calibration {folder}",
                        hint="point it at a folder of training-like images (jpg, png, ...)")
    if len(files) > n:
        files = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    images, skipped = [], []
    for _good, pixels, bad in decoded_batches(files, im.resizing, im.channels, 64):
        images.append(pixels)
        skipped += [(str(files[i]), reason) for i, reason in bad]
    images = np.concatenate(images) if images else np.zeros((0,), np.uint8)
    if len(images) == 0:
        raise UserError(f"none of the images in --calibration {folder} could be read")
    return images, skipped


def sample_images(im: InferenceModel, *, config: Path | None, calibration: str | None,
                  n: int, need_calibration: bool) -> Samples:
    """Check (and calibration) images from --calibration, the run's config, or random."""
    if calibration is not None:
        images, skipped = folder_images(calibration, im, n)
        what = f"{len(images)} images from {calibration}"
        return Samples(images, what, images, what, skipped)
    if config is not None:
        try:
            return _config_samples(im, config, n)
        except UserError as exc:
            if need_calibration:
                raise UserError(f"cannot read the calibration images of {config}: "
                                f"{exc.message}",
                                hint="pass --calibration FOLDER with training-like images"
                                ) from None
            warnings.warn(f"checking on random images: the run's data cannot be read "
                          f"({exc.message})", stacklevel=2)
    elif need_calibration:
        raise UserError("tflite-int8 needs calibration images, and this model has no run "
                        "config.yaml beside it",
                        hint="pass --calibration FOLDER with training-like images, or export "
                             "a run folder")
    rng = np.random.default_rng(0)
    shape = (min(n, 64), im.image_size, im.image_size, im.channels)
    return Samples(rng.integers(0, 256, shape, dtype=np.uint8),
                   f"{shape[0]} random images (no data: pass --calibration FOLDER to check on "
                   "real ones)")


def _config_samples(im: InferenceModel, config: Path, n: int) -> Samples:
    from resnet_builder.config import load_config
    from resnet_builder.data import load_data

    cfg = load_config(config)
    d = cfg.data
    if (d.image_size, d.channels) != (im.image_size, im.channels):
        raise UserError(f"{config} prepares {d.image_size}x{d.image_size}x{d.channels} "
                        f"images, the model takes {im.image_size}x{im.image_size}x{im.channels}")
    check_run_data_path(d, config, fix="run this from the folder train ran in, or pass "
                                       "--calibration FOLDER")
    seed = 0 if cfg.hardware.seed is None else cfg.hardware.seed
    bundle = load_data(d, None, seed, im.task)
    calibration = bundle.sample_images(n)
    what = f"{len(calibration)} training images of {config} ({d.source})"
    check, check_what = calibration, what
    val = bundle.val_dataset(64)
    if val is not None:
        parts, got = [], 0
        for images, labels in val.as_numpy_iterator():
            readable = labels.reshape(len(labels), -1).min(axis=1) >= 0  # unreadable: -1, blank
            parts.append(images[readable].astype(np.uint8))
            got += int(readable.sum())
            if got >= n:
                break
        check = np.concatenate(parts)[:n]
        check_what = f"{len(check)} validation images of {config} ({d.source})"
    return Samples(check, check_what, calibration, what, skipped=bundle.take_skipped())


# ---------------------------------------------------------------------------- export


@dataclass
class ExportReport:
    folder: Path
    model: str
    results: dict[str, dict[str, Any]]
    samples: Samples
    notes: list[str]

    @property
    def failed(self) -> list[str]:
        return [f for f, r in self.results.items() if not r.get("passed")]


def compare(reference: np.ndarray, got: np.ndarray,
            threshold: float | None = None) -> dict[str, Any]:
    """Largest absolute difference of two probability arrays, and how often they agree:
    on the top-1 class, or for a multilabel model (``threshold``) on the whole label set
    at that threshold (an argmax says little about which labels a row gets)."""
    key = "top1_agreement" if threshold is None else "label_agreement"
    if got.shape != reference.shape:
        return {"max_abs_diff": None, key: 0.0,
                "error": f"output shape {list(got.shape)} != Keras {list(reference.shape)}"}
    if threshold is None:
        same = reference.argmax(1) == got.argmax(1)
    else:
        same = np.all((reference >= threshold) == (got >= threshold), axis=1)
    return {"max_abs_diff": round(float(np.max(np.abs(reference - got))), 8),
            key: round(float(np.mean(same)), 6)}


def export(model: Any = None, formats: str | Sequence[str] = ("savedmodel",), *,
           calibration: str | os.PathLike | None = None, samples: int = 200,
           output: str | os.PathLike | None = None,
           project: str | os.PathLike = DEFAULT_PROJECTS["export"], name: str = "exp",
           exist_ok: bool = False,
           on_done: Callable[[str, dict[str, Any]], None] | None = None) -> ExportReport:
    """Export ``model`` (object, .keras file, run folder; None = newest run) and check each.

    Writes the exports, labels.txt and export.json to ``output`` (else a new
    folder under ``project``); a failed export (an error, or a top-1 agreement
    under its threshold) is recorded and the others still run.
    """
    wanted, notes = resolve_formats(formats)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if model is None:
        model = latest_run()
    config = _run_config(model)
    im = load_inference_model(model)
    im.keras_model("export")  # an export cannot be exported again
    data = sample_images(im, config=config, calibration=None if calibration is None
                         else str(calibration), n=samples,
                         need_calibration="tflite-int8" in wanted)
    reference = np.concatenate([im.probabilities(data.check[i:i + 64])
                                for i in range(0, len(data.check), 64)])
    folder = output_folder(output, project, name, exist_ok)
    if removed := _clear_other_exports(folder, wanted):
        notes.append(f"removed {', '.join(removed)}, left by an earlier export into "
                     f"{folder}: export.json describes this export only")
    atomic_write_bytes(folder / "labels.txt", ("\n".join(im.labels) + "\n").encode())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="resnet-builder-export-") as tmp:
        for fmt in wanted:
            results[fmt] = _export_checked(fmt, im, folder / FILES[fmt], data, reference,
                                           Path(tmp))
            if on_done is not None:
                on_done(fmt, results[fmt])
    write_json(folder / "export.json", _summary(im, data, results, notes))
    return ExportReport(folder, im.source, results, data, notes)



def _clear_other_exports(folder: Path, wanted: Sequence[str]) -> list[str]:
    """Remove an earlier export's files of formats not asked for now from a reused folder:
    the new export.json would not describe them, and predict would run them with another
    model's labels. Only files the folder's export.json records: nothing else is ours."""
    try:
        earlier = json.loads((folder / "export.json").read_text()).get("exports", {})
    except (OSError, ValueError, AttributeError):
        return []
    recorded = {result.get("path") for result in earlier.values() if isinstance(result, dict)}
    return remove_entries(folder / file for fmt, file in FILES.items()
                          if fmt not in wanted and file in recorded)


def _export_checked(fmt: str, im: InferenceModel, target: Path, data: Samples,
                    reference: np.ndarray, workdir: Path) -> dict[str, Any]:
    """Write one format, run it on the check images and compare; a converter error fails it."""
    start = time.perf_counter()
    result: dict[str, Any] = {"path": FILES[fmt], "threshold": THRESHOLDS[fmt]}
    try:
        if target.is_dir():
            shutil.rmtree(target)
        result.update(write_export(fmt, im, target, data.calibration, workdir))
        result.update(compare(reference, run_export(fmt, target, data.check),
                              im.threshold if im.task == "multilabel" else None))
        result["images"] = len(data.check)
        result["passed"] = (result.get("error") is None
                            and agreement(result)[1] >= THRESHOLDS[fmt])
    except UserError:
        raise
    except Exception as exc:  # a converter failure fails this format, not the rest
        if os.environ.get("RESNET_BUILDER_DEBUG"):
            raise
        result.update(passed=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    result["seconds"] = round(time.perf_counter() - start, 3)
    if target.exists():
        result["bytes"] = disk_size(target)
    return result


def _summary(im: InferenceModel, data: Samples, results: dict[str, dict[str, Any]],
             notes: list[str]) -> dict[str, Any]:
    """What export.json holds."""
    return {
        "model": im.source,
        "image_shape": [im.image_size, im.image_size, im.channels],
        "class_names": im.labels,
        "resize": im.resize,  # how predict turns a file into the input (data.resizing)
        "crop_pct": im.crop_pct,
        "task": im.task,  # multilabel: sigmoid outputs, a label per probability >= threshold
        "threshold": im.threshold,
        "input_values": "raw pixels 0..255 (normalisation is inside every export)",
        "check_images": data.check_source,
        "calibration_images": data.calibration_source or None,
        "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
        "exports": results,
        "passed": all(r.get("passed") for r in results.values()),
        "notes": notes,
    }


def describe_result(fmt: str, r: dict[str, Any]) -> str:
    """One line per export for the terminal."""
    size = f"{r['bytes'] / 1024:.1f} KB, " if "bytes" in r else ""
    head = f"{fmt}: {r['path']} ({size}{r['seconds']:.1f} s)"
    if r.get("error"):
        return f"{head}: FAILED: {r['error']}"
    verdict = "ok" if r["passed"] else "FAILED"
    name, share = agreement(r)
    return (f"{head}: max |diff| {r['max_abs_diff']:.2e}, {name} "
            f"{100 * share:.1f}% on {r['images']} images "
            f"(needs {100 * r['threshold']:.0f}%): {verdict}")
