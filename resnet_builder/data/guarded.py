"""Batches decoded on a fast path, and decoded again safely only where that path failed.

``batch_decode.batch_decoder`` keeps every place of a batch by decoding its images in a nested
``tf.data`` map whose failures are dropped. That costs: on 2 cores any function a nested
dataset runs ran ~15% slower, and the whole streaming folder pipeline kept ~80% of a
``tf.map_fn`` over each batch in the pipeline's own parallel map (``bench/pipeline_stages.py``:
791 vs 992 images/s on 500x375 photos -> 224).

So a batch is first decoded by the plain ``map_fn`` (``stream.fast_file_images``), which
cannot catch one image's failure: a batch with a broken file, or one only Pillow reads,
fails as a whole, ``ignore_errors`` drops it, a ``scan`` sees its number missing at the next
batch (or at the end), and the safe decoder decodes it again in its place, through one
``tf.numpy_function`` per redone batch. The redo is a Python call because with the safe
decoder's graph in a never-taken ``tf.cond`` branch the pipeline ran at 590-810 images/s
instead of 970-1,000. Files the safe decoder gave to Pillow are remembered
(``SkipLog.needed_pillow``): in later batches the fast path leaves their places empty,
labelled ``decode.PILLOW_LABEL``, and the same Python call fills them with Pillow
(``stream.pillow_places``), so only an epoch that meets a bad file for the first time pays
a redo. Pillow is kept out of the fast path's graph: as a ``map_fn`` under a ``tf.cond``
there, never taken on a clean folder, it cost ~20% of every batch (``stream.fast_file_images``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from resnet_builder.data.decode import BATCHES_AT_ONCE, PILLOW_LABEL
from resnet_builder.data.shards import plain

Lookup = Callable[..., tuple[tf.Tensor, tf.Tensor]]
# (the lookups' arguments, images, labels) -> (images, labels) with the places labelled
# ``PILLOW_LABEL`` filled in (``stream.pillow_places``); plain Python, numpy in and out.
Finish = Callable[[tuple, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def guarded_batches(numbers: range, inputs: Callable[[tf.Tensor], tuple], fast: Lookup,
                    safe: Lookup, element_spec: tuple,
                    on_redo: Callable[[np.ndarray], None] | None = None,
                    finish: Finish | None = None) -> tf.data.Dataset:
    """Batches ``numbers`` of (images, labels), in order: ``fast(*inputs(n))`` in a
    parallel map, or ``safe(*inputs(n))`` where that failed. Places ``fast`` left for
    Pillow (label ``decode.PILLOW_LABEL``) are filled by ``finish``, in the same Python call
    as a redo.

    ``inputs(n)`` (int64 scalar -> the lookups' arguments) must give batch ``n`` again
    when asked twice; ``safe`` never fails (``batch_decode.batch_decoder``). ``element_spec``:
    the (images, labels) ``tf.TensorSpec``s of a batch; ``on_redo`` is told the first input
    (the keys) of each batch ``safe`` redoes. ``inputs`` runs in the parallel map: fed by
    a per-epoch dataset (``shards.run_rows``) this ran ~6% slower (971 vs 1,039)."""
    image_spec, label_spec = element_spec
    no_rows = ([0, *image_spec.shape[1:]], [0, *label_spec.shape[1:]])

    @plain
    def attempt(number: tf.Tensor) -> tuple:
        return (number, *fast(*inputs(number)))

    first, stop = numbers.start, max(numbers.stop, numbers.start)
    end = tf.data.Dataset.from_tensors(  # marks the end, so missing last batches show too
        (tf.constant(stop, tf.int64), tf.zeros(no_rows[0], image_spec.dtype),
         tf.zeros(no_rows[1], label_spec.dtype)))

    @plain
    def missing_before(expected: tf.Tensor, element: tuple) -> tuple:
        number = element[0]
        return number + 1, (tf.range(expected, number), *element)

    @plain
    def in_order(missing: tf.Tensor, number: tf.Tensor, images: tf.Tensor,
                 labels: tf.Tensor) -> tf.data.Dataset:
        """Empty stand-ins for the missing batches (redone one by one later, so a long run
        of failed batches is never held at once), then this batch."""
        k = tf.size(missing)
        stand_ins = tf.data.Dataset.from_tensor_slices(
            (missing, tf.zeros(tf.concat([[k], no_rows[0]], 0), image_spec.dtype),
             tf.zeros(tf.concat([[k], no_rows[1]], 0), label_spec.dtype), tf.ones([k], tf.bool)))
        this = tf.data.Dataset.from_tensors((number, images, labels, tf.constant(False)))
        return stand_ins.concatenate(this.take(tf.cast(number < stop, tf.int64)))

    filled = _filler(_redo_in_python(inputs, safe, on_redo, finish), element_spec,
                     finish is not None)

    return (tf.data.Dataset.range(first, stop)
            .map(attempt, num_parallel_calls=BATCHES_AT_ONCE, deterministic=True)
            .ignore_errors(log_warning=False).concatenate(end)
            .scan(tf.constant(first, tf.int64), missing_before).flat_map(in_order)
            .map(filled, num_parallel_calls=BATCHES_AT_ONCE, deterministic=True))


def _filler(redo: Callable[..., tuple], element_spec: tuple, finishing: bool
            ) -> Callable[..., tuple]:
    """The last map: (number, images, labels, again) -> (images, labels), through ``redo``
    where the batch failed (``again``) or, when ``finishing``, holds places left for Pillow.
    A ``tf.cond`` whose branch is one ``numpy_function`` costs nothing when not taken."""
    image_spec, label_spec = element_spec

    @plain
    def filled(number: tf.Tensor, images: tf.Tensor, labels: tf.Tensor,
               again: tf.Tensor) -> tuple:
        def redone() -> tuple:
            return tuple(tf.numpy_function(redo, [number, again, images, labels],
                                           [image_spec.dtype, label_spec.dtype], stateful=True))

        left = tf.reduce_any(tf.equal(labels, PILLOW_LABEL)) if finishing else False
        # the stand-ins are shaped at run time: without this the batches' spec lost the image
        # size, and the model's graph was traced for any size
        images, labels = tf.cond(again | left, redone, lambda: (images, labels))
        return tf.ensure_shape(images, image_spec.shape), tf.ensure_shape(labels, label_spec.shape)

    return filled


def _redo_in_python(inputs: Callable[[tf.Tensor], tuple], safe: Lookup,
                    on_redo: Callable[[np.ndarray], None] | None, finish: Finish | None
                    ) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The ``numpy_function`` that decodes batch ``number`` again with ``safe`` (``again``),
    or fills the places the fast path left for Pillow with ``finish``."""
    def redo(number: np.int64, again: np.bool_, images: np.ndarray, labels: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        args = inputs(tf.constant(number, tf.int64))
        if not again and finish is not None:
            return finish(args, images, labels)
        if on_redo is not None:
            on_redo(np.asarray(args[0]))
        images, labels = safe(*args)
        return np.asarray(images), np.asarray(labels)

    return redo
