"""Streaming image files: decoded in ``tf.data`` as the epoch asks, optionally kept once decoded.

A streamed split lists its files; ``file_images`` maps indices to (uint8 image, label)
with ``decode.skipping_decoder``, so a bad file becomes label -1 and is recorded, never a
crash. With an ``ImageStore`` each image is decoded once and read back afterwards:

* ``data.cache: true`` (when the split fits the memory budget): a zero-filled array, whose
  pages the system commits only as images are stored, so memory grows with what was read;
* ``data.cache: disk``: the same in a ``.npy`` memory map under
  ``<system temp>/resnet_builder_cache/``, named by a hash of data.path, the split's files,
  image_size and channels, so the next run (or the next epoch) reads decoded pixels from
  disk. A random-access file is used rather than ``tf.data.Dataset.cache``/``snapshot``:
  those replay one fixed order, while every epoch here reads its own (seed, epoch) order.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from resnet_builder.data.decode import SkipLog, skipping_decoder

_NOT_YET = -2  # store state of an image not decoded yet; otherwise its label (>= 0)


class ImageStore:
    """Decoded images by index, in memory or in a file; ``state[i]`` is the label once stored."""

    def __init__(self, count: int, shape: tuple[int, int, int], path: Path | None = None):
        self.path = path
        if path is None:
            self.images = np.zeros((count, *shape), np.uint8)
            self.state = np.full(count, _NOT_YET, np.int32)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state_path = path.with_suffix(".state.npy")
        fresh = not (path.exists() and state_path.exists())
        mode = "w+" if fresh else "r+"
        self.images = np.lib.format.open_memmap(path, mode, np.uint8, (count, *shape))
        self.state = np.lib.format.open_memmap(state_path, mode, np.int32, (count,))
        if fresh:
            self.state[:] = _NOT_YET

    def get(self, index: np.ndarray) -> tuple[np.ndarray, np.int32]:
        i = int(index)
        return np.asarray(self.images[i]), np.int32(self.state[i])

    def put(self, index: np.ndarray, image: np.ndarray, label: np.ndarray) -> np.int32:
        """Keep a decoded image; a skipped one (label < 0) is tried again next time."""
        i = int(index)
        if label >= 0:
            self.images[i] = image
            self.state[i] = label
        return np.int32(0)

    @property
    def filled(self) -> int:
        return int(np.count_nonzero(self.state >= 0))


def disk_store_path(root: str, files: list[str], size: int, channels: int) -> Path:
    """The cache file for one split: a hash of the folder, its files, size and channels."""
    digest = hashlib.sha256(f"{root}\0{size}\0{channels}\0".encode())
    for name in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return Path(tempfile.gettempdir()) / "resnet_builder_cache" / f"{digest.hexdigest()[:24]}.npy"


def file_images(files: list[str], labels: np.ndarray, size: int, channels: int, skips: SkipLog,
                store: ImageStore | None) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Graph function index -> (uint8 [S, S, C], int32 label; -1 when the file is unusable)."""
    paths = tf.constant(files, tf.string)
    label_table = tf.constant(labels, tf.int32)
    decode = skipping_decoder(size, channels, skips, from_files=True)
    shape = (size, size, channels)

    def from_file(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode(index, tf.gather(paths, index), tf.gather(label_table, index))

    if store is None:
        return from_file

    def kept(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, state = tf.numpy_function(store.get, [index], [tf.uint8, tf.int32],
                                         stateful=True)
        image, state = tf.ensure_shape(image, shape), tf.ensure_shape(state, [])

        def fresh() -> tuple[tf.Tensor, tf.Tensor]:
            decoded, label = from_file(index)
            done = tf.numpy_function(store.put, [index, decoded, label], tf.int32,
                                     stateful=True)
            with tf.control_dependencies([done]):
                return tf.identity(decoded), tf.identity(label)

        return tf.cond(state >= 0, lambda: (image, state), fresh)

    return kept
