"""``resnet-builder pack``: a class folder -> sharded TFRecord files and ``dataset.json``.

Packing is done once so training on big data needs no pass over it first: every
file is decoded here (with the ``folder`` source's Pillow reader, ``images``), files
that cannot be used are listed in ``skipped.csv`` and left out, and ``dataset.json``
holds what training needs up front (classes, counts, mean/std). The encoded bytes
are stored as they are on disk; ``image_size`` re-encodes (shorter side S, JPEG
quality 95) to make photo-size data smaller.

Training records are shuffled (seeded) before they are dealt into shards, so each
shard holds every class and a shuffle buffer of a few thousand records mixes well.
Each shard is written under a temporary name and renamed; ``dataset.json`` is
written last, so a reader that finds it finds whole shards. ``out`` may be any
``tf.io.gfile`` URL (``gs://...``); there the rename is a copy, which is safe
because readers trust ``dataset.json`` only.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from resnet_builder.config import DataConfig
from resnet_builder.data.bundle import ORDER_STREAM, STATS_STREAM, seeded_rng
from resnet_builder.data.decode import is_jpeg_bytes
from resnet_builder.data.folder import STATS_SAMPLE, folder_layout, list_files
from resnet_builder.data.images import ImageError, decode_image_bytes, resize_image, to_channels
from resnet_builder.data.pack_format import (
    DATASET_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    SHARD_PATTERN,
    SKIPPED_FILE,
    example_bytes,
    is_url,
    join,
    shard_name,
)
from resnet_builder.data.pack_lock import LOCK_FILE, writing_pack
from resnet_builder.data.splits import STATS_SIZE, ChannelStats
from resnet_builder.errors import UserError
from resnet_builder.files import atomic_path, temporary_for
from resnet_builder.runs import skipped_csv_text

JPEG_QUALITY = 95
CHUNK = 256  # images read ahead per step: memory stays at a chunk's encoded bytes


@dataclass
class Item:
    """One image to pack."""

    path: Path
    label: int
    relative: str  # path below FOLDER, as stored in the record
    sample: bool = False  # part of the mean/std sample


@dataclass
class PackReport:
    """What ``pack_folder`` wrote."""

    out: str
    class_names: list[str]
    counts: dict[str, int]  # records per split
    files: list[str] = field(default_factory=list)  # shard files, then skipped.csv, dataset.json
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return sum(self.counts.values()) / max(self.seconds, 1e-9)


def pack_folder(folder: str | os.PathLike, out: str, *, shards: int = 16,
                image_size: int | None = None, validation_split: float = 0.2, seed: int = 0,
                overwrite: bool = False,
                on_file: Callable[[str, int], None] | None = None) -> PackReport:
    """Pack ``folder`` (``<class>/images`` or ``train/`` + ``val/``) into ``out``.

    Without ``val/`` the validation split is made here, with the folder source's
    stratified split (``validation_split``, ``seed``): the same partition that
    ``data.source: folder`` makes with that fraction and ``hardware.seed``.
    ``on_file(name, records)`` is told about every file written.
    """
    if shards < 1:
        raise UserError(f"--shards must be at least 1, got {shards}", exit_code=2)
    start = time.perf_counter()
    root = check_paths(folder, out)
    class_names, splits, skipped = _plan(root, validation_split, seed)
    made_split = folder_layout(root)[1] is None  # no val/: the split is made here
    with _writing_to(out):
        out = _out_folder(out)
        with writing_pack(out):  # alone: no run reads it, no other pack writes it
            _clear_out(out, overwrite)
            report = PackReport(out, class_names, {}, skipped=skipped)
            train, val = splits
            _mark_sample(train, seed)
            val_shards = math.ceil(shards * len(val) / max(len(train) + len(val), 1))
            stats = {1: ChannelStats(1), 3: ChannelStats(3)}
            listing = {name: _write_split(name, items, count, image_size, stats, report,
                                          on_file)
                       for name, items, count in (("train", _pack_order(train, seed), shards),
                                                  ("val", val, val_shards))}
            _no_empty_class(class_names, listing["train"], root)
            _write_text(join(out, SKIPPED_FILE), skipped_csv_text(report.skipped))
            _say(report, SKIPPED_FILE, len(report.skipped), on_file)
            info = _dataset_info(class_names, listing, stats, image_size, root, seed,
                                 validation_split if made_split else None, len(report.skipped))
            _write_text(join(out, DATASET_FILE), json.dumps(info, indent=2) + "\n")
            _say(report, DATASET_FILE, sum(report.counts.values()), on_file)
            report.seconds = time.perf_counter() - start
            return report


class OutputRefused(UserError):
    """The system refused to write OUT. ``errno`` says why (None: unknown), so the CLI's
    hint can follow the reason, as it does for any other path the system refuses."""

    def __init__(self, out: str, reason: str, code: int | None) -> None:
        super().__init__(f"cannot write the pack to {out}: {reason}")
        self.errno = code


# tf.io.gfile keeps no errno; its error class says why (TensorFlow maps errno to these)
_REFUSALS: dict[type[tf.errors.OpError], int | None] = {
    tf.errors.NotFoundError: errno.ENOENT, tf.errors.FailedPreconditionError: None,
    tf.errors.ResourceExhaustedError: errno.ENOSPC,
    tf.errors.PermissionDeniedError: errno.EACCES, tf.errors.UnavailableError: None}


@contextmanager
def _writing_to(out: str) -> Iterator[None]:
    """tf.io.gfile's refusals to write OUT (not a folder, missing, read-only, full) are the
    user's to fix: one message naming OUT, not an OpError reported as a bug."""
    try:
        yield
    except tuple(_REFUSALS) as exc:
        code = _REFUSALS.get(type(exc))
        if "not a directory" in exc.message.lower():  # a failed precondition, among others
            code = errno.ENOTDIR
        raise OutputRefused(out, exc.message, code) from None


def check_paths(folder: str | os.PathLike, out: str) -> Path:
    """The source folder, checked before anything is printed or written: it must be a folder,
    and ``out`` must lie outside it (a pack inside the source would later be read as one
    more class folder, without images, by ``data.source: folder``)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"not a folder: {root}", hint="give a folder of class folders: FOLDER/"
                        "<class>/<images>, or FOLDER/train/<class>/ with FOLDER/val/<class>/")
    if not is_url(out):
        target, source = Path(out).expanduser().resolve(), root.resolve()
        if target.is_relative_to(source):
            where = "is" if target == source else "is inside"
            raise UserError(f"the output folder {out} {where} the source folder {folder}",
                            hint="choose an output folder outside the source folder (inside "
                            "it, the pack would be read as one more class folder)", exit_code=2)
    return root


def _plan(root: Path, validation_split: float,
          seed: int) -> tuple[list[str], tuple[list[Item], list[Item]], list[tuple[str, str]]]:
    """(class names, (train, val) items, files left out by the scan): the folder source's
    listing (``folder.list_files``: layout rules, scanner, stratified split)."""
    listing = list_files(DataConfig(source="folder", path=str(root),
                                     validation_split=validation_split), seed)

    def items(files: list[str], labels: np.ndarray) -> list[Item]:
        return [Item(Path(f), int(y), Path(f).relative_to(root).as_posix())
                for f, y in zip(files, labels, strict=True)]

    return listing.class_names, (items(*listing.train), items(*listing.val)), listing.skipped


def _out_folder(out: str) -> str:
    """``out`` created (local paths: ``~`` expanded), unless it is a file."""
    out = out if is_url(out) else str(Path(out).expanduser())
    if tf.io.gfile.exists(out) and not tf.io.gfile.isdir(out):
        raise UserError(f"{out} is a file", hint="give a folder (it is created if missing)")
    tf.io.gfile.makedirs(out)
    return out


def _clear_out(out: str, overwrite: bool) -> None:
    """Refused when ``out`` holds files (its lock file aside), unless ``overwrite``, which
    removes an earlier pack's files (only those, and temporary ones a killed pack left)."""
    present = [n.rstrip("/") for n in tf.io.gfile.listdir(out) if n != LOCK_FILE]
    if present and not overwrite:
        raise UserError(f"{out} is not empty ({len(present)} entries)",
                        hint="give an empty or new folder, or --overwrite to replace an "
                        "earlier pack there")
    def is_ours(name: str) -> bool:
        return name in (DATASET_FILE, SKIPPED_FILE) or bool(re.fullmatch(SHARD_PATTERN, name))

    ours = [n for n in present if is_ours(n) or is_ours(temporary_for(n) or "")]
    for name in sorted(ours, key=lambda n: n != DATASET_FILE):  # dataset.json first
        tf.io.gfile.remove(join(out, name))


def _mark_sample(train: list[Item], seed: int) -> None:
    """Mean/std are measured on the images the folder source samples (same seed and stream)."""
    picks = range(len(train))
    if len(train) > STATS_SAMPLE:
        picks = seeded_rng(seed, STATS_STREAM).choice(len(train), STATS_SAMPLE, replace=False)
    for i in picks:
        train[int(i)].sample = True


def _pack_order(train: list[Item], seed: int) -> list[Item]:
    """Training items in a seeded random order, so every shard holds every class."""
    return [train[int(i)] for i in seeded_rng(seed, ORDER_STREAM).permutation(len(train))]


def _write_split(name: str, items: list[Item], count: int, image_size: int | None,
                 stats: dict[int, ChannelStats], report: PackReport,
                 on_file: Callable[[str, int], None] | None) -> dict:
    """Write ``items`` into ``count`` shards (at most one per item) -> the split's listing."""
    count = min(count, len(items))
    per_class = dict.fromkeys(report.class_names, 0)
    formats = {"jpeg": 0, "other": 0}  # "other": 0 lets training skip the format check
    shards = []
    workers = min(32, 4 * (os.cpu_count() or 1))  # threads: Pillow and file reads release the GIL
    with ThreadPoolExecutor(workers) as pool:
        for k, part in enumerate(np.array_split(np.arange(len(items)), count) if count else []):
            file = shard_name(name, k, count)
            written = _write_shard(join(report.out, file), [items[i] for i in part], image_size,
                                   stats, report, pool, per_class, formats)
            size = tf.io.gfile.stat(join(report.out, file)).length  # the reader checks it
            shards.append({"file": file, "count": written, "bytes": size})
            _say(report, file, written, on_file)
    report.counts[name] = sum(s["count"] for s in shards)
    return {"count": report.counts[name], "per_class": per_class, "formats": formats,
            "shards": shards}


def _write_shard(path: str, items: list[Item], image_size: int | None,
                 stats: dict[int, ChannelStats], report: PackReport, pool: ThreadPoolExecutor,
                 per_class: dict[str, int], formats: dict[str, int]) -> int:
    """One shard, atomically; unreadable items go to ``report.skipped``. -> records written."""
    written = 0
    with _atomic_file(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            for item, result in zip(chunk, pool.map(lambda it: _encode(it, image_size), chunk),
                                    strict=True):
                if isinstance(result, ImageError):
                    report.skipped.append((str(item.path), result.reason))
                    continue
                data, small = result
                if small is not None:
                    stats[3].add(small)
                    stats[1].add(to_channels(small, 1))
                writer.write(example_bytes(data, item.label, item.relative))
                per_class[report.class_names[item.label]] += 1
                formats["jpeg" if is_jpeg_bytes(data) else "other"] += 1
                written += 1
    return written


def _encode(item: Item, image_size: int | None) -> tuple[bytes, np.ndarray | None] | ImageError:
    """(record bytes, the image at STATS_SIZE if sampled) or the reason it is left out.

    Decoding the whole file is the check: what the folder source can read, packs.
    """
    try:
        data = item.path.read_bytes()
        pixels = decode_image_bytes(data, 3, str(item.path))
    except ImageError as exc:
        return exc
    except OSError as exc:
        return ImageError(item.path, f"cannot read ({exc.strerror or exc})")
    if image_size is not None:
        data = _jpeg(pixels, image_size)
    return data, resize_image(pixels, STATS_SIZE) if item.sample else None


def _jpeg(pixels: np.ndarray, shorter: int) -> bytes:
    """JPEG (quality 95), the shorter side at most ``shorter`` (smaller images keep their size)."""
    img = Image.fromarray(pixels)
    scale = shorter / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _no_empty_class(class_names: list[str], train: dict, root: Path) -> None:
    """A class without one readable training image cannot be learned: stop before dataset.json."""
    empty = [name for name, n in train["per_class"].items() if n == 0]
    if empty:
        raise UserError(f"no readable training images for class(es) {', '.join(empty)} in "
                        f"{root}", hint=f"see {SKIPPED_FILE} beside the shards; fix or remove "
                        "those files and pack again with --overwrite")


def _dataset_info(class_names: list[str], listing: dict, stats: dict[int, ChannelStats],
                  image_size: int | None, root: Path, seed: int,
                  validation_split: float | None, skipped: int) -> dict:
    """The contents of dataset.json (see ``resnet_builder.data.tfrecord``)."""
    (mean3, std3), (mean1, std1) = stats[3].result(), stats[1].result()
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class_names": class_names,
            "splits": listing,
            "mean": {"rgb": mean3, "gray": mean1}, "std": {"rgb": std3, "gray": std1},
            "stats": {"images": stats[3].count // STATS_SIZE**2, "image_size": STATS_SIZE},
            "image_size": image_size, "source": str(root), "seed": seed,
            "validation_split": validation_split, "skipped": skipped}


def _say(report: PackReport, file: str, count: int,
         on_file: Callable[[str, int], None] | None) -> None:
    report.files.append(file)
    if on_file is not None:
        on_file(file, count)


@contextmanager
def _atomic_file(path: str) -> Iterator[str]:
    """A temporary name beside ``path``, renamed onto it on success (local: ``files.atomic_path``).

    ``files.py`` is pure Python, so URLs (``gs://``) get the same temp-and-rename here
    through ``tf.io.gfile``.
    """
    if not is_url(path):
        with atomic_path(path) as tmp:
            yield str(tmp)
        return
    tmp = f"{path}.tmp{os.getpid()}-{os.urandom(3).hex()}"
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def _write_text(path: str, text: str) -> None:
    with _atomic_file(path) as tmp, tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
