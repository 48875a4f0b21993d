"""The ``npz`` source: your own arrays in a numpy ``.npz`` file, read without pickles.

Keys: ``x_train`` and ``y_train``, optionally ``x_val`` with ``y_val`` (else the
validation split is drawn from train) and ``class_names``. Images may be uint8,
bool or float (0..1 or 0..255), gray, RGB or RGBA (composited on white).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle
from resnet_builder.data.images import composite_on_white, to_channels
from resnet_builder.data.sources import bundle_from_arrays, required_path
from resnet_builder.errors import UserError


def npz_bundle(data: DataConfig, seed: int) -> DataBundle:
    """x_train/y_train (+ optional x_val/y_val, class_names) from an .npz, no pickles allowed."""
    path = required_path(data, "an .npz file with x_train and y_train")
    arrays = _read_arrays(path)
    missing = [name for name in ("x_train", "y_train") if name not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (has: "
                        f"{', '.join(sorted(arrays)) or 'nothing'})",
                        hint="the .npz needs x_train and y_train; x_val and y_val go together")
    x_train = _images(arrays["x_train"], "x_train", data.channels)
    y_train = _labels(arrays["y_train"], "y_train", len(x_train))
    val = None
    if "x_val" in arrays:
        x_val = _images(arrays["x_val"], "x_val", data.channels)
        val = (x_val, _labels(arrays["y_val"], "y_val", len(x_val)))
    names = _class_names(arrays, y_train, val[1] if val else None, path)
    return bundle_from_arrays(data, seed, names, (x_train, y_train), val)


_SAVEZ_HINT = "save with numpy.savez(path, x_train=..., y_train=...)"


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive. The first bytes say what the file is, so a lone .npy or
    another file gets its own message, never numpy's advice to allow pickles."""
    try:
        with open(path, "rb") as file:
            head = file.read(6)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}",
                        hint="set data.path to an .npz file; " + _SAVEZ_HINT) from None
    if head == b"\x93NUMPY":
        raise UserError(f"{path} holds a single array (numpy.save), not an .npz archive",
                        hint=_SAVEZ_HINT)
    if not head.startswith(b"PK"):  # a zip file's signature: .npz is a zip of .npy files
        raise UserError(f"{path} is not an .npz archive (numpy.savez writes one)",
                        hint=_SAVEZ_HINT)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: _member(archive, name, path) for name in archive.files}
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"cannot read {path} as .npz: {exc}", hint=_SAVEZ_HINT) from None


def _member(archive: NpzFile, name: str, path: Path) -> np.ndarray:
    """One array; an object array (stored as a pickle, which could run code) is refused."""
    try:
        return archive[name]
    except ValueError as exc:
        what = ("holds Python objects (pickled), which are never loaded" if "pickle" in str(exc)
                else f"cannot be read ({exc})")
        raise UserError(f"{name} in {path} {what}",
                        hint="store numbers (class_names as strings); " + _SAVEZ_HINT) from None


def _images(x: np.ndarray, name: str, channels: int) -> np.ndarray:
    """``N x H x W`` or ``N x H x W x C`` (C = 1, 3, 4), uint8 or float 0..1/0..255, to uint8."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise UserError(f"{name} has shape {x.shape}; expected N x H x W or N x H x W x C "
                        "with C = 1, 3 or 4 and N > 0")
    if x.dtype == np.uint8:
        pass  # as stored: nothing to check or convert (the check and copy took 0.27 s, CIFAR-size)
    elif x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise UserError(f"{name} contains NaN or infinite values")
        scale = 255.0 if x.max() <= 1.0 else 1.0
        x = np.clip(np.round(x * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise UserError(f"{name} has values outside 0..255 ({x.min()}..{x.max()})",
                            hint="store uint8 0..255 or float 0..1")
        x = x.astype(np.uint8)
    else:
        raise UserError(f"{name} has dtype {x.dtype}; expected uint8 or float")
    if x.shape[-1] == 4:
        x = composite_on_white(x)
    return to_channels(x, channels)


def _labels(y: np.ndarray, name: str, count: int) -> np.ndarray:
    """Integer class ids, shape N or N x 1."""
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != count:
        raise UserError(f"{name} has shape {y.shape}; expected {count} labels (one per image)")
    if not (np.issubdtype(y.dtype, np.integer) or
            (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise UserError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.min() < 0:
        raise UserError(f"{name} has negative class ids")
    return y.astype(np.int32)


def _class_names(arrays: dict[str, np.ndarray], y_train: np.ndarray,
                 y_val: np.ndarray | None, path: Path) -> list[str]:
    """``class_names`` from the file, else "0".."K-1" from the largest label. Labels must be
    0..K-1, each class with training images: a gap (or one stray large id) would add output
    units no image teaches, as the folder and CSV sources refuse."""
    top = int(max(y_train.max(), y_val.max() if y_val is not None and len(y_val) else 0))
    if "class_names" in arrays:
        names = [str(n) for n in arrays["class_names"].reshape(-1)]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UserError(f"class_names in {path} holds {', '.join(map(repr, twice))} more "
                            "than once", hint="give every class one name, in label order")
        if top >= len(names):
            raise UserError(f"labels go up to {top} but class_names has {len(names)} entries",
                            hint=f"labels are class ids 0..{len(names) - 1}, one per name")
    else:
        names = None
    count = len(names) if names is not None else top + 1
    _every_class_trained(np.unique(y_train), count, names, path)
    names = names if names is not None else [str(k) for k in range(count)]
    if len(names) < 2:
        raise UserError("the .npz has a single class; a classifier needs at least two")
    return names


def _every_class_trained(present: np.ndarray, count: int, names: list[str] | None,
                         path: Path, shown: int = 10) -> None:
    """Refuse classes 0..count-1 without a training label (``present``: sorted unique ids),
    naming the first ``shown``: walks only the ids present, so a stray id of 1,000,000 costs
    no 1,000,000-entry table."""
    if len(present) == count:
        return
    first, k = [], 0
    for label in [*present.tolist(), count]:
        first.extend(range(k, min(label, k + shown - len(first))))
        k = label + 1
        if len(first) >= shown:
            break
    listed = ", ".join(names[i] if names else str(i) for i in first)
    more = count - len(present) - len(first)
    listed += f" and {more} more" if more > 0 else ""
    raise UserError(f"no training images for class(es) {listed} in {path} (labels must be "
                    f"class ids 0..{count - 1}, each with training images)",
                    hint="renumber the labels 0..K-1 (numpy.unique(y, return_inverse=True)[1])"
                    + (" and drop unused class_names" if names else ""))
