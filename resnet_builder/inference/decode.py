"""The batched decode pipeline: image files -> uint8 pixel batches, unreadable files kept apart.

Files go through the training pipeline's own decoder (``data.batch_decode.decode_or_skip``:
TensorFlow's kernels, Pillow for what they cannot read) and the resize rule stored in the
model (``data.resizing``), so a model sees pixels prepared exactly as in training. Files
are decoded in a parallel ``tf.data`` map, in order, and batched, so only a few batches are
in memory at a time. A file that cannot be decoded becomes (index, reason); it never stops
the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from resnet_builder.data.batch_decode import decode_or_skip
from resnet_builder.data.decode import SKIPPED_LABEL, SkipLog
from resnet_builder.data.resizing import Resize


def decoded_batches(files: Sequence[os.PathLike | str], how: Resize, channels: int,
                    batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Batches of (indices of good files, uint8 images [b, S, S, C], [(index, reason)])."""
    import tensorflow as tf

    if not files:
        return
    paths = [os.fspath(f) for f in files]
    skips = SkipLog()
    elements = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(paths), dtype=np.int64), tf.constant(paths, tf.string),
         np.zeros(len(paths), np.int32)))
    dataset = decode_or_skip(elements, how, channels, skips, from_files=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    reasons: dict[int, str] = {}
    start = 0
    for images, labels in dataset.as_numpy_iterator():
        index = np.arange(start, start + len(labels))
        start += len(labels)
        good = labels != SKIPPED_LABEL
        reasons.update(skips.take())  # a bad file is logged before its batch is handed out
        bad = [(int(i), reasons.pop(int(i))) for i in index[~good]]
        yield index[good], images[good], bad
