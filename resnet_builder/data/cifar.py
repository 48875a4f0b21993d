"""The cifar10/cifar100 sources: official python pickles, read so a tampered file cannot run code.

Where the data comes from, in order: ``data.path`` (the extracted folder, its parent,
or the ``.tar.gz``), the Keras cache (``$KERAS_HOME/datasets`` or ``~/.keras/datasets``,
in the layouts old and new Keras versions leave there), else a download of the
official archive into that cache, kept only when its md5 matches.

The batch files are pickles. They are read with ``_RestrictedUnpickler``, which admits
only numpy's array-rebuilding functions and plain containers; anything else (say
``os.system``) stops loading before it is called.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import DataBundle
from resnet_builder.data.images import to_channels
from resnet_builder.data.sources import bundle_from_arrays
from resnet_builder.errors import UserError

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 N x 32 x 32 x 3 images, int32 labels


@dataclass(frozen=True)
class CifarSpec:
    """Names, URL and checksum of one CIFAR variant."""

    folder: str  # name of the extracted folder
    archive: str  # official archive name (what we download to)
    url: str
    md5: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    keras_names: tuple[str, ...]  # what Keras's own loaders leave in the cache

    @property
    def needed(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


SPECS = {
    "cifar10": CifarSpec(
        "cifar-10-batches-py", "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
        "labels", "label_names",
        ("cifar-10-batches-py-target", "cifar-10-batches-py_extracted",
         "cifar-10-batches-py-target_archive", "cifar-10-batches-py.tar.gz")),
    "cifar100": CifarSpec(
        "cifar-100-python", "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), "test", "meta", "fine_labels", "fine_label_names",
        ("cifar-100-python-target", "cifar-100-python_extracted",
         "cifar-100-python-target_archive", "cifar-100-python.tar.gz")),
}


def load_cifar(source: str, path: str | None) -> tuple[list[str], Arrays, Arrays]:
    """(class names, train arrays, test arrays) for ``source`` = cifar10 or cifar100."""
    spec = SPECS[source]
    location = locate(spec, path)
    files = _read_files(spec, location)
    names = [_text(n) for n in _unpickle(files[spec.meta], spec.meta)[spec.names_key]]
    parts = [_batch(files[name], name, spec, len(names)) for name in spec.train]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return names, train, _batch(files[spec.test], spec.test, spec, len(names))


def cifar_bundle(data: DataConfig, seed: int) -> DataBundle:
    """The ``cifar10``/``cifar100`` sources as a bundle; val = the official test batch."""
    names, train, test = load_cifar(data.source, data.path)
    train = (to_channels(train[0], data.channels), train[1])
    test = (to_channels(test[0], data.channels), test[1])
    return bundle_from_arrays(data, seed, names, train, test)


def keras_home() -> Path:
    """The Keras cache folder: $KERAS_HOME, else ~/.keras (/tmp/.keras if home is read-only)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def locate(spec: CifarSpec, path: str | None) -> Path:
    """The extracted folder or the archive to read: data.path, the cache, else a download."""
    if path:
        given = Path(path).expanduser()
        if not given.exists():
            raise UserError(f"data.path not found: {given}", hint=placement_hint(spec))
        return given / spec.folder if (given / spec.folder).is_dir() else given
    cache = keras_home() / "datasets"
    for candidate in _cache_candidates(spec, cache):
        if candidate.is_file() or (candidate / spec.test).is_file():
            return candidate
    target = cache / spec.archive
    download(spec.url, target, spec.md5, placement_hint(spec, target))
    return target


def _cache_candidates(spec: CifarSpec, cache: Path) -> list[Path]:
    """Folders, then archives: ours first, then Keras's layouts (old and new)."""
    folders = [cache / spec.folder] + [cache / name / spec.folder for name in spec.keras_names]
    return folders + [cache / spec.archive] + [cache / name for name in spec.keras_names]


def placement_hint(spec: CifarSpec, target: Path | None = None) -> str:
    """Where to put a CIFAR file by hand."""
    target = target or keras_home() / "datasets" / spec.archive
    return (f"download {spec.url} and put it at {target} (or extract it there, giving "
            f"{target.parent / spec.folder}/), or set data.path to the .tar.gz or the "
            f"extracted {spec.folder} folder")


def download(url: str, target: Path, md5: str, hint: str) -> None:
    """Fetch ``url`` to ``target`` via a temporary file, keeping it only if the md5 matches."""
    partial = target.with_name(target.name + ".part")
    log.info("downloading %s to %s", url, target)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
    except (OSError, ValueError) as exc:  # URLError, timeouts and disk errors are OSErrors
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"could not download {url} ({reason})", hint=hint) from None
    if digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise UserError(f"download of {url} is corrupt: md5 {digest.hexdigest()}, "
                        f"expected {md5}", hint="try again; " + hint)
    os.replace(partial, target)


def _read_files(spec: CifarSpec, location: Path) -> dict[str, bytes]:
    """The batch and meta files' bytes, from the extracted folder or straight from the archive."""
    if location.is_dir():
        present = {p.name: p for p in location.iterdir() if p.is_file()}
        _complete(spec, location, present)
        return {name: present[name].read_bytes() for name in spec.needed}
    try:
        with tarfile.open(location, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            _complete(spec, location, members)
            return {name: _member_bytes(tar, members[name]) for name in spec.needed}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{location} is not a readable CIFAR archive ({exc})",
                        hint=placement_hint(spec)) from None


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """One archive member's content, read without extracting anything to disk."""
    handle = tar.extractfile(member)
    assert handle is not None  # members are regular files
    return handle.read()


def _complete(spec: CifarSpec, location: Path, available: dict[str, Any]) -> None:
    """Name the batch files that are missing, if any."""
    missing = sorted(set(spec.needed) - set(available))
    if missing:
        raise UserError(f"{location} is not a complete {spec.folder} folder or archive: "
                        f"missing {', '.join(missing)}", hint=placement_hint(spec))


def _batch(raw: bytes, name: str, spec: CifarSpec, num_classes: int) -> Arrays:
    """(uint8 N x 32 x 32 x 3 images, int32 labels) from one batch file, checked."""
    batch = _unpickle(raw, name)
    pixels, labels = batch.get("data"), batch.get(spec.label_key)
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == 3072):
        raise UserError(f"CIFAR file {name} has no uint8 N x 3072 'data' array",
                        hint="delete it and download the official archive again")
    ids = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if ids.shape != (len(pixels),) or (len(ids) and (ids.min() < 0 or ids.max() >= num_classes)):
        raise UserError(f"CIFAR file {name} has bad {spec.label_key!r} "
                        f"(need {len(pixels)} ids in 0..{num_classes - 1})",
                        hint="delete it and download the official archive again")
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes R, G, B -> HWC
    return np.ascontiguousarray(images), ids.astype(np.int32)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR file never contains."""


def _numpy_attr(name: str, *modules: str) -> Any:
    """The first ``module.name`` that exists (numpy 2 moved numpy.core to numpy._core)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Exactly what CIFAR pickles reference: numpy array rebuilding and plain containers."""
    reconstruct = _numpy_attr("_reconstruct", "numpy._core.multiarray", "numpy.core.multiarray")
    frombuffer = _numpy_attr("_frombuffer", "numpy._core.numeric", "numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_encode,
                                           ("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    for module in ("builtins", "__builtin__"):
        for kind in (dict, list, tuple, bytes, bytearray, str, int, float):
            allowed[(module, kind.__name__)] = kind
    return {key: value for key, value in allowed.items() if value is not None}


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global outside ``_allowed_globals`` so a tampered file cannot run code."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return found


def _unpickle(raw: bytes, name: str) -> dict[str, Any]:
    """A CIFAR pickle (keys turned into str) via the restricted unpickler."""
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise UserError(f"CIFAR file {name} refers to {exc}, which no CIFAR file does; "
                        "refusing to load it (it may have been tampered with)",
                        hint="delete it and download the official archive again") from None
    except Exception as exc:  # a malformed pickle can fail in many ways
        raise UserError(f"CIFAR file {name} is not a valid batch file ({exc})",
                        hint="delete it and download the official archive again") from None
    if not isinstance(loaded, dict):
        raise UserError(f"CIFAR file {name} does not hold a dict",
                        hint="delete it and download the official archive again")
    return {_text(k): v for k, v in loaded.items()}


def _text(value: Any) -> str:
    """bytes (Python 2 pickles) or str to str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
