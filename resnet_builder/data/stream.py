"""Streaming image files: decoded in ``tf.data`` as the epoch asks, optionally kept once decoded.

A streamed split lists its files; ``file_images`` maps a batch of indices to (uint8
images, labels) with ``batch_decode.batch_decoder``, so a bad file becomes label -1 in its
place and is recorded, never a crash. With an ``ImageStore`` each image is decoded once and read
back afterwards:

* ``data.cache: true`` (when the split fits the memory budget): a zero-filled array, whose
  pages the system commits only as images are stored, so memory grows with what was read;
* ``data.cache: disk``: the same in a ``.npy`` memory map under
  ``<system temp>/resnet_builder_cache/``, named by a hash of data.path, the split's files
  (with each one's size and modification time), image_size and channels, so the next run
  (or the next epoch) reads decoded pixels from disk; an image overwritten in place gives a
  new cache file. A random-access file is used rather than ``tf.data.Dataset.cache``/
  ``snapshot``: those replay one fixed order, while every epoch here reads its own
  (seed, epoch) order. Old cache files are not deleted: remove the folder to reclaim space.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from resnet_builder.data.batch_decode import batch_decoder
from resnet_builder.data.crops import DecoderAugment
from resnet_builder.data.decode import (
    DECODE_THREADS,
    PILLOW_LABEL,
    SKIPPED_LABEL,
    SkipLog,
    native_decode_and_resize,
    pillow_rescue,
    rescue_in_python,
)
from resnet_builder.data.guarded import Finish
from resnet_builder.data.resizing import RESIZE_RULE_VERSION, Resize
from resnet_builder.errors import UserError

JPEG_NAMES = (".jpg", ".jpeg", ".jpe", ".jfif")  # lower case: the fast path's JPEG-only route
_NOT_YET = -2  # store state of an image not decoded yet; otherwise its label (>= 0)


class ImageStore:
    """Decoded images by index, in memory or in a file; ``state[i]`` is the label once stored.

    The file (``data.cache: disk``) is shared by the workers of one machine: each stores
    the images it decodes, and reads the others'.
    """

    def __init__(self, count: int, shape: tuple[int, int, int], path: Path | None = None):
        self.path = path
        if path is None:
            self.images = np.zeros((count, *shape), np.uint8)
            self.state = np.full(count, _NOT_YET, np.int32)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = _record(shape)
        if not path.exists():
            _create_store(path, count, kind)
        records = np.lib.format.open_memmap(path, "r+")
        if records.dtype != kind or records.shape != (count,):
            raise ValueError(f"cache file {path} holds another split; remove it")
        self.images, self.state = records["image"], records["state"]  # views of one file

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, states) of a batch of indices; a state < 0: not stored yet."""
        return np.asarray(self.images[indices]), np.asarray(self.state[indices], np.int32)

    def put(self, indices: np.ndarray, images: np.ndarray, labels: np.ndarray) -> np.int32:
        """Keep decoded images; a skipped one (label < 0) is tried again next time."""
        good = labels >= 0
        self.images[indices[good]] = images[good]
        self.state[indices[good]] = labels[good]
        return np.int32(0)

    @property
    def filled(self) -> int:
        return int(np.count_nonzero(self.state >= 0))


def _record(shape: tuple[int, int, int]) -> np.dtype:
    """One cache entry: its state (label once stored) and its pixels, side by side."""
    return np.dtype([("state", "<i4"), ("image", "u1", shape)])


def _create_store(path: Path, count: int, kind: np.dtype) -> None:
    """Make the empty cache file under a private name, then link it into place.

    Several workers on one machine share the cache (each fills the images it decodes):
    ``os.link`` fails if the name exists, so the first worker's file wins whole and a later
    one never truncates images another has stored (what opening with mode ``w+`` did).
    State and pixels live in one file so they can never come from different runs.
    """
    fresh = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        records = np.lib.format.open_memmap(fresh, "w+", kind, (count,))
        _reserve(fresh, path)
        records["state"] = _NOT_YET
        records.flush()
        del records
        with contextlib.suppress(FileExistsError):
            os.link(fresh, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()


def _reserve(fresh: Path, path: Path) -> None:
    """Claim the (sparse) file's blocks now: a disk without room then says so here, where a
    memory-mapped write into a page the disk cannot hold killed the process (SIGBUS)."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS or Windows
        return
    size = fresh.stat().st_size
    with open(fresh, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot
                return
            amount = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
            raise UserError(f"no room for the disk cache {path} ({amount}): "
                            f"{exc.strerror}", hint=f"free space in {path.parent.parent} (or "
                            "point TMPDIR at a bigger disk), or set data.cache: false") from None


def disk_store_path(root: str, files: list[str], how: Resize, channels: int) -> Path:
    """The cache file for one split: a hash of the folder, its files, the resize rule (with
    its version: caches made by an older rule are not reused) and channels.

    Each file's size and modification time are hashed too (one ``os.stat`` per file), so an
    image overwritten in place under the same name gives a new cache file, not stale pixels.
    """
    rule = f"{how.size}\0{how.mode}\0{how.crop_pct}\0{RESIZE_RULE_VERSION}"
    digest = hashlib.sha256(f"{root}\0{rule}\0{channels}\0".encode())
    for name in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(_file_stamp(name))
    return Path(tempfile.gettempdir()) / "resnet_builder_cache" / f"{digest.hexdigest()[:24]}.npy"


def _file_stamp(name: str) -> bytes:
    """A file's size and modification time (ns); a file gone already is marked as missing
    (its decode will be skipped and logged as for any unreadable file)."""
    try:
        stat = os.stat(name)
    except OSError:
        return b"missing\0"
    return f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode()


def file_images(files: list[str], labels: np.ndarray, how: Resize, channels: int,
                skips: SkipLog, store: ImageStore | None, taken: DecoderAugment | None = None
                ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """Graph function indices int64 [b] -> (uint8 [b, S, S, C], int32 [b] labels; -1 where
    the file is unusable). A whole batch at a time (``batch_decode.batch_decoder``).

    ``labels`` int32 [N, K] (multilabel rows): the labels are those rows, all -1 when unusable.
    ``taken`` (the crop and / or flip a decoder takes; no ``store``, which keeps resized
    images unaugmented): the function takes (indices, draws) and decodes each file's crop and
    flip (``batch_decoder``).
    """
    if labels.ndim == 2:
        return _label_rows(file_images(files, np.arange(len(files), dtype=np.int32), how,
                                       channels, skips, store, taken), labels)
    if taken is not None and store is not None:
        raise ValueError("a store keeps unaugmented images: the crop or flip cannot come "
                         "from the file")
    paths = tf.constant(files, tf.string)
    label_table = tf.constant(labels, tf.int32)
    # without a store this is guarded's redo, right after the fast path failed on the batch
    decode = batch_decoder(how, channels, skips, from_files=True, taken=taken,
                           attempt=store is not None)
    shape = (how.size, how.size, channels)

    def from_files(indices: tf.Tensor, *draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode(indices, tf.gather(paths, indices), tf.gather(label_table, indices), *draws)

    if store is None:
        return from_files

    def kept(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, states = tf.numpy_function(store.get, [indices], [tf.uint8, tf.int32],
                                           stateful=True)
        images, states = tf.ensure_shape(images, (None, *shape)), tf.ensure_shape(states, [None])
        new = tf.where(states < 0)[:, 0]

        def fresh() -> tuple[tf.Tensor, tf.Tensor]:
            wanted = tf.gather(indices, new)
            decoded, found = from_files(wanted)
            done = tf.numpy_function(store.put, [wanted, decoded, found], tf.int32,
                                     stateful=True)
            with tf.control_dependencies([done]):
                return (tf.tensor_scatter_nd_update(images, new[:, None], decoded),
                        tf.tensor_scatter_nd_update(states, new[:, None], found))

        images, states = tf.cond(tf.size(new) > 0, fresh, lambda: (images, states))
        # a stored state only says the file decoded: the label is today's (a CSV's labels
        # can change under the same files, and with them the disk cache's name stays)
        return images, tf.where(states >= 0, tf.gather(label_table, indices), states)

    return kept


def fast_file_images(files: list[str], labels: np.ndarray, how: Resize, channels: int,
                     skips: SkipLog, taken: DecoderAugment | None = None
                     ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """``file_images`` (no store) without its guard: indices [b] (and draws with ``taken``)
    -> (uint8 images, labels) by TensorFlow's kernels in one ``tf.map_fn``, failing as a
    whole when a file is broken or only Pillow reads it: the fast path of
    ``guarded.guarded_batches``, with ``file_images`` the safe one. Files that went to
    Pillow before (``skips``) are left as zeros labelled ``PILLOW_LABEL``, for
    ``pillow_places`` to fill, so a folder of rotated photos or with a broken file fails
    only the first time. When every file is named as a JPEG the images are decoded without
    the per-image format branch (``decode.by_format``); a PNG named .jpg then fails its
    batch once and goes to Pillow from then on (``SkipLog.note_redone``, run on each redo).

    Pillow is not called from here: with ``batch_decode.rescued_in_place`` (a ``map_fn`` in a
    ``tf.cond``) in this graph, never taken on a clean folder, the streamed pipeline ran
    at 486 images/s and 3.15 ms of CPU per image against 621 and 2.63 without it (9
    alternating passes, 1,000 photos -> 224, 2-core AVX2 EPYC).
    """
    if labels.ndim == 2:
        return _label_rows(fast_file_images(files, np.arange(len(files), dtype=np.int32), how,
                                            channels, skips, taken), labels)
    paths = tf.constant(files, tf.string)
    label_table = tf.constant(labels, tf.int32)
    shape = tf.TensorSpec((how.size, how.size, channels), tf.uint8)

    # A tf.cond choosing this per batch ran the map_fn in its branch slower than the format
    # branch it saved (1,483 against 1,589 images/s; without the cond 1,658), so it is fixed
    # per split.
    only_jpeg = all(name.lower().endswith(JPEG_NAMES) for name in files)
    skips.jpeg_only_files = files if only_jpeg else None

    def native(path_and_draws: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        path, draws = path_and_draws
        return native_decode_and_resize(tf.io.read_file(path), how, channels, draws, taken,
                                        only_jpeg)

    def from_files(indices: tf.Tensor, *draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        known = tf.numpy_function(skips.needed_pillow, [indices], tf.bool, stateful=True)
        known = tf.ensure_shape(known, [None])
        rows = draws[0] if draws else tf.zeros([tf.shape(indices)[0], 0])
        plain, odd = tf.where(tf.logical_not(known))[:, 0], tf.where(known)[:, 0]
        images = tf.map_fn(native, (tf.gather(paths, tf.gather(indices, plain)),
                                    tf.gather(rows, plain)),
                           fn_output_signature=shape, parallel_iterations=DECODE_THREADS)
        places = tf.concat([tf.shape(indices, out_type=tf.int64), shape.shape.as_list()], 0)
        images = tf.cond(tf.size(odd) > 0,  # the native rows in place, Pillow's left empty
                         lambda: tf.scatter_nd(plain[:, None], images, places), lambda: images)
        found = tf.gather(label_table, indices)
        return images, tf.where(known, tf.constant(PILLOW_LABEL), found)

    return from_files


def pillow_places(files: list[str], labels: np.ndarray, how: Resize, channels: int,
                  skips: SkipLog, taken: DecoderAugment | None = None) -> Finish:
    """``guarded_batches``' ``finish`` for ``fast_file_images``: Python (args, images,
    labels) -> the places labelled ``PILLOW_LABEL`` decoded by Pillow
    (``decode.pillow_rescue``: the same resize, crop and flip as the safe decoder), with
    their labels, or zeros and -1 (recorded in ``skips``) where Pillow fails too."""
    rescue = pillow_rescue(how, channels, skips, from_files=True, taken=taken)
    paths = np.array(files, object)

    def finish(args: tuple, images: np.ndarray, found: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(args[0])
        rows = args[1] if len(args) > 1 else np.zeros([len(indices), 0], np.float32)
        images, found = images.copy(), found.copy()
        left = found == PILLOW_LABEL
        places = np.flatnonzero(left if left.ndim == 1 else left[:, 0]).tolist()
        decoded = rescue_in_python(rescue, places, indices, paths[indices], rows, images)
        for place, good in zip(places, decoded, strict=True):
            found[place] = labels[indices[place]] if good else SKIPPED_LABEL
        return images, found

    return finish


def _label_rows(lookup: Callable[..., tuple[tf.Tensor, tf.Tensor]], rows: np.ndarray
                ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A lookup whose label is the row index -> one whose label is that row (-1s if skipped):
    the decoder and the store keep their scalar labels."""
    table = tf.constant(rows, tf.int32)

    def with_rows(indices: tf.Tensor, *draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, found = lookup(indices, *draws)
        rows = tf.gather(table, tf.maximum(found, 0))
        # a skipped place's row is all -1, one left for Pillow all PILLOW_LABEL
        return images, tf.where(found[:, None] >= 0, rows, found[:, None] + 0 * rows)

    return with_rows
