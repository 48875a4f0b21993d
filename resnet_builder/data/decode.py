"""Encoded images -> uint8 pixels inside ``tf.data``, with TensorFlow's kernels, never stopping.

Training, ``predict``, ``evaluate`` and ``data.verify`` all decode here, then resize with
the one rule of ``resizing.fit_image``, so a model sees the pixels it was trained on.
Decoded pixels match ``images.load_image`` (Pillow): JPEGs are decoded with the accurate
integer DCT (bit-identical to Pillow's libjpeg), alpha is composited on white with the same
integer rounding, RGB -> gray uses the same luma formula.

What TensorFlow decodes differently goes through Pillow in ``tf.numpy_function``, told
apart in the graph by the header bytes (``needs_pil``): PNGs that are not 8 bits deep
(16-bit is scaled with rounding, not cut) or palette PNGs with transparency, GIFs (palette
transparency, first frame), BMPs that are not 24-bit, WebP and TIFF, and any file with an
EXIF rotation. CMYK JPEGs stay native: TensorFlow's pixels are within 1 level of Pillow's
(about half of the values differ by 1, measured on a 64x64 image), and training and predict
both decode them here, so they agree with each other.

``native_decode_and_resize`` is the per-image decode of the streaming sources' batch
decoders (``batch_decode``, ``stream.fast_file_images``), which fails where Pillow must
decode; ``pillow_rescue`` is that Pillow decode, with the same resize, crop and flip.

Crops are taken while decoding (``decode_fitted``: a JPEG's centre window alone, the same
pixels; ``decode_cropped``: random resized crops from the files), and so is the training
flip (``crops.DecoderAugment``). Pipelines here run with tf.data's autotuner off.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from resnet_builder.data.crops import DecoderAugment, box_window, crop_boxes
from resnet_builder.data.images import ImageError, decode_image_bytes, load_image
from resnet_builder.data.resizing import (
    Resize,
    centre_window,
    decode_jpeg_for,
    decode_jpeg_window,
    fit_image,
    resample,
    shrink_factor,
)
from resnet_builder.data.skips import SkipLog
from resnet_builder.runtime import cpu_count

SKIPPED_LABEL = -1  # label of an element whose file could not be decoded
PILLOW_LABEL = -2  # label of a place the fast path left for Pillow (``guarded`` fills it)
# Images one batch_decoder call decodes at once: the cores this process may use (nested
# tf.data maps are not autotuned, and AUTOTUNE there measured slower).
DECODE_THREADS = cpu_count()
HEADER_BYTES = 4096  # searched for EXIF orientation and a PNG tRNS chunk


def without_autotune() -> tf.data.Options:
    """Options for a pipeline that decodes through ``batch_decoder``: tf.data's autotuner
    off (AUTOTUNE maps then run on every core, prefetch buffers still grow). With it on, a
    pass over 600 photos ran at ~410 images/s on one core or ~700 on both, at random (8
    passes, 2 cores; off: 8 of 8 at ~700); a flat decode + resize map also switched (891 or
    1,246; off: 1,279). Static rewrites are off too (they ran at each epoch's iterator:
    a 1,797-image epoch 77 -> 65 ms; photos at 224: 1,078-1,088 -> 1,107-1,129 images/s)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return options

_JPEG = b"\xff\xd8\xff"
# What only Pillow decodes like ``images.load_image``, as one RE2 match over the header
# (``\C`` is any byte; the pattern itself stays ASCII, so RE2 reads it as bytes):
_NEEDS_PIL = (
    r"(?s)(?:"
    r"\CPNG\r\n\x1a\n\C{16}(?:[^\x08]|\x08\x03\C*tRNS)"  # not 8 bits deep; palette + tRNS
    r"|GIF"  # palette transparency, first frame
    r"|BM\C{26}(?:[^\x18]|\x18[^\x00])"  # a BMP that is not 24-bit
    r"|RIFF\C{4}WEBP|II\*\x00|MM\x00\*"  # WebP; TIFF (either byte order)
    # EXIF orientation 2-8 (tag 0x0112, SHORT, count 1), either byte order, anywhere:
    r"|\C*(?:\x12\x01\x03\x00\x01\x00\x00\x00[\x02-\x08]\x00"
    r"|\x01\x12\x00\x03\x00\x00\x00\x01\x00[\x02-\x08])"
    r")\C*")


def needs_pil(contents: tf.Tensor) -> tf.Tensor:
    """Bool (per element of ``contents``): whether these bytes must go through Pillow to
    match ``images.load_image``.

    PNGs not 8 bits deep (16-bit is scaled with rounding, not cut) or palette PNGs with
    transparency, GIFs, BMPs that are not 24-bit, WebP and TIFF (TensorFlow reads no TIFF,
    and its WebP decoder is not the one predict uses), and any image whose EXIF says it is
    rotated (orientation 2-8, the values Pillow's ``exif_transpose`` turns). Two ops: each
    op in a tf.data map costs ~10 us per image on this machine, and the check written with
    ``tf.strings`` ops (30 of them) cost 350 us per image, a third of a JPEG's decode.
    """
    header = tf.strings.substr(contents, 0, HEADER_BYTES)
    return tf.strings.regex_full_match(header, _NEEDS_PIL)


def decode_native(contents: tf.Tensor, how: Resize, channels: int = 0,
                  only_jpeg: bool = False) -> tf.Tensor:
    """uint8 [H, W, C] with TensorFlow's decoders (content decides the format); JPEGs
    DCT-scaled as far as ``how`` allows (``resizing.decode_jpeg_for``).

    ``channels`` 0 keeps the file's channels (1..4); 1 or 3 converts by ``to_channels``,
    except that a JPEG asked for 3 comes from libjpeg as RGB directly (gray replicated,
    CMYK converted: the same pixels, fewer ops on the hot path). ``only_jpeg``: see
    ``by_format``.
    """
    def jpeg() -> tf.Tensor:
        return _jpeg_channels(decode_jpeg_for(contents, how, _jpeg_asks(channels)), channels)

    image = by_format(contents, only_jpeg, jpeg, lambda: _decode_other(contents, channels))
    return tf.ensure_shape(image, [None, None, channels or None])


def by_format(contents: tf.Tensor, only_jpeg: bool, jpeg: Callable[[], tf.Tensor],
              other: Callable[[], tf.Tensor]) -> tf.Tensor:
    """``jpeg()`` for JPEG bytes, ``other()`` for the rest; with ``only_jpeg`` (files named
    as JPEGs: ``stream.fast_file_images``) ``jpeg()`` alone, which fails on other bytes in
    ``extract_jpeg_shape``. Every op of an untaken ``tf.cond`` branch still runs in a tf.data
    map, as a dead op: without the format branch the fast path's ``map_fn`` decoded 500x375
    photos to 224 at 1,658 images/s against 1,589, and the streamed training pipeline ran at
    1,368-1,397 against 1,283-1,322 (alternating processes, 3 passes each)."""
    return jpeg() if only_jpeg else tf.cond(is_jpeg(contents), jpeg, other)


def is_jpeg(contents: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(contents, 0, 3), _JPEG)


def is_jpeg_bytes(contents: bytes) -> bool:
    """``is_jpeg`` in Python (``pack`` counts the JPEG records)."""
    return contents[:3] == _JPEG


def _jpeg_asks(channels: int) -> int:
    """The channels to ask libjpeg for: RGB directly when RGB is wanted, else as stored."""
    return 3 if channels == 3 else 0


def _jpeg_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    return image if channels in (0, 3) else to_channels(image, channels)


def _decode_other(contents: tf.Tensor, channels: int) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    return to_channels(image, channels) if channels else image


def decode_fitted(contents: tf.Tensor, how: Resize, channels: int,
                  only_jpeg: bool = False) -> tf.Tensor:
    """``fit_image(decode_native(...))``; with ``resize: crop`` a JPEG's centre window is
    decoded alone (``resizing.decode_jpeg_window``: the same pixels, less decoding)."""
    if how.mode != "crop":
        return fit_image(decode_native(contents, how, channels, only_jpeg), how)

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(contents)
        image = decode_jpeg_window(contents, shape, shrink_factor(shape[0], shape[1], how),
                                   lambda dims, ratio: centre_window(dims, how),
                                   _jpeg_asks(channels))
        return resample(_jpeg_channels(image, channels), how.size, how.size)

    return by_format(contents, only_jpeg, jpeg,
                     lambda: fit_image(_decode_other(contents, channels), how))


def decode_cropped(contents: tf.Tensor, draws: tf.Tensor, crop: dict, size: int,
                   channels: int, only_jpeg: bool = False) -> tf.Tensor:
    """uint8 [size, size, C]: the random resized crop ``crops.crop_boxes`` picks with
    ``draws`` (one image's row of ``crops.crop_draws``), taken from the file as decoded and
    resized to ``size``. A JPEG is decoded only inside the box, DCT-scaled as far as the
    box's size allows."""
    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(contents)
        offset, extent = crop_boxes(draws, tf.cast(shape[:2], tf.float32), crop)
        image = decode_jpeg_window(
            contents, shape, tf.reduce_min(extent) / size,
            lambda dims, ratio: box_window(offset / tf.cast(ratio, tf.float32),
                                           extent / tf.cast(ratio, tf.float32), dims),
            _jpeg_asks(channels))
        return _jpeg_channels(image, channels)

    def other() -> tf.Tensor:
        return crop_to_box(_decode_other(contents, channels), draws, crop)

    image = by_format(contents, only_jpeg, jpeg, other)
    return resample(tf.ensure_shape(image, [None, None, channels]), size, size)


def crop_to_box(image: tf.Tensor, draws: tf.Tensor, crop: dict) -> tf.Tensor:
    """A decoded image's random resized crop box (``decode_cropped`` for what is decoded
    whole: other formats, and files only Pillow reads)."""
    dims = tf.shape(image)[:2]
    start, extent = box_window(*crop_boxes(draws, tf.cast(dims, tf.float32), crop), dims)
    return tf.slice(image, tf.concat([start, [0]], 0), tf.concat([extent, [-1]], 0))


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 [H, W, 1..4] -> [H, W, channels]: alpha on white, gray repeated, RGB to luma.

    The same integer arithmetic as ``images.composite_on_white`` and ``images.to_channels``.
    An image that already has ``channels`` is returned as it is (no integer copy).
    """
    done = tf.equal(tf.shape(image)[-1], channels)
    converted = tf.cond(done, lambda: image, lambda: _convert_channels(image, channels))
    return tf.ensure_shape(converted, [None, None, channels])


def _convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    have = tf.shape(image)[-1]
    wide = tf.cast(image, tf.int32)

    def on_white() -> tf.Tensor:
        color, alpha = wide[..., :-1], wide[..., -1:]
        return (color * alpha + 255 * (255 - alpha) + 127) // 255

    wide = tf.cond(tf.equal(have % 2, 0), on_white, lambda: wide)  # 2 = gray+alpha, 4 = RGBA
    if channels == 3:
        wide = tf.cond(tf.equal(tf.shape(wide)[-1], 1), lambda: tf.tile(wide, [1, 1, 3]),
                       lambda: wide)
    else:
        weights = tf.constant([19595, 38470, 7471], tf.int32)
        wide = tf.cond(tf.equal(tf.shape(wide)[-1], 3),
                       lambda: tf.bitwise.right_shift(
                           tf.reduce_sum(wide * weights, -1, keepdims=True) + 0x8000, 16),
                       lambda: wide)
    return tf.cast(wide, tf.uint8)


def pil_decode(contents: bytes | np.ndarray, channels: int) -> np.ndarray:
    """``images.load_image`` for encoded bytes: uint8 [H, W, channels]; raises ``ImageError``."""
    return decode_image_bytes(_as_bytes(contents), channels)


def _as_bytes(value: bytes | np.ndarray) -> bytes:
    """A string tensor reaches ``tf.numpy_function`` as a 0-d object array holding bytes."""
    return value.item() if isinstance(value, np.ndarray) else value


def decode_and_resize(contents: tf.Tensor, how: Resize, channels: int) -> tf.Tensor:
    """Encoded image bytes (scalar string) -> uint8 [size, size, channels] by ``how``.

    Raises (inside tf.data: an error the pipeline sees) when the bytes are not a usable
    image; the streaming sources use ``batch_decoder`` instead, which skips such files.
    """
    def with_pil() -> tf.Tensor:
        image = tf.numpy_function(lambda data: pil_decode(data, channels), [contents],
                                  tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, channels))

    image = tf.cond(needs_pil(contents), lambda: fit_image(with_pil(), how),
                    lambda: decode_fitted(contents, how, channels))
    return tf.ensure_shape(image, (how.size, how.size, channels))


def native_decode_and_resize(contents: tf.Tensor, how: Resize, channels: int,
                             draws: tf.Tensor | None = None,
                             taken: DecoderAugment | None = None,
                             only_jpeg: bool = False) -> tf.Tensor:
    """``decode_and_resize`` for what TensorFlow's kernels decode like Pillow, failing (an
    error tf.data can drop) for the rest (and for all but JPEGs with ``only_jpeg``): the fast
    path of ``batch_decoder``. ``draws`` (this image's row of ``augment.decoder_draws``)
    pick ``taken``'s crop and flip. Routing by failure rather than by ``tf.cond`` keeps the
    per-image graph to the decode and resize themselves (a cond with a Pillow branch ran
    decode + resize at 0.75x)."""
    taken = taken or DecoderAugment()
    usable = tf.debugging.Assert(tf.logical_not(needs_pil(contents)),
                                 ["only Pillow decodes this file like predict does"])
    with tf.control_dependencies([usable]):
        if taken.crop:
            image = decode_cropped(contents, draws, taken.crop, how.size, channels, only_jpeg)
        else:
            image = decode_fitted(contents, how, channels, only_jpeg)
    return tf.ensure_shape(taken.mirrored(image, draws), (how.size, how.size, channels))


def pillow_rescue(how: Resize, channels: int, skips: SkipLog, *, from_files: bool,
                   taken: DecoderAugment | None) -> Callable[..., tuple]:
    """Graph function (key, source, label, draws) -> (uint8 [S, S, C], label or -1) by
    Pillow. A negative key is a padding place (``tfrecord``): blank, -1, not recorded."""
    blank = np.zeros((how.size, how.size, channels), np.uint8)
    shape, taken = (how.size, how.size, channels), taken or DecoderAugment()

    def load(key: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.int32]:
        if key < 0:
            return blank, np.int32(SKIPPED_LABEL)
        skips.note_pillow(int(key))
        try:
            if from_files:
                return load_image(os.fsdecode(_as_bytes(source)), channels), np.int32(0)
            return pil_decode(source, channels), np.int32(0)
        except ImageError as exc:
            reason = exc.reason
        except Exception as exc:  # anything a decoder throws must skip only this element
            reason = f"cannot decode ({type(exc).__name__}: {exc})"
        skips.add(int(key), reason)
        return blank, np.int32(SKIPPED_LABEL)

    def rescue(key: tf.Tensor, source: tf.Tensor, label: tf.Tensor, draws: tf.Tensor) -> tuple:
        image, flag = tf.numpy_function(load, [key, source], [tf.uint8, tf.int32],
                                        stateful=True)
        image = tf.ensure_shape(image, (None, None, channels))
        if taken.crop:
            image = resample(crop_to_box(image, draws, taken.crop), how.size, how.size)
        else:
            image = fit_image(image, how)
        image = tf.ensure_shape(taken.mirrored(image, draws), shape)
        return image, tf.where(tf.ensure_shape(flag, []) < 0, flag, label)

    return rescue


def rescue_in_python(rescue: Callable[..., tuple], places: list[int], keys: np.ndarray,
                     sources: np.ndarray, draws: np.ndarray | tf.Tensor,
                     images: np.ndarray) -> np.ndarray:
    """``rescue`` (``pillow_rescue``) run eagerly on the rows ``places`` of a batch, from
    Python (a ``numpy_function``: ``stream.pillow_places``, ``batch_decode``), writing
    ``images`` in place; bool per place: decoded (False: skipped, recorded in the log).
    Pinned to the CPU: a ``numpy_function``'s thread has no device scope, and on a GPU
    machine the resize would run there, with other roundings."""
    decoded = np.zeros(len(places), bool)
    with tf.device("/CPU:0"):
        for i, place in enumerate(places):
            image, flag = rescue(tf.constant(keys[place], tf.int64),
                                 tf.constant(sources[place]), tf.constant(0),
                                 tf.constant(draws[place]))
            images[place], decoded[i] = image.numpy(), int(flag) >= 0
    return decoded


BATCHES_AT_ONCE = 2  # parallel batch_decoder calls: the next batch starts as one finishes
