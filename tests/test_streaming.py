"""Streaming folders and shards: decoded in tf.data like Pillow, bad files named, shards exact."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data import batch_decode, decode, load_data
from resnet_builder.data.bundle import ORDER_STREAM, seeded_rng
from resnet_builder.data.images import load_image
from resnet_builder.data.resizing import Resize, fit_image
from resnet_builder.data.shards import run_rows, shard_rows
from resnet_builder.errors import UserError
from resnet_builder.inference.decode import decoded_batches

AUG = AugmentConfig(random_crop_padding=2, horizontal_flip=True, random_scale=0.2)


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colours plus noise: compresses like a photo, so JPEG is exercised for real."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8))
    smooth = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC)).astype(int)
    return np.clip(smooth + rng.integers(-10, 10, smooth.shape), 0, 255).astype(np.uint8)


def _tree(root: Path, per_class: int, size: int = 12, ext: str = "png") -> Path:
    for k, name in enumerate(("ant", "bee", "cat")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_photo(size, size, 10 * k + i)).save(root / name / f"{i}.{ext}")
    return root


def _epoch(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------ pixels as Pillow's


def _nasty(path: Path) -> dict[str, Path]:
    """Every kind of file that needs care, written with Pillow."""
    made = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        made[name] = path / name
        img.save(path / name, **kw)

    photo = _photo(45, 60)
    save("rgb.jpg", Image.fromarray(photo), quality=90)
    save("gray.jpg", Image.fromarray(photo).convert("L"))
    save("rgb.png", Image.fromarray(photo))
    save("cmyk.jpg", Image.fromarray(photo).convert("CMYK"))
    save("g16.png", Image.fromarray(photo[..., 0].astype(np.uint16) * 257 + 100))
    rgba = np.dstack([photo, np.linspace(0, 255, 60, dtype=np.uint8)[None].repeat(45, 0)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("la.png", Image.fromarray(rgba, "RGBA").convert("LA"))
    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
    save("pal.png", pal)
    save("pal_t.png", pal, transparency=3)
    save("pal_t.gif", pal, transparency=3)
    save("rgb.bmp", Image.fromarray(photo))
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rot.jpg", Image.fromarray(photo), exif=exif)
    upright = Image.Exif()
    upright[0x0112] = 1
    save("upright.jpg", Image.fromarray(photo), exif=upright)
    return made


@pytest.mark.parametrize("channels", [1, 3])
def test_native_decode_matches_pillow(tmp_path, channels):
    """TensorFlow's kernels give Pillow's pixels (before resizing) for every file they take."""
    full = Resize(4096)  # no DCT scaling
    for name, path in _nasty(tmp_path).items():
        contents = tf.constant(path.read_bytes())
        if decode.needs_pil(contents).numpy():
            continue
        got = decode.to_channels(decode.decode_native(contents, full), channels).numpy()
        want = load_image(path, channels)
        assert got.shape == want.shape, name
        assert np.abs(got.astype(int) - want).max() <= 1, name


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 40, 64])
def test_pipeline_equals_pillow_decode_then_the_resize_rule(tmp_path, channels, size):
    """decode_and_resize = fit_image(load_image): exact but for JPEGs DCT-scaled on decode."""
    how = Resize(size)
    for name, path in _nasty(tmp_path).items():
        want = fit_image(tf.constant(load_image(path, channels)), how).numpy()
        got = decode.decode_and_resize(tf.constant(path.read_bytes()), how, channels).numpy()
        assert got.shape == want.shape == (size, size, channels), name
        diff = np.abs(got.astype(int) - want)
        if path.suffix == ".jpg" and size == 16:  # decoded at 1/2 scale: close, not equal
            assert diff.mean() < 6, name  # (a noisy test photo; smooth photos differ less)
        else:
            assert diff.max() <= 1, name


def test_only_odd_files_take_the_pillow_route(tmp_path):
    routed = {name for name, path in _nasty(tmp_path).items()
              if decode.needs_pil(tf.constant(path.read_bytes())).numpy()}
    assert routed == {"g16.png", "pal_t.png", "pal_t.gif", "rot.jpg"}


# ---------------------------------------------------------------------- bad files


def _with_bad_files(root: Path) -> dict[str, str]:
    _tree(root, 4, ext="jpg")
    good = (root / "ant" / "0.jpg").read_bytes()
    (root / "ant" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bee" / "noise.png").write_bytes(os.urandom(400))
    (root / "cat" / "empty.png").write_bytes(b"")
    return {"truncated.jpg": "truncated file", "noise.png": "not an image",
            "empty.png": "empty file"}


@pytest.mark.parametrize("cache", [True, False])
def test_streaming_skips_bad_files_with_label_minus_one_and_names_them(tmp_path, cache):
    bad = _with_bad_files(tmp_path)
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=16,
                                  validation_split=0.0, cache=cache), AUG, seed=0)
    assert bundle.num_train == 15 and bundle.skipped == []
    for epoch in range(2):
        x, y = _epoch(bundle.train_dataset(epoch, 4))
        assert x.shape == (15, 16, 16, 3)
        assert sorted(y[y >= 0].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
        assert (y == -1).sum() == 3
        named = {Path(f).name: reason for f, reason in bundle.take_skipped()}
        assert set(named) == set(bad)
        assert all(named[name].startswith(reason) for name, reason in bad.items())
    assert bundle.take_skipped() == []  # each failure is named once per epoch


def test_a_class_whose_every_file_is_unreadable_is_named_at_the_epoch_end(tmp_path, capsys):
    """Streaming meets bad files as it goes (data.verify refuses such a folder up front):
    the run said which files it skipped, but not that class bee had nothing left to learn."""
    from resnet_builder import train

    _tree(tmp_path / "images", 4, ext="jpg")
    for path in (tmp_path / "images" / "bee").iterdir():
        path.write_bytes(os.urandom(300))
    config = {"model": {"depth": 8, "block_type": "basic"},
              "data": {"source": "folder", "path": str(tmp_path / "images"), "image_size": 16,
                       "cache": False, "validation_split": 0.0, "batch_size": 4},
              "train": {"epochs": 1}, "run": {"project": str(tmp_path / "runs"),
                                              "progress": "line", "plots": False}}
    train(config)
    out = capsys.readouterr().out
    assert "skipped 4 unreadable file(s)" in out
    assert "warning: no training image of class(es) bee could be read (all skipped)" in out
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path / "images"),
                                  image_size=16, validation_split=0.0, cache=False), AUG, seed=0)
    files = sorted(str(p) for p in (tmp_path / "images").rglob("*.jpg"))
    assert bundle.unreadable_classes(set(files[:3])) == []  # ant keeps one file
    assert bundle.unreadable_classes({f for f in files if "/ant/" in f or "/cat/" in f}) == \
        ["ant", "cat"]


@pytest.mark.parametrize("attempt", [True, False], ids=["attempt", "careful"])
@pytest.mark.parametrize("from_files", [True, False], ids=["files", "bytes"])
def test_batch_decoder_keeps_every_file_in_its_place(tmp_path, attempt, from_files):
    """Native, Pillow-only and broken files mixed in one batch: each image lands in its own
    row, equal to decoding that file alone; broken rows are zeros with label -1. The same
    after the Pillow files are known (they skip the attempt), and for a clean batch (the
    attempt alone) and padding keys."""
    files = _nasty(tmp_path)
    (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(300))
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [files["rgb.jpg"], tmp_path / "noise.jpg", files["pal_t.gif"], files["rot.jpg"],
             files["rgba.png"], tmp_path / "empty.png", files["g16.png"]]
    how, skips = Resize(20), decode.SkipLog()
    run = batch_decode.batch_decoder(how, 3, skips, from_files=from_files, attempt=attempt)

    def sources(chosen: list[Path]) -> tf.Tensor:
        return tf.constant([str(p) if from_files else p.read_bytes() for p in chosen])

    keys = tf.range(10, 10 + len(paths), dtype=tf.int64)
    for _ in range(2):
        images, labels = run(keys, sources(paths), tf.range(len(paths), dtype=tf.int32))
        assert labels.numpy().tolist() == [0, -1, 2, 3, 4, -1, 6]
        for row, path in enumerate(paths):
            if labels[row] < 0:
                assert not images[row].numpy().any()
                continue
            alone = decode.decode_and_resize(tf.constant(path.read_bytes()), how, 3)
            np.testing.assert_array_equal(images[row].numpy(), alone.numpy(), err_msg=path.name)
        assert sorted(key for key, _ in skips.take()) == [11, 15]
    clean = [files["rgb.jpg"], files["rgba.png"]]
    images, labels = run(tf.constant([3, 4], tf.int64), sources(clean), tf.constant([5, 6]))
    assert labels.numpy().tolist() == [5, 6]
    for row, path in enumerate(clean):
        np.testing.assert_array_equal(images[row].numpy(), decode.decode_and_resize(
            tf.constant(path.read_bytes()), how, 3).numpy())
    padded = tf.concat([sources(clean[:1]), tf.constant([""])], 0)  # tfrecord's padding
    images, labels = run(tf.constant([3, -1], tf.int64), padded, tf.constant([5, 6]))
    assert labels.numpy().tolist() == [5, -1] and not images[1].numpy().any()
    assert skips.take() == []
    # A batch where nothing decodes natively, or at all, still comes back whole.
    images, labels = run(keys[:2], sources([tmp_path / "empty.png", files["pal_t.gif"]]),
                         tf.constant([7, 8]))
    assert images.shape == (2, 20, 20, 3) and labels.numpy().tolist() == [-1, 8]


def test_only_flipped_images_are_mirrored():
    from resnet_builder.data.augment import flip_some

    pixels = tf.constant(np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), np.uint8))
    flips = tf.constant([True, False, False, True, True])
    for images in (pixels, tf.cast(pixels, tf.float32)):  # stitched (uint8), gathered (float)
        want = tf.where(flips[:, None, None, None], tf.reverse(images, [2]), images)
        np.testing.assert_array_equal(flip_some(images, flips).numpy(), want.numpy())
        np.testing.assert_array_equal(flip_some(images, tf.zeros([5], tf.bool)).numpy(),
                                      images.numpy())


def test_streaming_validation_split_names_bad_files_too(tmp_path):
    _tree(tmp_path / "train", 2)
    _tree(tmp_path / "val", 1)
    (tmp_path / "val" / "bee" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=8), seed=0)
    _, y = _epoch(bundle.val_dataset(2))
    assert (y == -1).sum() == 1 and len(y) == 4
    assert [Path(f).name for f, _ in bundle.take_skipped()] == ["bad.png"]


def test_verify_leaves_bad_files_out_up_front(tmp_path):
    bad = _with_bad_files(tmp_path)
    with pytest.warns(UserWarning):
        bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=16,
                                      validation_split=0.0, verify=True), seed=0)
    assert bundle.num_train == 12
    assert {Path(f).name for f, _ in bundle.skipped} == set(bad)
    _, y = _epoch(bundle.train_dataset(0, 5))
    assert (y >= 0).all()


# ------------------------------------------------------------------------- sharding


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(image_size=12, channels=1, validation_split=0.1), AUG, seed=4)


@pytest.mark.parametrize("num_shards", [2, 4])
def test_shards_cover_the_epoch_and_equal_the_global_batch_rows(digits, num_shards):
    batch = 64  # 1617 images: the last global batch is partial
    whole = [(x.numpy(), y.numpy()) for x, y in digits.train_dataset(2, batch)]
    shards = [[(x.numpy(), y.numpy()) for x, y in
               digits.train_dataset(2, batch, shard=k, num_shards=num_shards)]
              for k in range(num_shards)]
    # every shard runs as many steps; one with no rows in the last batch gets a -1 row there
    assert {len(s) for s in shards} == {len(whole)}
    for b, (x, y) in enumerate(whole):
        parts = [(px[py >= 0], py[py >= 0]) for px, py in (s[b] for s in shards)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    padding = [y for s in shards for _, y in s if (y < 0).any()]
    assert [y.tolist() for y in padding] == [[-1]] * (num_shards - 1 if num_shards == 2 else 2)
    assert sum(int((y >= 0).sum()) for s in shards for _, y in s) == digits.num_train


def test_a_shard_without_rows_in_the_last_batch_gets_one_padding_row():
    def last_batch(count: int, shards: int) -> list[list[int]]:
        local = 8 // shards
        return [shard_rows(np.arange(count), (count - 1) // 8, 8, k * local, local).tolist()
                for k in range(shards)]

    assert last_batch(34, 2) == [[32, 33], [0]]  # 2 rows, both shard 0's: a padding row
    assert last_batch(38, 2) == [[32, 33, 34, 35], [36, 37]]  # both have some
    assert last_batch(32, 2) == [[24, 25, 26, 27], [28, 29, 30, 31]]  # no partial batch
    assert last_batch(33, 4) == [[32], [0], [0], [0]]


def test_shard_indices_cover_every_image_once():
    order = np.random.default_rng(0).permutation(103)
    rows = [shard_rows(order, b, 12, k * 4, 4) for b in range(9) for k in range(3)]
    assert sorted(np.concatenate(rows[:-1]).tolist()) == list(range(103))  # last: padding
    assert [len(r) for r in rows[-3:]] == [4, 3, 1]  # the third shard's is padding
    np.testing.assert_array_equal(rows[1], order[4:8])


@pytest.mark.parametrize("numbers", [range(0, 27), range(5, 22), range(13, 14), range(9, 9)])
def test_run_rows_dataset_equals_each_batch_found_alone(numbers):
    """The pipeline's per-epoch cut (``numbered``) gives each batch the rows ``of(number)``
    (numpy, one batch) gives, across epochs, from a mid-epoch start, with padding rows."""
    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng(epoch).permutation(103)

    for shard in range(3):  # 9 global batches of 12 per epoch; shard 2's last is padding
        rows = run_rows(order, 9, 12, shard * 4, 4, numbers)
        got = [(int(n), r.tolist()) for n, r in rows.numbered().as_numpy_iterator()]
        assert [n for n, _ in got] == list(numbers)
        for number, picked in got:
            alone = rows.of(tf.constant(number, tf.int64)).numpy().tolist()
            assert picked == alone == shard_rows(order(number // 9), number % 9, 12,
                                                 shard * 4, 4).tolist()


def test_in_memory_batches_keep_their_count(digits):
    """The per-epoch rows come through a flat_map, which hides the count: it is stated, so
    ``fit`` knows an epoch's length (without it, test_predict's digits model, trained with
    ``fit`` on these batches, got 33 of 36 right instead of at least 35)."""
    steps = digits.batches_per_epoch(50)
    assert int(digits.train_dataset(1, 50).cardinality()) == steps
    batches = digits.train_batches(range(0, 3), 50, first_batch=2)
    assert int(batches.cardinality()) == 3 * steps - 2 == len(list(batches))


def test_first_batch_is_the_tail_of_the_epoch(digits):
    x, y = _epoch(digits.train_dataset(1, 50))
    x5, y5 = _epoch(digits.train_dataset(1, 50, first_batch=5))
    np.testing.assert_array_equal(x5, x[250:])
    np.testing.assert_array_equal(y5, y[250:])
    xs, _ = _epoch(digits.train_dataset(1, 50, shard=1, num_shards=2, first_batch=5))
    np.testing.assert_array_equal(xs[:25], x[275:300])


def test_uneven_global_batch_is_a_user_error(digits):
    with pytest.raises(UserError, match="does not split evenly"):
        digits.train_dataset(0, 10, shard=0, num_shards=3)


def test_each_shard_decodes_only_its_share(tmp_path, monkeypatch):
    _tree(tmp_path, 8, ext="gif")  # GIFs take the Pillow route, where decodes can be counted
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=8,
                                  validation_split=0.0, cache=False), seed=0)
    calls = []
    original = decode.load_image
    monkeypatch.setattr(decode, "load_image", lambda *a: calls.append(1) or original(*a))
    seen = []
    for shard in range(2):
        calls.clear()
        _, y = _epoch(bundle.train_dataset(0, 6, shard=shard, num_shards=2))
        seen.append(len(y))
        assert len(calls) == len(y)
    assert seen == [12, 12]


# ------------------------------------------------------------------- memory and cache


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_memory_stays_flat_while_streaming_many_files(tmp_path):
    for i in range(3000):
        folder = tmp_path / f"c{i % 3}"
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (6, 6), (i % 256, 7, 9)).save(folder / f"{i}.png")
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=96,
                                  validation_split=0.0, cache=False), seed=0)
    assert bundle._train.store is None  # nothing is set aside to keep decoded images
    before = _rss_mb()
    for epoch in range(6):
        for _ in bundle.train_dataset(epoch, 100):
            pass
    growth = _rss_mb() - before
    # Keeping the decoded images would take 3000 * 96*96*3 B = 79 MiB (measured: 126 MiB
    # over six epochs with the in-memory cache on); streaming holds a few batches plus the
    # first epoch's graphs and thread pools (measured: 17-26 MiB).
    assert growth < 60, f"resident memory grew by {growth:.1f} MiB over six epochs"


def test_disk_cache_is_written_then_read(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    data = tmp_path / "data"
    _tree(data, 3)
    cfg = DataConfig(source="folder", path=str(data), image_size=8, validation_split=0.0,
                     cache="disk")
    bundle = load_data(cfg, seed=0)
    first = _epoch(bundle.train_dataset(0, 4))
    cached = list((tmp_path / "tmp" / "resnet_builder_cache").glob("*.npy"))
    assert len(cached) == 1  # images and their state, one file
    assert bundle._train.store.filled == 9
    again = load_data(cfg, seed=0)  # a new run finds the same cache file, already filled
    assert again._train.store.path == cached[0] and again._train.store.filled == 9
    for image in data.rglob("*.png"):
        image.write_bytes(b"")  # from now on only the cache can give the pixels
    for run in (bundle, again):
        x, y = _epoch(run.train_dataset(0, 4))
        np.testing.assert_array_equal(x, first[0])
        assert (y >= 0).all() and run.take_skipped() == []


def test_disk_cache_is_not_reused_after_images_are_overwritten(tmp_path, monkeypatch):
    """Same names, new pixels: the cache key holds each file's size and mtime."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    data = _tree(tmp_path / "data", 3)
    cfg = DataConfig(source="folder", path=str(data), image_size=8, validation_split=0.0,
                     cache="disk")
    old = load_data(cfg, seed=0)
    before = _epoch(old.train_dataset(0, 4))[0]
    for n, image in enumerate(sorted(data.rglob("*.png"))):
        Image.fromarray(_photo(12, 12, 100 + n)).save(image)  # in place, same name and size
        os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))
    new = load_data(cfg, seed=0)
    assert new._train.store.path != old._train.store.path
    assert new._train.store.filled == 0  # a fresh cache: nothing stale to read
    fresh = _epoch(load_data(dataclasses.replace(cfg, cache=False), seed=0).train_dataset(0, 4))[0]
    x, y = _epoch(new.train_dataset(0, 4))
    assert not np.array_equal(x, before)
    np.testing.assert_array_equal(x, fresh)
    assert (y >= 0).all()


def test_disk_cache_gives_todays_labels_when_a_csv_changes_them(tmp_path, monkeypatch):
    """Same files, labels swapped in the CSV: the cache (keyed by the files) keeps the
    pixels, and every label is the CSV's new one (it used to hand back the stored ones)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    data = _tree(tmp_path / "data", 2)
    files = sorted(data.rglob("*.png"))
    table = tmp_path / "labels.csv"

    def labelled(names: list[str]) -> np.ndarray:
        table.write_text("path,label\n" + "".join(f"{f},{n}\n" for f, n in zip(
            files, names, strict=True)))
        cfg = DataConfig(source="csv", path=str(table), image_size=8, validation_split=0.0,
                         cache="disk")
        bundle = load_data(cfg, seed=0)
        x, y = _epoch(bundle.train_dataset(0, 6))
        order = np.argsort(x.reshape(len(x), -1).sum(axis=1))  # the same images either way
        return bundle, x[order], np.array(bundle.class_names)[y[order]]

    first, x1, y1 = labelled(["cat", "dog"] * 3)
    second, x2, y2 = labelled(["dog", "cat"] * 3)
    assert second._train.store.path == first._train.store.path
    assert second._train.store.filled == 6  # read from the cache, not decoded again
    np.testing.assert_array_equal(x1, x2)
    assert (y2 == np.where(y1 == "cat", "dog", "cat")).all()


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_training_pixels_equal_predict_pixels(tmp_path, mode):
    """The bundle and predict's decoder prepare a file identically, in every resize mode."""
    _tree(tmp_path, 2, size=50, ext="jpg")
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=16,
                                  validation_split=0.0, cache=False, resize=mode), seed=0)
    x, _ = _epoch(bundle.train_dataset(0, 3))
    files = sorted(tmp_path.rglob("*.jpg"))
    order = seeded_rng(0, ORDER_STREAM, 0).permutation(len(files))
    _, images, bad = next(decoded_batches([files[i] for i in order], Resize(16, mode), 3, 8))
    assert bad == []
    np.testing.assert_array_equal(x, images)


def _fill_one(path: str, slot: int, barrier) -> None:
    from resnet_builder.data.stream import ImageStore

    barrier.wait()  # every worker opens the (not yet existing) cache at the same moment
    store = ImageStore(4, (2, 2, 1), Path(path))
    store.put(np.int64(slot), np.full((2, 2, 1), slot + 1, np.uint8), np.int32(slot))


def test_workers_opening_the_disk_cache_at_once_keep_each_others_images(tmp_path):
    import multiprocessing

    from resnet_builder.data.stream import ImageStore

    context = multiprocessing.get_context("fork")
    path = tmp_path / "cache.npy"
    for _ in range(3):  # a race: try it a few times
        path.unlink(missing_ok=True)
        barrier = context.Barrier(4)
        workers = [context.Process(target=_fill_one, args=(str(path), slot, barrier))
                   for slot in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        store = ImageStore(4, (2, 2, 1), path)
        assert store.filled == 4
        for slot in range(4):
            image, label = store.get(np.int64(slot))
            assert int(label) == slot and (image == slot + 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npy"]  # no temp files left


def test_a_disk_without_room_for_the_disk_cache_is_named_not_a_crash(tmp_path, monkeypatch):
    """The cache file is sparse until written: its blocks are claimed first, so a full disk
    is an error naming the file (writing into the memory map killed the process, SIGBUS)."""
    import errno

    from resnet_builder.data.stream import ImageStore

    claimed = []

    def no_room(fd, offset, length):
        claimed.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    path = tmp_path / "cache" / "c.npy"
    with pytest.raises(UserError, match=r"no room for the disk cache .*c\.npy .*No space left"):
        ImageStore(1000, (32, 32, 3), path)
    assert claimed and claimed[0] >= 1000 * 32 * 32 * 3  # the whole file, pixels and states
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary file is gone
    monkeypatch.undo()
    assert ImageStore(10, (2, 2, 1), path).filled == 0  # with room, as before
