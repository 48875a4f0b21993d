"""The one resize rule: any uint8 image -> the model's square input, in TensorFlow.

Training (streamed, cached or packed files), ``predict``, ``evaluate`` and the export's
calibration images all pass through ``fit_image`` (and, for JPEGs, ``decode_jpeg_for``),
so a model sees pixels prepared exactly as in training. The rule is stored in the model
(``resize``, ``crop_pct``):

* ``stretch``: both sides to ``size`` (nothing cut off, shapes distorted);
* ``crop``: the centre square whose side is ``crop_pct`` of the shorter side, to ``size``
  (timm's evaluation rule: shorter side to size / crop_pct, then the centre crop);
* ``pad``: the longer side to ``size``, centred on a ``PAD_VALUE`` grey square
  (ultralytics' letterbox grey).

Resampling is bilinear without antialiasing after a box-filter reduction by the whole
factor when shrinking by 2x or more (Pillow's ``reducing_gap`` idea). Decode + resize of
500x375 JPEGs to 224 on 2 cores (``python bench/pipeline_folder.py``, its resize section):
full decode + bilinear 1,391 images/s, + area 1,212, + antialiased bilinear (Pillow's
filter, the previous rule) 625. JPEGs at least twice the needed size are decoded at 1/2,
1/4 or 1/8 scale by libjpeg's DCT scaling, the scale chosen so the decoded image still
covers the output (Pillow's ``draft`` rule); it saves the inverse DCT and colour conversion
of the dropped pixels, not the entropy decoding (2000x1500 -> 224: 154 vs 161 images/s
for a full decode + bilinear).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from resnet_builder.config import DataConfig
from resnet_builder.model.architecture import RESIZE_MODES

PAD_VALUE = 114  # grey around a padded image (ultralytics' letterbox value)
DCT_RATIOS = (1, 2, 4, 8)  # the scales libjpeg decodes at
# 1: Pillow's antialiased bilinear (before 2026-11); 2: halves rounded to even; kept caches
# name it, so a cache made by another rule is not reused
RESIZE_RULE_VERSION = 3


@dataclass(frozen=True)
class Resize:
    """How an image becomes ``size`` x ``size``: the mode and crop_pct stored in the model."""

    size: int
    mode: str = "stretch"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")


def resize_rule(data: DataConfig) -> Resize:
    """The rule a config trains with (and stores in the model)."""
    return Resize(data.image_size, data.resize, data.crop_pct)


def shrink_factor(height: tf.Tensor, width: tf.Tensor, how: Resize) -> tf.Tensor:
    """float32 scalar: how many source pixels make one output pixel (>= 1: shrinking)."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    if how.mode == "stretch":
        return tf.minimum(h, w) / how.size
    if how.mode == "crop":
        return tf.minimum(h, w) * how.crop_pct / how.size
    return tf.maximum(h, w) / how.size


def fit_image(image: tf.Tensor, how: Resize) -> tf.Tensor:
    """uint8 [H, W, C] -> uint8 [size, size, C] by ``how`` (see the module docstring)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    size = how.size
    if how.mode == "crop":
        start, extent = centre_window(shape[:2], how)
        return resample(tf.slice(image, tf.concat([start, [0]], 0),
                                 tf.concat([extent, [-1]], 0)), size, size)
    if how.mode == "stretch":
        return resample(image, size, size)
    out_h, out_w, top, left = pad_box(height, width, how)
    inner = tf.cast(resample(image, out_h, out_w), tf.int32) - PAD_VALUE
    padded = tf.pad(inner, [[top, size - out_h - top], [left, size - out_w - left], [0, 0]])
    return tf.cast(padded + PAD_VALUE, tf.uint8)


def pad_box(height: tf.Tensor | int, width: tf.Tensor | int, how: Resize) -> tuple:
    """(out_h, out_w, top, left), int32 scalars: where ``resize: pad`` puts an image of
    ``height`` x ``width`` inside the ``how.size`` square (the rest is padding)."""
    size = how.size
    scale = size / tf.cast(tf.maximum(height, width), tf.float32)
    out_h = tf.clip_by_value(tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32),
                             1, size)
    out_w = tf.clip_by_value(tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32),
                             1, size)
    return out_h, out_w, (size - out_h) // 2, (size - out_w) // 2


def centre_window(dims: tf.Tensor, how: Resize) -> tuple[tf.Tensor, tf.Tensor]:
    """(start, extent), int32 [2]: the centre square ``resize: crop`` keeps of an image
    of ``dims`` (int32 [2], height and width)."""
    side = tf.maximum(tf.cast(tf.round(tf.cast(tf.reduce_min(dims), tf.float32)
                                       * how.crop_pct), tf.int32), 1)
    return (dims - side) // 2, tf.fill([2], side)


def resample(image: tf.Tensor, out_h: tf.Tensor | int, out_w: tf.Tensor | int) -> tf.Tensor:
    """Bilinear to (out_h, out_w), box-reduced first by the whole factor when it is >= 2.

    The uint8 image goes to the resize kernels as it is (they read uint8): an explicit
    float copy of a 500x375 photo first ran decode + resize at 0.46x (measured side by side
    in one parallel tf.data map, 2 cores). Alone, the float kernel resizes a 500x375 photo
    ~90 us faster (482 against 572 us, one thread), but in the streamed pipeline the float
    copy fell into a mode 1.45x slower in 5 of 12 passes (1,820 against 1,250 us of CPU per
    image; uint8 never did). The same size comes back unchanged.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    factor = tf.maximum(tf.minimum(height // out_h, width // out_w), 1)

    def boxed() -> tf.Tensor:
        reduced = tf.image.resize(image, (height // factor, width // factor), method="area")
        return tf.image.resize(reduced, (out_h, out_w), method="bilinear")

    out = tf.cond(factor >= 2, boxed,
                  lambda: tf.image.resize(image, (out_h, out_w), method="bilinear"))
    # Bilinear and area weights are convex, so uint8 in stays within [0, 255]: no clip.
    # +0.5 and truncation round halves up (tf.round: to even). round + clip + cast cost
    # 130-180 us per 500x375 JPEG more than a bare cast (decode + resize ~1,300 us, one
    # thread of a tf.data map, 300 images).
    return tf.cast(out + 0.5, tf.uint8)


def fit_array(images: np.ndarray, how: Resize, chunk: int = 4096) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, size, size, C] by ``fit_image``, in a parallel tf.data map."""
    out = np.zeros((len(images), how.size, how.size, images.shape[-1]), np.uint8)
    for start in range(0, len(images), chunk):
        part = tf.data.Dataset.from_tensor_slices(images[start:start + chunk])
        part = part.map(lambda image: fit_image(image, how), num_parallel_calls=tf.data.AUTOTUNE)
        for i, image in enumerate(part.as_numpy_iterator(), start):
            out[i] = image
    return out


def resized_on_demand(raw: np.ndarray, labels: tf.Tensor, how: Resize, channels: int
                      ) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Indices [b] -> (their ``raw`` images fitted by ``how``, labels): arrays too big to
    resize up front."""
    shape = (how.size, how.size, channels)

    def on_demand(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.numpy_function(lambda i: raw[i], [indices], tf.uint8, stateful=False)
        images = tf.map_fn(lambda image: fit_image(image, how),
                           tf.ensure_shape(images, (None, *raw.shape[1:])),
                           fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        return images, tf.gather(labels, indices)

    return on_demand


def decode_jpeg_for(contents: tf.Tensor, how: Resize, channels: int = 0) -> tf.Tensor:
    """uint8 [h, w, 1..3] (``channels`` 0: as stored) from JPEG bytes, DCT-scaled by the
    largest ratio that still covers the output (1 when less than twice the needed size)."""
    shape = tf.io.extract_jpeg_shape(contents)
    index = dct_ratio_index(shrink_factor(shape[0], shape[1], how))

    def at(ratio: int):
        return lambda: tf.io.decode_jpeg(contents, channels=channels, ratio=ratio,
                                         dct_method="INTEGER_ACCURATE")

    image = tf.switch_case(index, [at(r) for r in DCT_RATIOS])
    return tf.ensure_shape(image, [None, None, None])


def dct_ratio_index(factor: tf.Tensor) -> tf.Tensor:
    """Index into ``DCT_RATIOS`` of the largest scale not above ``factor`` (source pixels
    per output pixel)."""
    return tf.reduce_sum(tf.cast(factor >= tf.constant(DCT_RATIOS[1:], tf.float32), tf.int32))


# Pixels decoded around a window on each side, then cut off: libjpeg's chroma upsampling
# at a crop's edge lacks its neighbours (off by up to 8 levels there on a test photo); with
# 8 more pixels the window equals a full decode's pixels (360 random windows,
# 4:2:0/4:2:2/4:4:4, scales 1/1-1/4).
EXACT_MARGIN = 8


def decode_jpeg_window(contents: tf.Tensor, shape: tf.Tensor, factor: tf.Tensor,
                       window: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
                       channels: int = 0) -> tf.Tensor:
    """uint8 [rows, cols, 1..3]: only a window of a JPEG decoded (``decode_and_crop_jpeg``),
    at the largest DCT scale not above ``factor``; the pixels equal a full decode's there.

    ``shape`` is ``extract_jpeg_shape``'s; ``window(dims, ratio)`` gives int32 [2] (start,
    extent) in the pixels of the image as scaled to ``dims`` (height, width) by ``ratio``
    (an int32 scalar). A bare ``decode_and_crop_jpeg`` of a 0.6 x 0.5 window of 500x375
    photos ran at 1,985 images/s against 1,441 for a full decode (resize included; tf.data
    maps on 2 cores). Written as few ops on short vectors: each op costs ~10 us per image
    in a map here. The window is worked out once, outside the scale's ``switch_case``,
    whose branches hold the decode alone: every op of every branch runs (as a dead op
    where not taken), and with the window worked out in each branch the random resized
    crop's per-image decode ran at 1,381 images/s against 1,548 (500x375 photos -> 224,
    3 alternating passes).
    """
    index = dct_ratio_index(factor)
    ratio = tf.gather(tf.constant(DCT_RATIOS), index)
    dims = (shape[:2] + ratio - 1) // ratio
    start, extent = window(dims, ratio)
    low = tf.maximum(start - EXACT_MARGIN, 0)
    box = tf.concat([low, tf.minimum(start + extent + EXACT_MARGIN, dims) - low], 0)

    def at(scale: int) -> Callable[[], tf.Tensor]:
        return lambda: tf.io.decode_and_crop_jpeg(contents, box, channels=channels, ratio=scale,
                                                  dct_method="INTEGER_ACCURATE")

    image = tf.switch_case(index, [at(r) for r in DCT_RATIOS])
    image = tf.slice(image, tf.concat([start - low, [0]], 0), tf.concat([extent, [-1]], 0))
    return tf.ensure_shape(image, [None, None, None])
