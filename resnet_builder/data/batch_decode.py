"""Batches of image files or encoded bytes -> uint8 batches, never failing: a fast attempt,
and a careful decoder only for a batch where that failed.

``batch_decoder`` is the failure-safe transform the streaming sources share (a folder's
store and the guard's redo, packed TFRecords, ``predict`` through ``decode_or_skip``): a
file that cannot be decoded becomes a zero image with label -1 in its own place (batches
keep their size and order, so shards stay aligned and a resumed epoch repeats exactly) and
(key, reason) goes to a ``SkipLog``.

Keeping places needs a ``tf.data`` dataset (only a dataset catches an op's error), and a
nested per-image map whose failures are dropped ran ~20% slower than a plain ``map_fn``
over the batch. So a batch is first decoded by that ``map_fn`` inside a one-element nested
dataset, which loses the whole batch on one failure; only then does one Python call decode
that batch's images one by one (Pillow for the ones that fail). Files known to need Pillow
(``SkipLog.needed_pillow``, or ``decode.needs_pil`` on bytes) and padding places are left
out of the attempt and go to Pillow in that call. It is a ``tf.numpy_function`` because the
careful decoder's graph (``careful_decoder``: each image in a nested map, the failed places
by Pillow) in a never-taken ``tf.cond`` branch still cost ~10% of every batch (measured
below). ``careful_decoder`` alone is ``guarded``'s redo.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from resnet_builder.data.crops import DecoderAugment
from resnet_builder.data.decode import (
    BATCHES_AT_ONCE,
    DECODE_THREADS,
    SKIPPED_LABEL,
    native_decode_and_resize,
    needs_pil,
    pillow_rescue,
    rescue_in_python,
    without_autotune,
)
from resnet_builder.data.resizing import Resize
from resnet_builder.data.shards import plain
from resnet_builder.data.skips import SkipLog

# The graph functions here are marked ``plain`` (no AutoGraph): its conversion of them was
# most of a streamed folder's time to its first batch (~1.5 s, profiled).


def batch_decoder(how: Resize, channels: int, skips: SkipLog, *, from_files: bool,
                  taken: DecoderAugment | None = None, attempt: bool = True,
                  only_jpeg: bool = False) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """Graph function (keys int64 [b], sources string [b], labels int32 [b][, draws]) ->
    (uint8 [b, S, S, C], int32 [b]), never failing.

    ``sources`` are file paths (``from_files``) or encoded bytes; a negative key is a
    padding place (``tfrecord``): blank, -1, not recorded. With ``taken`` it takes ``draws``
    float32 [b, taken.columns] (``augment.decoder_draws``): each image is then its random
    resized crop taken from the file and / or mirrored where its draws say so.
    ``attempt`` False: the careful decoder alone (``guarded``'s redo, whose fast path just
    failed on the same batch). ``only_jpeg`` (a pack of JPEGs only): the attempt skips the
    format branch (``decode.by_format``); bytes of another format fail it, go to Pillow
    and, remembered, skip the attempt from then on.

    Measured (1,000 photos 500x375 as bytes -> 224, batch 64, 2 parallel calls, AVX512,
    4 alternating passes): careful decoder alone 1,096-1,130 images/s; with the attempt and
    the careful decoder in a ``tf.cond`` 1,195-1,253; with the attempt and a
    ``numpy_function`` behind it 1,266-1,382 (the attempt alone 1,358-1,400).
    """
    if not attempt:
        return careful_decoder(how, channels, skips, from_files=from_files, taken=taken)
    shape = (how.size, how.size, channels)

    @plain
    def native(source_and_draws: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        source, draws = source_and_draws
        contents = tf.io.read_file(source) if from_files else source
        return native_decode_and_resize(contents, how, channels, draws, taken, only_jpeg)

    redo = _rows_in_python(native, pillow_rescue(how, channels, skips, from_files=from_files,
                                                 taken=taken), shape)

    @plain
    def all_native(sources: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(native, (sources, draws), parallel_iterations=DECODE_THREADS,
                         fn_output_signature=tf.TensorSpec(shape, tf.uint8))

    @plain
    def decode_batch(keys: tf.Tensor, sources: tf.Tensor, labels: tf.Tensor,
                     draws: tf.Tensor | None = None) -> tuple:
        if draws is None:
            draws = tf.zeros([tf.shape(keys)[0], 0])
        left = _left_for_careful(keys, sources, skips, from_files)
        rows = tf.where(tf.logical_not(left))[:, 0]
        none = tf.data.Dataset.from_tensors(tf.zeros((0, *shape), tf.uint8))
        images = (tf.data.Dataset.from_tensors((tf.gather(sources, rows), tf.gather(draws, rows)))
                  .map(all_native).ignore_errors(log_warning=False)
                  .concatenate(none).take(1).get_single_element())
        decoded = tf.equal(tf.shape(images, out_type=tf.int64)[0], tf.size(rows, tf.int64))

        def careful_part() -> tuple[tf.Tensor, tf.Tensor]:
            got, found = tf.numpy_function(redo, [keys, sources, labels, draws, images, rows],
                                           [tf.uint8, tf.int32], stateful=True)
            return tf.ensure_shape(got, (None, *shape)), tf.ensure_shape(found, [None])

        return tf.cond(decoded & tf.logical_not(tf.reduce_any(left)),
                       lambda: (images, labels), careful_part)

    return decode_batch


def _left_for_careful(keys: tf.Tensor, sources: tf.Tensor, skips: SkipLog,
                      from_files: bool) -> tf.Tensor:
    """bool [b]: the places the attempt skips: padding (a negative key), files Pillow read
    before, and bytes whose header says only Pillow decodes them like ``predict``."""
    left = keys < 0
    left |= tf.ensure_shape(tf.numpy_function(skips.needed_pillow, [keys], tf.bool,
                                              stateful=True), [None])
    return left if from_files else left | needs_pil(sources)


def _rows_in_python(native: Callable[[tuple], tf.Tensor], rescue: Callable[..., tuple],
                    shape: tuple[int, int, int]) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The ``numpy_function`` behind ``batch_decoder``'s attempt: the attempt's ``images``
    put in their ``rows``, or, when the attempt failed (it then holds no images), each of
    those rows decoded alone by ``native``; Pillow (``rescue``) for the rows left out and
    the ones that failed. Eager ops, one image at a time, and no ``tf.function``: a graph
    traced here stayed alive with the ``numpy_function`` (~6 MiB per ``predict`` call that
    met an odd file). That makes a batch with a file broken in a new way slow: 64 photos
    with one broken took ~300 ms against 95 ms through a traced careful decoder (and the
    careful decoder called eagerly, tracing its map each time, ~315 ms); once known, the
    file skips the attempt. Pinned to the CPU, as ``decode.rescue_in_python``."""
    def redo(keys: np.ndarray, sources: np.ndarray, labels: np.ndarray, draws: np.ndarray,
             images: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, found = np.zeros((len(keys), *shape), np.uint8), labels.copy()
        to_pillow = np.setdiff1d(np.arange(len(keys)), rows).tolist()
        with tf.device("/CPU:0"):
            if len(images) == len(rows):
                out[rows] = images
            else:
                for row in rows.tolist():
                    try:
                        out[row] = native((tf.constant(sources[row]),
                                           tf.constant(draws[row]))).numpy()
                    except tf.errors.OpError:  # broken, or only Pillow decodes it right
                        to_pillow.append(row)
        decoded = rescue_in_python(rescue, to_pillow, keys, sources, draws, out)
        found[to_pillow] = np.where(decoded, labels[to_pillow], SKIPPED_LABEL)
        return out, found

    return redo


def careful_decoder(how: Resize, channels: int, skips: SkipLog, *, from_files: bool,
                    taken: DecoderAugment | None = None
                    ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """``batch_decoder`` without the attempt: the images are decoded by
    ``native_decode_and_resize`` in a nested parallel map whose failures ``ignore_errors``
    drops; the places left empty (a broken file, or one only Pillow reads like
    ``images.load_image``: ``needs_pil``) are decoded by Pillow, and if that fails too
    become zeros with label -1, their (key, reason) going to ``skips``.

    Why per batch: one dataset per image ran at 0.44x a bare map; ``BATCHES_AT_ONCE`` calls
    of ``DECODE_THREADS`` images each ran at 0.86x a flat map (AUTOTUNE at both levels: 0.69x).
    """
    shape = (how.size, how.size, channels)
    rescue = pillow_rescue(how, channels, skips, from_files=from_files, taken=taken)

    @plain
    def native(slot: tf.Tensor, source: tf.Tensor, draws: tf.Tensor
               ) -> tuple[tf.Tensor, tf.Tensor]:
        contents = tf.io.read_file(source) if from_files else source
        return slot, native_decode_and_resize(contents, how, channels, draws, taken)

    @plain
    def decode_batch(keys: tf.Tensor, sources: tf.Tensor, labels: tf.Tensor,
                     draws: tf.Tensor | None = None) -> tuple:
        count = tf.shape(keys, out_type=tf.int64)[0]
        if draws is None:
            draws = tf.zeros([count, 0])
        none = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int64),
                                             tf.zeros((0, *shape), tf.uint8)))
        slots, images = (
            tf.data.Dataset.from_tensor_slices((tf.range(count), sources, draws))
            .map(native, num_parallel_calls=DECODE_THREADS, deterministic=False)
            .ignore_errors(log_warning=False).batch(tf.maximum(count, 1))
            .concatenate(none).take(1).get_single_element())
        placed = tf.scatter_nd(slots[:, None], images,
                               tf.concat([[count], tf.constant(shape, tf.int64)], 0))
        found = tf.scatter_nd(slots[:, None], tf.ones_like(slots), [count]) > 0
        missing = tf.where(tf.logical_not(found))[:, 0]
        return rescued_in_place(rescue, missing, placed, keys, sources, labels, draws)

    return decode_batch


def rescued_in_place(rescue: Callable[..., tuple], missing: tf.Tensor, images: tf.Tensor,
                     keys: tf.Tensor, sources: tf.Tensor, labels: tf.Tensor,
                     draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(images, labels) of a batch with the rows ``missing`` (int64 [m]) decoded by
    ``rescue`` (``decode.pillow_rescue``) in their places; nothing is run when none are
    missing."""
    def rescued() -> tuple[tf.Tensor, tf.Tensor]:
        got, flags = tf.map_fn(
            lambda i: rescue(keys[i], sources[i], labels[i], draws[i]), missing,
            fn_output_signature=(tf.TensorSpec(images.shape[1:], tf.uint8),
                                 tf.TensorSpec([], tf.int32)))
        return (tf.tensor_scatter_nd_update(images, missing[:, None], got),
                tf.tensor_scatter_nd_update(labels, missing[:, None], flags))

    return tf.cond(tf.size(missing) > 0, rescued, lambda: (images, labels))


DECODE_CHUNK = 32  # elements per batch_decoder call when a source decodes element-wise


def decode_or_skip(dataset: tf.data.Dataset, how: Resize, channels: int, skips: SkipLog, *,
                   from_files: bool) -> tf.data.Dataset:
    """(key int64, source string, label int32) -> (uint8 [S, S, C], label int32), in order.

    ``batch_decoder`` over chunks of ``DECODE_CHUNK`` elements, in a parallel map: bad
    elements come out as zeros with label -1 and are recorded in ``skips``.
    """
    decode = batch_decoder(how, channels, skips, from_files=from_files)
    return (dataset.batch(DECODE_CHUNK)
            .map(decode, num_parallel_calls=BATCHES_AT_ONCE, deterministic=True).unbatch()
            .with_options(without_autotune()))
