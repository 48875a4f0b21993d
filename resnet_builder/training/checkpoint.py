"""The resume checkpoint: model and optimizer state plus the run's history, one file.

Everything a resumed run needs sits in a single ``.npz`` written to a
temporary name and renamed, so a run killed at any instant (even by SIGKILL
during the write) leaves either the previous complete checkpoint or the new
one. results.csv is rewritten from the history stored here when resuming, so
the two always agree.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from resnet_builder.errors import UserError
from resnet_builder.files import atomic_write_bytes

FORMAT_VERSION = 1


def _values(variables) -> list[np.ndarray]:
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def optimizer_state(optimizer) -> list:
    """The optimizer variables a checkpoint holds: the optimizer's own, without loss scaling.

    A float16 run wraps its optimizer in a ``LossScaleOptimizer`` whose loss scale
    is not part of what was learned; leaving it out lets a run resume under
    another precision (a GPU run on a CPU, and back). With ``optim.ema`` they include
    Keras' moving averages of the weights, while the model variables saved beside
    them are the raw weights (``ema.EmaWeights.raw``), so a resumed run is exact.
    Gradient accumulation sums never need saving: calls end on whole groups.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer.variables
    return optimizer.variables


def save_checkpoint(path: Path, model, optimizer, meta: dict[str, Any]) -> None:
    """Write model variables, optimizer variables and ``meta`` (JSON-able) atomically."""
    arrays = {f"model_{i}": v for i, v in enumerate(_values(model.variables))}
    arrays.update({f"opt_{i}": v for i, v in enumerate(_values(optimizer_state(optimizer)))})
    arrays["meta"] = np.frombuffer(
        json.dumps({"format": FORMAT_VERSION, **meta}).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


# What a damaged or foreign file raises from np.load (a file cut short: BadZipFile).
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _unreadable(path: Path, exc: Exception) -> UserError:
    """numpy's own words for a file that is no archive advise loading it with pickle:
    not something to pass on, so that case is named plainly."""
    reason = str(exc) or type(exc).__name__
    if "pickle" in reason:
        reason = "not a checkpoint archive"
    return UserError(f"checkpoint {path} cannot be read ({reason})",
                     hint="the file is damaged; start a new run (its last.keras, if intact, "
                          "can be its model.weights)", exit_code=2)


def read_meta(path: Path) -> dict[str, Any]:
    """Only the checkpoint's metadata (epoch, history, ...)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(bytes(data["meta"]).decode())
    except _UNREADABLE as exc:
        raise _unreadable(path, exc) from None


def _assign(variables, stored: list[np.ndarray], what: str, path: Path) -> None:
    if len(variables) != len(stored):
        raise UserError(f"checkpoint {path} holds {len(stored)} {what} variables but this "
                        f"run has {len(variables)}",
                        hint="resume with the run's own config.yaml (do not change the model)",
                        exit_code=2)
    for var, value in zip(variables, stored, strict=True):
        if tuple(var.shape) != value.shape:
            raise UserError(f"checkpoint {path}: {what} variable {var.path} has shape "
                            f"{value.shape}, expected {tuple(var.shape)}",
                            hint="resume with the run's own config.yaml", exit_code=2)
        var.assign(value)


def load_checkpoint(path: Path, model, optimizer) -> dict[str, Any]:
    """Restore model and optimizer variables from ``path``; returns its metadata.

    The optimizer must already be built over the same variables.
    """
    meta = read_meta(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            model_values = [data[f"model_{i}"] for i in range(_count(data, "model_"))]
            opt_values = [data[f"opt_{i}"] for i in range(_count(data, "opt_"))]
    except _UNREADABLE as exc:  # a damaged array after an intact meta
        raise _unreadable(path, exc) from None
    _assign(model.variables, model_values, "model", path)
    _assign(optimizer_state(optimizer), opt_values, "optimizer", path)
    return meta


def _count(data, prefix: str) -> int:
    return sum(1 for k in data.files if k.startswith(prefix))
