"""Crops taken while decoding: resize: crop's centre window, and the random resized crop
of streamed files and packed records (JPEGs decoded only inside the box)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data import decode, load_data
from resnet_builder.data.augment import (
    decoder_augment,
    decoder_draws,
    left_to_augmenter,
)
from resnet_builder.data.bundle import ORDER_STREAM, seeded_rng
from resnet_builder.data.crops import DecoderAugment, box_window, crop_boxes
from resnet_builder.data.images import load_image
from resnet_builder.data.pack import pack_folder
from resnet_builder.data.resizing import (
    Resize,
    decode_jpeg_for,
    decode_jpeg_window,
    fit_image,
    resample,
)

CROP = {"scale": [0.2, 0.6], "ratio": [0.75, 1.3333]}


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))


def _jpeg_bytes(height: int, width: int, seed: int = 0, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_photo(height, width, seed)).save(buffer, "JPEG", quality=90,
                                                      subsampling=subsampling)
    return buffer.getvalue()


def _epoch(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("ratio", [1, 2, 4])
def test_a_window_decoded_alone_equals_the_whole_decode_there(subsampling, ratio):
    """decode_and_crop_jpeg with EXACT_MARGIN gives a full decode's pixels (without it,
    libjpeg's chroma upsampling at the window's edge differs)."""
    contents = tf.constant(_jpeg_bytes(157, 211, subsampling, subsampling))
    shape = tf.io.extract_jpeg_shape(contents)
    whole = tf.io.decode_jpeg(contents, channels=3, ratio=ratio,
                              dct_method="INTEGER_ACCURATE").numpy()
    rng = np.random.default_rng(ratio)
    for _ in range(12):
        rows, cols = rng.integers(1, whole.shape[0] + 1), rng.integers(1, whole.shape[1] + 1)
        top = rng.integers(0, whole.shape[0] - rows + 1)
        left = rng.integers(0, whole.shape[1] - cols + 1)
        box = (tf.constant([top, left]), tf.constant([rows, cols]))
        window = decode_jpeg_window(contents, shape, tf.constant(float(ratio)),
                                    lambda dims, r, box=box: box, channels=3).numpy()
        np.testing.assert_array_equal(window, whole[top:top + rows, left:left + cols])


@pytest.mark.parametrize("size", [24, 60, 100])
@pytest.mark.parametrize("channels", [1, 3])
def test_crop_mode_decodes_the_centre_window_with_the_same_pixels(size, channels):
    """resize: crop decodes only its centre window of a JPEG, and gives the pixels of a
    full (equally DCT-scaled) decode put through fit_image."""
    for shape in ((120, 160), (161, 97), (400, 300)):
        contents = tf.constant(_jpeg_bytes(*shape, seed=size))
        how = Resize(size, "crop", 0.8)
        full = decode.to_channels(decode_jpeg_for(contents, how, 3), channels) \
            if channels == 1 else decode_jpeg_for(contents, how, 3)
        want = fit_image(full, how).numpy()
        got = decode.decode_fitted(contents, how, channels).numpy()
        assert got.shape == (size, size, channels)
        np.testing.assert_array_equal(got, want)


def test_a_file_s_crop_equals_cropping_its_decoded_pixels(tmp_path):
    """decode_cropped: the box of crops.crop_boxes over the file's own pixels, resized; a
    JPEG decoded only in its box, at the DCT scale the box's size allows."""
    draws = decoder_draws(DecoderAugment(CROP), 3, tf.constant(0, tf.int64),
                          tf.constant(0, tf.int64), tf.constant(8, tf.int64), 0, tf.constant(8))
    for i, (name, shape) in enumerate([("a.png", (90, 120)), ("b.jpg", (90, 120)),
                                       ("c.jpg", (300, 200)), ("d.png", (40, 70))]):
        path = tmp_path / name
        Image.fromarray(_photo(*shape, seed=i)).save(path, quality=95)
        contents = tf.constant(path.read_bytes())
        got = decode.decode_cropped(contents, draws[i], CROP, 32, 3).numpy().astype(int)
        decoded = _decodings(str(path))  # c.jpg's box is over 2x the output: 1/2 scale
        wants = [_cropped(pixels, scale, draws[i], shape, 32) for scale, pixels in decoded]
        assert min(np.abs(got - want).max() for want in wants) == 0, name
        whole = fit_image(decoded[0][1], Resize(32)).numpy().astype(int)
        assert np.abs(got - whole).mean() > 5, name  # a crop, not the whole image


def _cropped(pixels: tf.Tensor, scale: int, draws: tf.Tensor, full: tuple[int, int],
             size: int) -> np.ndarray:
    """The crop of ``pixels`` (a decode at 1 / ``scale``) by the box drawn for the file's
    full ``(height, width)``, resized to ``size``."""
    offset, extent = crop_boxes(draws, tf.constant(full, tf.float32), CROP)
    (top, left), (rows, cols) = [v.numpy() for v in box_window(
        offset / scale, extent / scale, tf.constant(pixels.shape[:2]))]
    return resample(pixels[top:top + rows, left:left + cols], size, size).numpy()


def _decodings(path: str) -> list[tuple[int, tf.Tensor]]:
    """(scale, pixels) of a file as Pillow reads it; a JPEG's at full and half scale (the
    decoder takes the scale its box allows)."""
    if not path.endswith(".jpg"):
        return [(1, tf.constant(load_image(path, 3)))]
    contents = tf.io.read_file(path)
    return [(r, tf.io.decode_jpeg(contents, 3, ratio=r, dct_method="INTEGER_ACCURATE"))
            for r in (1, 2)]


def _folder(root: Path, per_class: int = 5) -> Path:
    for k, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ext = ("jpg", "png", "gif")[i % 3]  # gif: the Pillow route
            Image.fromarray(_photo(60 + 7 * i, 80, 10 * k + i)).save(root / name / f"{i}.{ext}")
    return root


def _streamed(root: Path, augment: AugmentConfig, cache: bool | str = False):
    return load_data(DataConfig(source="folder", path=str(root), image_size=20,
                                validation_split=0.0, cache=cache), augment, seed=5)


def test_streamed_files_are_cropped_from_the_file_as_the_augmenter_would_draw(tmp_path):
    root = _folder(tmp_path)
    bundle = _streamed(root, AugmentConfig(random_resized_crop=CROP))
    assert bundle.decoder_augment() == DecoderAugment(CROP)
    x, y = _epoch(bundle.train_dataset(2, 4))
    files = sorted(str(p) for p in root.rglob("*.*"))
    order = seeded_rng(5, ORDER_STREAM, 2).permutation(len(files))
    for number in range(3):
        picks = order[4 * number:4 * number + 4]
        draws = decoder_draws(DecoderAugment(CROP), 5, tf.constant(2, tf.int64),
                              tf.constant(number, tf.int64), tf.constant(len(picks), tf.int64),
                              0, tf.constant(len(picks)))
        for row, index in enumerate(picks):
            got = x[4 * number + row]
            decoded = _decodings(files[index])
            full = decoded[0][1].shape[:2]
            wants = [_cropped(pixels, scale, draws[row], full, 20) for scale, pixels in decoded]
            assert min(np.abs(got - want).max() for want in wants) == 0, files[index]
    assert sorted(y.tolist()) == [0] * 5 + [1] * 5


def test_cropped_epochs_are_seeded_sharded_and_resumable(tmp_path):
    bundle = _streamed(_folder(tmp_path, 6), AugmentConfig(random_resized_crop=CROP,
                                                           horizontal_flip=True))
    x, _ = _epoch(bundle.train_dataset(1, 4))
    np.testing.assert_array_equal(_epoch(bundle.train_dataset(1, 4))[0], x)
    assert not np.array_equal(_epoch(bundle.train_dataset(2, 4))[0], x)
    halves = [_epoch(bundle.train_dataset(1, 4, shard=k, num_shards=2)) for k in range(2)]
    for b in range(3):  # global batch b = shard 0's 2 rows, then shard 1's
        np.testing.assert_array_equal(
            np.concatenate([halves[0][0][2 * b:2 * b + 2], halves[1][0][2 * b:2 * b + 2]]),
            x[4 * b:4 * b + 4])
    np.testing.assert_array_equal(_epoch(bundle.train_dataset(1, 4, first_batch=1))[0], x[4:])


def test_bad_files_are_skipped_and_named_with_the_crop_on(tmp_path):
    root = _folder(tmp_path)
    good = (root / "ant" / "0.jpg").read_bytes()
    (root / "ant" / "cut.jpg").write_bytes(good[:len(good) // 2])
    (root / "bee" / "noise.png").write_bytes(os.urandom(300))
    bundle = _streamed(root, AugmentConfig(random_resized_crop=CROP))
    x, y = _epoch(bundle.train_dataset(0, 4))
    assert x.shape == (12, 20, 20, 3) and (y == -1).sum() == 2
    assert {Path(f).name for f, _ in bundle.take_skipped()} == {"cut.jpg", "noise.png"}


def test_streamed_files_are_flipped_while_decoding_as_the_augmenter_flips_them(tmp_path):
    """The decoder takes the flip (a reverse per image in its map, not a batch op after
    it): the same images, flipped or not, as the augmenter's flip of cached ones."""
    root = _folder(tmp_path)
    flip = AugmentConfig(horizontal_flip=True)
    streamed, cached = _streamed(root, flip), _streamed(root, flip, cache=True)
    assert streamed.decoder_augment() == DecoderAugment(flip=True)
    assert cached.decoder_augment() is None
    for epoch in range(2):
        x, y = _epoch(streamed.train_dataset(epoch, 4))
        want_x, want_y = _epoch(cached.train_dataset(epoch, 4))
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(x, want_x)
    unflipped, _ = _epoch(_streamed(root, AugmentConfig()).train_dataset(1, 4))
    mirrored = [not np.array_equal(a, b) and np.array_equal(a, b[:, ::-1])
                for a, b in zip(x, unflipped, strict=True)]
    kept = [np.array_equal(a, b) for a, b in zip(x, unflipped, strict=True)]
    assert sum(mirrored) > 0 and sum(kept) > 0 and sum(mirrored) + sum(kept) == len(x)


def test_the_decoder_leaves_the_flip_to_the_augmenter_after_a_shift_or_zoom():
    """The augmenter flips last; a shift does not commute with a flip, so with one on the
    decoder takes only the crop."""
    assert decoder_augment(AugmentConfig(horizontal_flip=True, random_crop_padding=2)) is None
    crop_zoom = AugmentConfig(random_resized_crop=CROP, horizontal_flip=True, random_scale=0.1)
    assert decoder_augment(crop_zoom) == DecoderAugment(CROP, flip=False)
    left = left_to_augmenter(crop_zoom, decoder_augment(crop_zoom))
    assert left.random_resized_crop is None and left.horizontal_flip and left.random_scale
    both = AugmentConfig(random_resized_crop=CROP, horizontal_flip=True)
    assert decoder_augment(both).columns == decoder_augment(AugmentConfig(
        random_resized_crop=CROP)).columns + 1
    assert not left_to_augmenter(both, decoder_augment(both)).horizontal_flip
    assert decoder_augment(AugmentConfig()) is None


def test_cached_images_keep_the_crop_in_the_augmenter(tmp_path):
    """A store holds resized images, so the crop is taken from them, after decoding."""
    root = _folder(tmp_path)
    cached = _streamed(root, AugmentConfig(random_resized_crop=CROP), cache=True)
    assert cached.decoder_augment() is None
    plain = _streamed(root, AugmentConfig(), cache=True)
    x, _ = _epoch(cached.train_dataset(0, 4))
    assert np.abs(x - _epoch(plain.train_dataset(0, 4))[0]).mean() > 5


def test_packed_records_are_cropped_as_decoded_and_padding_is_not_skipped(tmp_path):
    root = _folder(tmp_path / "photos", 7)
    pack_folder(root, str(tmp_path / "packed"), shards=3)
    data = DataConfig(source="tfrecord", path=str(tmp_path / "packed"), image_size=20)
    bundle = load_data(data, AugmentConfig(random_resized_crop=CROP), seed=0)
    plain = load_data(data, AugmentConfig(), seed=0)
    assert bundle.decoder_augment() == DecoderAugment(CROP)
    x, y = _epoch(bundle.train_dataset(0, 4))
    px, py = _epoch(plain.train_dataset(0, 4))
    np.testing.assert_array_equal(y, py)  # the same records in the same order, cropped
    assert np.abs(x - px).mean() > 5
    np.testing.assert_array_equal(_epoch(bundle.train_dataset(0, 4))[0], x)
    parts = [_epoch(bundle.train_dataset(0, 4, shard=k, num_shards=2))[1] for k in range(2)]
    assert len(parts[0]) == len(parts[1])  # the smaller share padded with label -1
    assert sorted(np.concatenate(parts)[np.concatenate(parts) >= 0]) == sorted(y)
    assert bundle.take_skipped() == []  # padding is not a skipped file


def test_packed_records_are_flipped_as_decoded_by_the_augmenter_s_draws(tmp_path):
    """Records are decoded as batches are made, so the decoder takes the flip: each image
    is the unflipped one mirrored where the flip's draws (the augmenter's) say so."""
    root = _folder(tmp_path / "photos", 7)
    pack_folder(root, str(tmp_path / "packed"), shards=3)
    data = DataConfig(source="tfrecord", path=str(tmp_path / "packed"), image_size=20)
    bundle = load_data(data, AugmentConfig(horizontal_flip=True), seed=0)
    assert bundle.decoder_augment() == DecoderAugment(flip=True)
    assert bundle.augment_function() is None  # nothing left for the batch augmenter
    plain = load_data(data, AugmentConfig(), seed=0)
    got = [(x.numpy(), y.numpy()) for x, y in bundle.train_dataset(1, 4)]
    unflipped = [x.numpy() for x, _ in plain.train_dataset(1, 4)]
    mirrored = 0
    for number, ((images, _), want) in enumerate(zip(got, unflipped, strict=True)):
        flips = decoder_draws(DecoderAugment(flip=True), 0, tf.constant(1, tf.int64),
                              tf.constant(number, tf.int64), tf.constant(4, tf.int64), 0,
                              tf.constant(len(images)))[:, 0].numpy() > 0.5
        for image, plain_image, flip in zip(images, want, flips, strict=True):
            np.testing.assert_array_equal(image, plain_image[:, ::-1] if flip else plain_image)
        mirrored += int(flips.sum())
    assert 0 < mirrored < sum(len(images) for images, _ in got)
