"""The batched decode pipeline: image files -> uint8 pixel batches, unreadable files kept apart.

Pixels are prepared by ``images.prepare_image`` with the size and channels stored
in the model, exactly as training prepared them. Files are decoded in a parallel
``tf.data`` map (``tf.numpy_function`` around ``prepare_image``), in order, and
batched, so only a few batches are in memory at a time. A file that cannot be
decoded becomes (index, reason); it never stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from resnet_builder.data.images import ImageError, prepare_image


def _unexpected(exc: BaseException) -> str:
    return f"cannot decode ({type(exc).__name__}: {exc})"


def decoded_batches(files: Sequence[os.PathLike | str], size: int, channels: int,
                    batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Batches of (indices of good files, uint8 images [b, S, S, C], [(index, reason)]).

    Files are decoded in a parallel tf.data map, in order; at most a few batches
    are in memory at once.
    """
    import tensorflow as tf

    if not files:
        return
    files = list(files)
    blank = np.zeros((size, size, channels), np.uint8)

    def load(index: np.ndarray) -> tuple[np.ndarray, np.bool_, bytes]:
        try:
            return prepare_image(files[int(index)], size, channels), np.bool_(True), b""
        except ImageError as exc:
            return blank, np.bool_(False), exc.reason.encode("utf-8", "replace")
        except Exception as exc:  # anything a decoder throws must skip only this file
            return blank, np.bool_(False), _unexpected(exc).encode("utf-8", "replace")

    def element(index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        image, ok, reason = tf.numpy_function(load, [index], [tf.uint8, tf.bool, tf.string],
                                              stateful=False)
        image.set_shape((size, size, channels))
        ok.set_shape(())
        reason.set_shape(())
        return index, image, ok, reason

    dataset = tf.data.Dataset.range(len(files))
    dataset = dataset.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    for index, image, ok, reason in dataset.as_numpy_iterator():
        good = ok.astype(bool)
        bad = [(int(i), r.decode("utf-8", "replace")) for i, r in
               zip(index[~good], reason[~good], strict=True)]
        yield index[good], image[good], bad
