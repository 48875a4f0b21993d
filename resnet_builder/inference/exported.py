"""Exported models (SavedModel, TFLite, ONNX) as ``InferenceModel``s for predict and evaluate.

An export holds the network but not what using it needs: the class names, the input
size and channels, the resize rule. ``resnet-builder export`` writes those to
``export.json`` beside the exports (``image_shape``, ``class_names``, ``resize``,
``crop_pct``, ``task``, ``threshold``; an export.json from before the resize rule means
``stretch``, from before ``task`` a multiclass model), with each
format's check against the Keras model. This module reads that file, opens the export
once (``export_formats.open_export``: a SavedModel through ``tf.saved_model.load``, TFLite
through ``tf.lite.Interpreter``, ONNX through onnxruntime) and checks that its input
agrees. An export whose check failed is refused: it does not compute what the Keras
model does. Grad-CAM and exporting again need the Keras model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resnet_builder.data.resizing import Resize
from resnet_builder.errors import UserError
from resnet_builder.inference.export_formats import FILES, agreement, open_export
from resnet_builder.inference.loading import InferenceModel

EXPORT_INFO = "export.json"  # written by export.py beside the exports


def export_kind(path: Path) -> str | None:
    """The format of the export at ``path`` (tflite also for int8), None if not an export.

    A folder ``export`` wrote (export.json, no model of its own) is a UserError naming
    the exports inside it.
    """
    suffix = path.suffix.lower()
    if suffix in (".tflite", ".onnx"):
        return suffix[1:]
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").exists():
        return "savedmodel"
    if (path / EXPORT_INFO).exists() and not any(path.glob("*.keras")):
        inside = [name for name in FILES.values() if (path / name).exists()]
        raise UserError(f"{path} is an export folder; pass one of its exports",
                        hint=f"e.g. --model {path / (inside or ['model.tflite'])[0]}")
    return None


def read_export_info(path: Path) -> dict[str, Any]:
    """export.json beside the export at ``path``, checked for the facts predict needs."""
    file = path.parent / EXPORT_INFO
    if not file.exists():
        raise UserError(f"{path} has no {EXPORT_INFO} beside it: an export's class names and "
                        "input size are in the export.json that `resnet-builder export` "
                        "writes next to it",
                        hint="keep the export in the folder export wrote it to, or pass the "
                             ".keras model")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        size, width, channels = (int(v) for v in info["image_shape"])
        names = [str(n) for n in info["class_names"]]
        Resize(size, info.get("resize", "stretch"), float(info.get("crop_pct", 0.875)))
        if info.get("task", "multiclass") not in ("multiclass", "multilabel"):
            raise ValueError(f"unknown task {info['task']!r}")
        float(info.get("threshold", 0.5))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{file} is not an export.json written by resnet-builder export "
                        f"({type(exc).__name__}: {exc})",
                        hint="export the model again") from None
    if size != width or channels not in (1, 3) or not names:
        raise UserError(f"{file}: image_shape {info['image_shape']} with {len(names)} classes "
                        "is not a square 1- or 3-channel classifier",
                        hint="export the model again")
    return info


def _check_record(info: dict[str, Any], path: Path) -> str:
    """The export's format as export.json records it (tflite or tflite-int8).

    An export whose check against the Keras model failed is refused, and so is a file the
    record does not name (left by an earlier export into the folder: another model's,
    perhaps, run with this record's labels and resize rule).
    """
    for fmt, result in info.get("exports", {}).items():
        if result.get("path") != path.name:
            continue
        if result.get("passed") is False:
            name, share = agreement(result)
            why = result.get("error") or f"{name} {share} under {result.get('threshold')}"
            raise UserError(f"{path} failed its check against the Keras model at export "
                            f"({why})", hint="export it again; a failed export does not "
                                             "compute what the model does")
        return fmt
    raise UserError(f"{path} is not among the exports its {EXPORT_INFO} records (it holds "
                    f"{', '.join(sorted(info.get('exports', {}))) or 'none'}): an earlier export "
                    "of perhaps another model", hint="export the model again, into this folder "
                                                    "or a new one")


def _check_input(runner: Any, path: Path, size: int, channels: int) -> None:
    """A TFLite or ONNX model must take the size and channels export.json says."""
    shape = getattr(runner, "input_shape", None)  # a SavedModel takes any size
    if shape is not None and list(shape[1:]) != [size, size, channels]:
        raise UserError(f"{path} takes input {shape[1:]} but its {EXPORT_INFO} says "
                        f"{[size, size, channels]}",
                        hint="the export.json beside it belongs to another export")


def load_exported(path: Path) -> InferenceModel:
    """An ``InferenceModel`` that runs the export at ``path`` (no Keras model)."""
    if not path.exists():
        raise UserError(f"model {path} does not exist", hint="check the path")
    kind = export_kind(path)
    if kind is None:
        raise UserError(f"{path} is not an export", hint="pass model.tflite, model.onnx or a "
                                                         "saved_model folder")
    info = read_export_info(path)
    fmt = _check_record(info, path)
    size, _, channels = (int(v) for v in info["image_shape"])
    try:
        runner = open_export(fmt, path)
    except UserError:
        raise
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
        raise UserError(f"cannot load the {fmt} export {path}: {type(exc).__name__}: {exc}",
                        hint="export the model again") from None
    _check_input(runner, path, size, channels)
    return InferenceModel(model=None, source=str(path), image_size=size, channels=channels,
                          labels=[str(n) for n in info["class_names"]], runner=runner,
                          kind=fmt, resize=info.get("resize", "stretch"),
                          crop_pct=float(info.get("crop_pct", 0.875)),
                          task=info.get("task", "multiclass"),
                          threshold=float(info.get("threshold", 0.5)))
