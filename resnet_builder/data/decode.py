"""Encoded images -> uint8 pixels inside ``tf.data``, with TensorFlow's kernels, never stopping.

Training, ``predict``, ``evaluate`` and ``data.verify`` all decode here, then resize with
the one rule of ``resizing.fit_image``, so a model sees the pixels it was trained on.
Decoded pixels match ``images.load_image`` (Pillow): JPEGs are decoded with the accurate
integer DCT (bit-identical to Pillow's libjpeg), alpha is composited on white with the same
integer rounding, RGB -> gray uses the same luma formula.

What TensorFlow decodes differently goes through Pillow in ``tf.numpy_function``, chosen
in the graph from the first bytes: PNGs that are not 8 bits deep (16-bit is scaled with
rounding, not cut) or palette PNGs with transparency, GIFs (palette transparency, first
frame), BMPs that are not 24-bit, WebP and TIFF, and any file with an EXIF orientation
other than 1. CMYK JPEGs decode the same in TensorFlow, so they stay native.

``decode_or_skip`` is the failure-safe transform the streaming sources share: a file that
cannot be decoded becomes a zero image with label -1 (batches keep their size, so shards
stay aligned and a resumed epoch repeats exactly) and (key, reason) goes to a ``SkipLog``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from resnet_builder.data.images import ImageError, decode_image_bytes, load_image
from resnet_builder.data.resizing import Resize, decode_jpeg_for, fit_image

SKIPPED_LABEL = -1  # label of an element whose file could not be decoded
HEADER_BYTES = 65536  # searched for EXIF orientation and a PNG tRNS chunk

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# EXIF tag 0x0112 (orientation), type SHORT, count 1, in both byte orders; the value follows.
_ORIENTATION = ((b"\x12\x01\x03\x00\x01\x00\x00\x00", b"\x01\x00"),
                (b"\x01\x12\x00\x03\x00\x00\x00\x01", b"\x00\x01"))


def needs_pil(contents: tf.Tensor) -> tf.Tensor:
    """Scalar bool: whether these bytes must go through Pillow to match ``images.load_image``."""
    header = tf.strings.substr(contents, 0, HEADER_BYTES)
    png = tf.equal(tf.strings.substr(contents, 0, 8), _PNG)
    depth = tf.strings.substr(contents, 24, 1)
    palette = tf.equal(tf.strings.substr(contents, 25, 1), b"\x03")
    odd_png = png & (tf.not_equal(depth, b"\x08") | (palette & _contains(header, b"tRNS")))
    gif = tf.equal(tf.strings.substr(contents, 0, 3), b"GIF")
    bmp = tf.equal(tf.strings.substr(contents, 0, 2), b"BM")
    odd_bmp = bmp & tf.not_equal(tf.strings.substr(contents, 28, 2), b"\x18\x00")
    # WebP (RIFF....WEBP) and TIFF (II*\0, MM\0*): TensorFlow reads no TIFF, and its WebP
    # decoder is not the one predict uses; Pillow decodes both exactly as load_image.
    webp = (tf.equal(tf.strings.substr(contents, 0, 4), b"RIFF")
            & tf.equal(tf.strings.substr(contents, 8, 4), b"WEBP"))
    tiff = tf.reduce_any(tf.equal(tf.strings.substr(contents, 0, 4),
                                  [b"II*\x00", b"MM\x00*"]))  # little/big-endian
    return odd_png | gif | odd_bmp | webp | tiff | _rotated(header)


def _contains(text: tf.Tensor, part: bytes) -> tf.Tensor:
    """Byte-exact substring test (RE2 cannot match bytes that are not UTF-8)."""
    return tf.size(tf.strings.split(text, part, maxsplit=1)) > 1


def _rotated(header: tf.Tensor) -> tf.Tensor:
    """An EXIF orientation tag whose value is not 1 (upright)."""
    found = tf.constant(False)
    for tag, upright in _ORIENTATION:
        parts = tf.strings.split(header, tag, maxsplit=1)
        value = tf.strings.substr(parts[-1], 0, 2)
        found |= (tf.size(parts) > 1) & tf.not_equal(value, upright)
    return found


def decode_native(contents: tf.Tensor, how: Resize) -> tf.Tensor:
    """uint8 [H, W, 1..4] with TensorFlow's decoders (content decides the format); JPEGs
    DCT-scaled as far as ``how`` allows (``resizing.decode_jpeg_for``)."""
    jpeg = tf.equal(tf.strings.substr(contents, 0, 3), _JPEG)
    return tf.cond(
        jpeg,
        lambda: decode_jpeg_for(contents, how),
        lambda: tf.io.decode_image(contents, channels=0, expand_animations=False))


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
    image; wrap the dataset with ``decode_or_skip`` to skip such files instead.
    """
    def with_pil() -> tf.Tensor:
        image = tf.numpy_function(lambda data: pil_decode(data, channels), [contents],
                                  tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, channels))

    def native() -> tf.Tensor:
        return to_channels(decode_native(contents, how), channels)

    image = fit_image(tf.cond(needs_pil(contents), with_pil, native), how)
    return tf.ensure_shape(image, (how.size, how.size, channels))


class SkipLog:
    """Thread-safe record of (key, reason) for elements that could not be decoded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[int, str]] = []

    def add(self, key: int, reason: str) -> None:
        with self._lock:
            self._entries.append((key, reason))

    def take(self) -> list[tuple[int, str]]:
        """Everything recorded since the last call, in the order it happened."""
        with self._lock:
            entries, self._entries = self._entries, []
        return entries


def skipping_decoder(how: Resize, channels: int, skips: SkipLog, *,
                     from_files: bool) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple]:
    """Graph function (key int64, source string, label int32) -> (uint8 [S, S, C], label).

    ``source`` is a file path (``from_files``) or the encoded bytes. An element that fails
    natively, or that only Pillow reads like ``images.load_image`` (``needs_pil``), is
    decoded by Pillow; if that fails too it becomes zeros with label -1 and (key, reason)
    goes to ``skips``.

    Errors are caught per element with ``from_tensors(x).map(decode).ignore_errors()
    .concatenate(fallback).take(1)``: the fallback only runs on failure. Inside a parallel
    map (``get_single_element``) this measured within noise of a bare parallel map that
    would crash on a bad file (500 photo-size JPEGs at 224 on 2 busy cores: 189 vs 182 and
    171 vs 189 images/s; bench/pipeline_folder.py repeats it).
    """
    blank = np.zeros((how.size, how.size, channels), np.uint8)
    shape = (how.size, how.size, channels)

    def rescue(key: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.int32]:
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

    def decode(key: tf.Tensor, source: tf.Tensor, label: tf.Tensor) -> tuple:
        contents = tf.io.read_file(source) if from_files else source
        return decode_and_resize(contents, how, channels), label

    def fallback(key: tf.Tensor, source: tf.Tensor, label: tf.Tensor) -> tuple:
        image, flag = tf.numpy_function(rescue, [key, source], [tf.uint8, tf.int32],
                                        stateful=True)
        image = fit_image(tf.ensure_shape(image, (None, None, channels)), how)
        return tf.ensure_shape(image, shape), tf.where(tf.ensure_shape(flag, []) < 0, flag, label)

    def guarded(key: tf.Tensor, source: tf.Tensor, label: tf.Tensor) -> tuple:
        element = tf.data.Dataset.from_tensors((key, source, label))
        first = element.map(decode).ignore_errors(log_warning=False)
        image, label = first.concatenate(element.map(fallback)).take(1).get_single_element()
        return tf.ensure_shape(image, shape), tf.ensure_shape(label, [])

    return guarded


def decode_or_skip(dataset: tf.data.Dataset, how: Resize, channels: int, skips: SkipLog, *,
                   from_files: bool) -> tf.data.Dataset:
    """(key int64, source string, label int32) -> (uint8 [S, S, C], label int32), in order.

    A parallel map of ``skipping_decoder``: bad elements come out as zeros with label -1
    and are recorded in ``skips`` (see there).
    """
    guarded = skipping_decoder(how, channels, skips, from_files=from_files)
    return dataset.map(guarded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
