"""The streamed decoder's fast path and its redo: batches in order, in place, as the safe path."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data import load_data
from resnet_builder.data.decode import PILLOW_LABEL, SkipLog
from resnet_builder.data.guarded import guarded_batches
from resnet_builder.data.images import load_image
from resnet_builder.data.resizing import Resize, fit_image

BATCH = 3
SPEC = (tf.TensorSpec([None, 2, 2, 1], tf.uint8), tf.TensorSpec([None], tf.int32))


def _toy(count: int, rows: int, failing: set[int], first: int = 0, on_redo=None,
         finish=None, left: set[int] = frozenset()):
    """Batch n holds rows [3n, 3n+3) of ``rows``; the fast path fails on ``failing`` and
    fills images with 1, the safe one with 2; labels are the row numbers, but the fast path
    labels the rows ``left`` ``PILLOW_LABEL`` (for ``finish``)."""
    bad = tf.constant(sorted(failing) or [-1], tf.int64)
    for_pillow = tf.constant(sorted(left) or [-1], tf.int64)

    def inputs(number: tf.Tensor) -> tuple[tf.Tensor]:
        return (tf.range(number * BATCH, tf.minimum((number + 1) * BATCH, rows)),)

    def filled(indices: tf.Tensor, value: int) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.fill(tf.stack([tf.size(indices), 2, 2, 1]), tf.constant(value, tf.uint8))
        return images, tf.cast(indices, tf.int32)

    def fast(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        number = indices[0] // BATCH
        ok = tf.debugging.Assert(tf.reduce_all(tf.not_equal(bad, number)), ["fails"])
        with tf.control_dependencies([ok]):
            images, labels = filled(tf.identity(indices), 1)
        marked = tf.reduce_any(tf.equal(indices[:, None], for_pillow[None]), axis=1)
        return images, tf.where(marked, PILLOW_LABEL, labels)

    return guarded_batches(range(first, count), inputs, fast,
                           lambda indices: filled(indices, 2), SPEC, on_redo, finish)


@pytest.mark.parametrize("failing", [set(), {0}, {1, 2}, {3}, {0, 1, 2, 3}, {0, 3}])
def test_failed_batches_come_back_in_their_place_from_the_safe_path(failing):
    rows = 11  # batches of 3, 3, 3, 2
    batches = [(x.numpy(), y.numpy()) for x, y in _toy(4, rows, failing)]
    assert [y.tolist() for _, y in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    for number, (images, labels) in enumerate(batches):
        assert images.shape == (len(labels), 2, 2, 1)
        assert (images == (2 if number in failing else 1)).all(), number


def test_places_left_for_pillow_are_filled_by_finish_unless_the_batch_is_redone():
    """``finish`` gets the batch's arguments and fills only the places labelled
    ``PILLOW_LABEL``; a batch the safe path redoes never reaches it."""
    told = []

    def finish(args, images, labels):
        told.append(np.asarray(args[0]).tolist())
        images, labels = images.copy(), labels.copy()
        images[labels == PILLOW_LABEL] = 3
        labels[labels == PILLOW_LABEL] = 100
        return images, labels

    batches = [(x.numpy(), y.numpy()) for x, y in _toy(4, 11, {2}, finish=finish,
                                                       left={1, 7, 9})]
    assert sorted(told) == [[0, 1, 2], [9, 10]]  # batch 2 (rows 6-8) was redone
    assert [y.tolist() for _, y in batches] == [[0, 100, 2], [3, 4, 5], [6, 7, 8], [100, 10]]
    assert [x[:, 0, 0, 0].tolist() for x, _ in batches] == [[1, 3, 1], [1, 1, 1], [2, 2, 2],
                                                           [3, 1]]


def test_on_redo_is_told_the_keys_of_each_redone_batch():
    told = []
    list(_toy(4, 11, {1, 3}, on_redo=lambda keys: told.append(keys.tolist())))
    assert sorted(told) == [[3, 4, 5], [9, 10]]


def test_batches_keep_their_static_shapes():
    """The stand-ins for failed batches are shaped at run time; the batches' spec must still
    carry the image size, or the model's graph is traced for any size."""
    assert _toy(4, 11, {1}).element_spec == SPEC


def test_no_batches_at_all():
    assert list(_toy(0, 0, set())) == []
    assert list(_toy(4, 11, set(), first=4)) == []


@pytest.mark.parametrize("failing", [{2}, {3}, {2, 3}])
def test_batches_from_a_later_number_are_redone_in_their_place(failing):
    """A run's iterator after a resume starts at a later batch number."""
    batches = [(x.numpy(), y.numpy()) for x, y in _toy(4, 11, failing, first=2)]
    assert [y.tolist() for _, y in batches] == [[6, 7, 8], [9, 10]]
    for number, (images, _) in enumerate(batches, start=2):
        assert (images == (2 if number in failing else 1)).all(), number


def _folder(root: Path, gifs: bool = True) -> Path:
    """JPEGs, GIFs (only Pillow reads them like predict) and a broken file, in two classes;
    without ``gifs`` every name is a JPEG's (the fast path's JPEG-only route)."""
    rng = np.random.default_rng(0)
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for i in range(7):
            pixels = rng.integers(0, 256, (30 + i, 40, 3), np.uint8)
            ext = "gif" if i == 3 and gifs else "jpg"
            Image.fromarray(pixels).save(root / name / f"{i}.{ext}")
    (root / "bee" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    return root


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


CROP = AugmentConfig(random_resized_crop={"scale": [0.3, 1.0], "ratio": [0.75, 1.33]})
FLIP = AugmentConfig(horizontal_flip=True)


@pytest.mark.parametrize("gifs", [True, False], ids=["gifs", "all-jpeg-names"])
@pytest.mark.parametrize("augment", [AugmentConfig(), CROP, FLIP,
                                     replace(CROP, horizontal_flip=True)],
                         ids=["resize", "crop", "flip", "crop+flip"])
def test_streamed_batches_equal_the_safe_decoder_and_remember_pillow_files(tmp_path, augment,
                                                                           gifs):
    cfg = DataConfig(source="folder", path=str(_folder(tmp_path, gifs)), image_size=16,
                     validation_split=0.0, cache=False)
    bundle = load_data(cfg, augment, seed=3)
    split = bundle._train
    taken = bundle.decoder_augment()
    for epoch in range(2):
        got = _batches(bundle.train_dataset(epoch, 4))
        order = bundle.epoch_order(epoch).astype(np.int64)
        safe = bundle._lookup("train", split, taken)
        for number, (images, labels) in enumerate(got):
            indices = tf.constant(order[number * 4:(number + 1) * 4])
            steps = len(got)  # the run's global batch number: epoch * steps + number
            args = (indices,) if taken is None else (
                indices, bundle._decoder_draws(taken, 4, 0, steps)(
                    tf.constant(epoch * steps + number, tf.int64), tf.size(indices)))
            want_images, want_labels = safe(*args)
            np.testing.assert_array_equal(labels, want_labels.numpy())
            np.testing.assert_array_equal(images, want_images.numpy())
        assert sum(int((labels < 0).sum()) for _, labels in got) == 1
        assert [Path(f).name for f, _ in bundle.take_skipped()] == ["broken.jpg"]
    pillow = [i for i, f in enumerate(split.files) if f.endswith((".gif", "broken.jpg"))]
    assert split.skips.needed_pillow(np.array(pillow)).all()
    plain = [i for i, f in enumerate(split.files) if f.endswith("0.jpg")]
    assert not split.skips.needed_pillow(np.array(plain)).any()


def test_a_resumed_epoch_of_cropped_files_is_the_tail_of_the_whole_one(tmp_path):
    cfg = DataConfig(source="folder", path=str(_folder(tmp_path)), image_size=16,
                     validation_split=0.0, cache=False)
    whole = _batches(load_data(cfg, CROP, seed=1).train_dataset(1, 4))
    tail = _batches(load_data(cfg, CROP, seed=1).train_dataset(1, 4, first_batch=2))
    assert len(tail) == len(whole) - 2
    for (x, y), (x_whole, y_whole) in zip(tail, whole[2:], strict=True):
        np.testing.assert_array_equal(y, y_whole)
        np.testing.assert_array_equal(x, x_whole)


def test_skip_log_remembers_the_keys_pillow_was_asked_for():
    skips = SkipLog()
    assert not skips.needed_pillow(np.array([1, 2])).any()
    skips.note_pillow(2)
    assert skips.needed_pillow(np.array([1, 2, 2])).tolist() == [False, True, True]


def test_a_png_named_jpg_fails_the_jpeg_only_route_once_then_goes_to_pillow(tmp_path,
                                                                            monkeypatch):
    """A folder of .jpg names is decoded without the format branch; a PNG among them fails
    its batch, which the safe decoder redoes, and from then on goes to Pillow."""
    root, rng = tmp_path / "photos", np.random.default_rng(1)
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(
                root / name / f"{i}.jpg")
    fake = root / "bee" / "fake.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 40, 4), np.uint8), "RGBA").save(fake, "PNG")
    (root / "ant" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(300))
    redone = []
    note = SkipLog.note_redone
    monkeypatch.setattr(SkipLog, "note_redone", lambda skips, keys: (
        redone.append(keys.tolist()), note(skips, keys)))
    cfg = DataConfig(source="folder", path=str(root), image_size=16, validation_split=0.0,
                     cache=False)
    bundle = load_data(cfg, AugmentConfig(), seed=0)
    files = bundle._train.files
    key, broken = files.index(str(fake)), files.index(str(root / "ant" / "broken.jpg"))
    want = fit_image(tf.constant(load_image(str(fake), 3)), Resize(16)).numpy()
    for epoch in range(2):
        batches = _batches(bundle.train_dataset(epoch, 4))
        images, labels = (np.concatenate(part) for part in zip(*batches, strict=True))
        order = bundle.epoch_order(epoch)
        np.testing.assert_array_equal(images[np.flatnonzero(order == key)[0]], want)
        assert np.flatnonzero(labels < 0).tolist() == np.flatnonzero(order == broken).tolist()
        assert [Path(f).name for f, _ in bundle.take_skipped()] == ["broken.jpg"]
        # the first epoch only: the batches holding the PNG and the broken file
        assert 1 <= len(redone) <= 2 and any(key in keys for keys in redone)
    pillow = bundle._train.skips.needed_pillow(np.arange(len(files)))
    assert np.flatnonzero(pillow).tolist() == sorted([key, broken])  # good JPEGs stay native
