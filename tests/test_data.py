"""data.py: each source gives the right images, labels, splits and statistics, reproducibly."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_builder.config import AugmentConfig, DataConfig
from resnet_builder.data import DataBundle, SkippedFilesWarning, cifar, load_data
from resnet_builder.data import folder as folder_source
from resnet_builder.errors import UserError

COLOURS = {"ant": (200, 30, 30), "bee": (30, 200, 30), "cat": (30, 30, 200)}


def _cfg(**kwargs) -> DataConfig:
    return DataConfig(**kwargs)


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _first_batch(bundle: DataBundle, epoch: int, size: int = 32):
    x, y = next(iter(bundle.train_dataset(epoch, size)))
    return x.numpy(), y.numpy()


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(_cfg(image_size=16, channels=1), seed=0)


def test_digits_shapes_counts_and_names(digits):
    assert digits.class_names == [str(k) for k in range(10)]
    assert (digits.num_train, digits.num_val) == (1437, 360)
    assert (digits.image_size, digits.channels) == (16, 1)
    x, y = next(iter(digits.train_dataset(0, 64)))
    assert x.dtype.name == "uint8" and y.dtype.name == "int32"  # uint8 until the model
    assert x.shape == (64, 16, 16, 1) and y.shape == (64,)
    x_val, y_val = _arrays(digits.val_dataset(100))
    assert x_val.shape == (360, 16, 16, 1) and x_val.min() >= 0 and x_val.max() <= 255
    assert x_val.max() > 200  # scaled from 0..16 to 0..255
    counts = np.bincount(y_val, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37  # stratified: ~20 % of each class


def test_digits_rgb_and_last_partial_batch():
    bundle = load_data(_cfg(image_size=8, channels=3, validation_split=0.5), seed=1)
    x, _ = _arrays(bundle.train_dataset(0, 500))
    assert x.shape == (bundle.num_train, 8, 8, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # gray repeated
    assert bundle.num_train + bundle.num_val == 1797
    assert [len(y) for _, y in bundle.train_dataset(0, 500)][-1] == bundle.num_train % 500


def test_digits_split_depends_only_on_seed(digits):
    again = load_data(_cfg(image_size=16, channels=1), seed=0)
    other = load_data(_cfg(image_size=16, channels=1), seed=5)
    x0, y0 = _arrays(digits.val_dataset(360))
    x1, y1 = _arrays(again.val_dataset(360))
    x2, _ = _arrays(other.val_dataset(360))
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
    assert not np.array_equal(x0, x2)


def test_stats_come_from_the_training_split(digits):
    x_train, _ = _arrays(digits.train_dataset(0, 512))
    np.testing.assert_allclose(digits.mean, [x_train.mean()], rtol=1e-6)
    np.testing.assert_allclose(digits.std, [x_train.std()], rtol=1e-5)
    x_val, _ = _arrays(digits.val_dataset(512))
    everything = np.concatenate([x_train, x_val])
    assert abs(everything.mean() - digits.mean[0]) > 1e-3  # val did not leak into the stats


@pytest.mark.parametrize("channels", [1, 3])
def test_channel_stats_of_uint8_pixels_equal_numpy_and_float_pixels(channels):
    from resnet_builder.data.splits import ChannelStats

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 9, 7, channels)).astype(np.uint8)
    pixels[..., 0] //= 3  # channels with different statistics
    levels, floats = ChannelStats(channels), ChannelStats(channels)
    for chunk in (pixels[:25], pixels[25:]):  # added in parts, as the chunked callers do
        levels.add(chunk)
        floats.add(chunk.astype(np.float32))
    flat = pixels.reshape(-1, channels).astype(np.float64)
    np.testing.assert_allclose(levels.result()[0], flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(levels.result()[1], flat.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(levels.result(), floats.result(), rtol=1e-12)


def test_limit_caps_training_images_in_every_class():
    bundle = load_data(_cfg(image_size=8, limit=100), seed=0)
    assert (bundle.num_train, bundle.num_val) == (100, 360)
    _, y = _arrays(bundle.train_dataset(0, 100))
    assert set(y) == set(range(10))


def test_no_validation_split_gives_no_val_dataset():
    bundle = load_data(_cfg(image_size=8, validation_split=0.0), seed=None)
    assert (bundle.num_train, bundle.num_val) == (1797, 0)
    assert bundle.val_dataset(32) is None


def test_sample_images_are_uint8_and_repeat(digits):
    sample = digits.sample_images(20)
    assert sample.dtype == np.uint8 and sample.shape == (20, 16, 16, 1)
    np.testing.assert_array_equal(sample, digits.sample_images(20))
    assert digits.sample_images(5000).shape[0] == digits.num_train


# ------------------------------------------------------------------- reproducibility

AUG = AugmentConfig(random_crop_padding=2, horizontal_flip=True, random_scale=0.2)


def test_same_seed_same_epoch_even_when_resumed():
    first = load_data(_cfg(image_size=16), AUG, seed=3)
    resumed = load_data(_cfg(image_size=16), AUG, seed=3)
    x0, y0 = _first_batch(first, 0)
    x0b, y0b = _first_batch(resumed, 0)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    x1, y1 = _first_batch(first, 1)
    x1b, y1b = _first_batch(load_data(_cfg(image_size=16), AUG, seed=3), 1)  # epoch 1 only
    np.testing.assert_array_equal(x1, x1b)
    np.testing.assert_array_equal(y1, y1b)
    assert not np.array_equal(y0, y1)  # another epoch, another order
    _, y_other = _first_batch(load_data(_cfg(image_size=16), AUG, seed=4), 0)
    assert not np.array_equal(y0, y_other)


def test_augmentation_changes_images_but_not_shapes_or_order():
    plain = load_data(_cfg(image_size=16), seed=0)
    augmented = load_data(_cfg(image_size=16), AUG, seed=0)
    x, y = _first_batch(plain, 2, 64)
    xa, ya = _first_batch(augmented, 2, 64)
    np.testing.assert_array_equal(y, ya)
    assert xa.shape == x.shape and (x.dtype, xa.dtype) == (np.uint8, np.float32)  # new pixels
    assert xa.min() >= 0 and xa.max() <= 255
    changed = [not np.allclose(a, b) for a, b in zip(xa, x, strict=True)]
    assert sum(changed) > 48


def test_flip_only_mirrors_and_crop_only_shifts():
    plain = _first_batch(load_data(_cfg(image_size=16), seed=0), 0)[0]
    flipped = _first_batch(load_data(_cfg(image_size=16), AugmentConfig(horizontal_flip=True),
                                     seed=0), 0)[0]
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, plain, strict=True)]
    kept = [np.array_equal(a, b) for a, b in zip(flipped, plain, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 4 < sum(mirrored) < 28
    assert flipped.dtype == np.uint8  # a flip alone makes no new pixels: uint8 to the model

    bundle = load_data(_cfg(image_size=16), AugmentConfig(random_crop_padding=3), seed=0)
    cropped = _first_batch(bundle, 0)[0]
    fill = np.float32(bundle.mean[0])
    for a, b in zip(cropped[:8], plain[:8], strict=True):
        padded = np.pad(b[..., 0].astype(np.float32), 3, constant_values=fill)
        shifts = [(dy, dx) for dy in range(7) for dx in range(7)
                  if np.allclose(padded[dy:dy + 16, dx:dx + 16], a[..., 0], atol=1e-3)]
        assert shifts, "a padded crop is a shifted copy filled with the mean"


# ---------------------------------------------------------------------------- folder


def _image(path: Path, colour: tuple[int, int, int], size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _class_tree(root: Path, per_class: int, classes=("ant", "bee", "cat")) -> Path:
    for name in classes:
        for i in range(per_class):
            _image(root / name / f"{name}{i}.png", COLOURS[name])
    return root


def _labels_match_colours(bundle: DataBundle, dataset) -> None:
    x, y = _arrays(dataset)
    for image, label in zip(x, y, strict=True):
        np.testing.assert_allclose(image[0, 0], COLOURS[bundle.class_names[label]])


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_folder_with_train_and_val_matches_classes_by_name(tmp_path, val_name):
    _class_tree(tmp_path / "train", 4)
    _class_tree(tmp_path / val_name, 2, classes=("cat", "ant", "bee"))
    bundle = load_data(_cfg(source="folder", path=str(tmp_path), image_size=8), seed=0)
    assert bundle.class_names == ["ant", "bee", "cat"]
    assert (bundle.num_train, bundle.num_val, bundle.skipped) == (12, 6, [])
    _labels_match_colours(bundle, bundle.train_dataset(0, 5))
    _labels_match_colours(bundle, bundle.val_dataset(5))


def test_single_folder_is_split_per_class(tmp_path):
    _class_tree(tmp_path, 10)
    bundle = load_data(_cfg(source="folder", path=str(tmp_path), image_size=4,
                            validation_split=0.2), seed=0)
    assert (bundle.num_train, bundle.num_val) == (24, 6)
    _, y_val = _arrays(bundle.val_dataset(10))
    assert list(np.bincount(y_val)) == [2, 2, 2]
    _labels_match_colours(bundle, bundle.val_dataset(10))


def test_folder_bad_files_are_skipped_with_reasons(tmp_path):
    _class_tree(tmp_path, 3)
    good = _image(tmp_path / "x.png", (1, 2, 3), size=32).read_bytes()
    (tmp_path / "ant" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "ant" / "garbage.jpg").write_bytes(os.urandom(300))
    (tmp_path / "bee" / "letter.jpg").write_text("dear model, this is not a photo")
    (tmp_path / "bee" / "notes.txt").write_text("labels checked by hand")
    (tmp_path / "cat" / "empty.png").write_bytes(b"")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored silently
    with pytest.warns(SkippedFilesWarning) as caught:
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), image_size=8,
                                validation_split=0.0, verify=True), seed=0)
    reasons = {Path(f).name: r for f, r in bundle.skipped}
    assert reasons["truncated.png"] == "truncated file"
    assert reasons["garbage.jpg"].startswith("not an image")
    assert reasons["letter.jpg"].startswith("not an image")
    assert reasons["notes.txt"].startswith("not an image file (extension '.txt')")
    assert reasons["empty.png"] == "empty file"
    assert reasons["x.png"] == "not inside a class folder"
    assert ".DS_Store" not in reasons
    message = str(caught[0].message)
    assert all(name in message for name in reasons)
    assert bundle.num_train == 9
    _labels_match_colours(bundle, bundle.train_dataset(0, 4))


def test_the_cli_shows_skipped_files_as_a_plain_warning(tmp_path):
    """In the terminal a skipped file is one ``warning:`` line per notice, not Python's
    warning form with our source file and line."""
    from click.testing import CliRunner

    from resnet_builder.cli import main

    _class_tree(tmp_path / "images", 3)
    (tmp_path / "images" / "bee" / "notes.txt").write_text("labels checked by hand")
    digits = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"
    settings = [f"data.path={tmp_path / 'images'}", "data.source=folder", "data.image_size=8",
                "data.channels=3", "data.validation_split=0", "model.depth=8",
                "model.block_type=basic", "train.epochs=1", "run.plots=false",
                "run.tensorboard=false"]
    result = CliRunner().invoke(main, [
        "train", str(digits), *[arg for item in settings for arg in ("--set", item)],
        "--progress", "none", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "warning: skipped 1 file(s) that are not usable images:" in result.output
    assert "notes.txt" in result.output
    assert "SkippedFilesWarning" not in result.output and ".py:" not in result.output


@pytest.mark.parametrize("verify", [True, False])
def test_folder_without_cache_decodes_on_demand_identically(tmp_path, verify):
    for i, name in enumerate(COLOURS):
        for j in range(4):
            pixels = np.random.default_rng(i * 10 + j).integers(0, 256, (12, 9, 3), np.uint8)
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / name / f"{j}.png")
    bundles = [load_data(_cfg(source="folder", path=str(tmp_path), image_size=8, cache=cache,
                              verify=verify), AugmentConfig(random_crop_padding=1), seed=0)
               for cache in (True, False)]
    if verify:  # decoded up front: kept in memory as arrays
        assert bundles[0]._train.ready is not None and bundles[1]._train.ready is None
    else:  # streamed: decoded images kept as they are read
        assert bundles[0]._train.store is not None and bundles[1]._train.store is None
    for a, b in zip(_first_batch(bundles[0], 1), _first_batch(bundles[1], 1), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(*[_arrays(b.val_dataset(4))[0] for b in bundles])
    np.testing.assert_allclose(bundles[0].mean, bundles[1].mean)
    np.testing.assert_array_equal(bundles[0].sample_images(3), bundles[1].sample_images(3))


@pytest.mark.parametrize("verify", [True, False])
def test_folder_converts_image_modes(tmp_path, verify):
    (tmp_path / "gray").mkdir()
    (tmp_path / "odd").mkdir()
    Image.new("L", (4, 4), 90).save(tmp_path / "gray" / "l.png")
    Image.fromarray(np.full((4, 4), 257 * 60, np.uint16)).save(tmp_path / "gray" / "g16.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "odd" / "clear.png")
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "odd" / "p.gif")
    bundle = load_data(_cfg(source="folder", path=str(tmp_path), image_size=4,
                            validation_split=0.0, verify=verify), seed=0)
    x = bundle.sample_images(4)  # sorted picks: gray/g16, gray/l, odd/clear, odd/p
    np.testing.assert_array_equal(x[:, 0, 0], [[60] * 3, [90] * 3, [255] * 3, [10, 20, 30]])


@pytest.mark.parametrize(("make", "expected"), [
    (lambda root: None, "needs data.path"),
    (lambda root: root / "missing", "not found"),
    (lambda root: (root / "a.png").write_bytes(b"x") and root, "no class folders"),
    (lambda root: _class_tree(root, 2, ("ant",)), "only one class folder"),
    (lambda root: (_class_tree(root, 1), (root / "dog").mkdir(), root)[-1],
     "class folder .*dog has no images"),
    (lambda root: (_class_tree(root / "val", 1), root)[-1], "has val/ but no train/"),
    (lambda root: (_class_tree(root / "train", 1), _class_tree(root / "val", 1),
                   _class_tree(root / "valid", 1), root)[-1], "several validation folders"),
    (lambda root: (_class_tree(root / "training", 1), _class_tree(root / "Testing", 1),
                   root)[-1], "holds Testing/, training/: split folders, not classes"),
])
def test_folder_errors_name_the_problem(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(UserError, match=expected) as info:
        load_data(_cfg(source="folder", path=None if path is None else str(path)), seed=0)
    assert info.value.hint


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path):
    _class_tree(tmp_path, 3, ("ant", "bee"))
    _image(tmp_path / "ant" / os.fsdecode(b"caf\xe9.png"), COLOURS["ant"])
    with pytest.warns(SkippedFilesWarning, match=r"caf\\xe9\.png: its name is not valid UTF-8"):
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0,
                                cache=False), seed=0)
    assert bundle.num_train == 6
    assert [(Path(p).name, why) for p, why in bundle.skipped] == [
        ("caf\\xe9.png", "its name is not valid UTF-8 (rename the file)")]
    _, labels = _arrays(bundle.train_dataset(0, 4))
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    os.rename(tmp_path / "bee", tmp_path / os.fsdecode(b"b\xe9e"))
    with pytest.raises(UserError, match=r"b\\xe9e: its name is not valid UTF-8"):
        load_data(_cfg(source="folder", path=str(tmp_path)), seed=0)


@pytest.mark.parametrize("verify", [False, True])
def test_the_validation_splits_skipped_files_are_kept_apart(tmp_path, verify):
    """evaluate counts the validation split's skipped files, not train/'s (it counted both)."""
    _class_tree(tmp_path / "train", 2, ("ant", "bee"))
    _class_tree(tmp_path / "val", 1, ("ant", "bee"))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("x")
    (tmp_path / "val" / "bee" / "readme.md").write_text("x")
    if verify:
        (tmp_path / "val" / "ant" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(SkippedFilesWarning):
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), verify=verify), seed=0)
    assert sorted(Path(p).name for p, _ in bundle.skipped) == sorted(
        ["notes.txt", "readme.md"] + (["broken.png"] if verify else []))
    assert sorted(Path(p).name for p, _ in bundle.val_skipped) == sorted(
        ["readme.md"] + (["broken.png"] if verify else []))


def test_split_folders_are_found_in_any_case(tmp_path):
    _class_tree(tmp_path / "Train", 2, ("ant", "bee"))
    _class_tree(tmp_path / "VAL", 1, ("ant", "bee"))
    bundle = load_data(_cfg(source="folder", path=str(tmp_path)), seed=0)
    assert bundle.class_names == ["ant", "bee"]  # not ["Train", "VAL"]
    assert (bundle.num_train, bundle.num_val) == (4, 2)


def test_a_class_named_train_stays_a_class(tmp_path):
    """Bus/, Car/, Train/: Train/ in another case is the split only beside a val folder."""
    for name, colour in zip(("Bus", "Car", "Train"), COLOURS.values(), strict=False):
        for i in range(2):
            _image(tmp_path / name / f"{i}.png", colour)
    bundle = load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0), seed=0)
    assert bundle.class_names == ["Bus", "Car", "Train"]


def test_hidden_folders_do_not_hide_split_folders_named_as_classes(tmp_path):
    _class_tree(tmp_path / "training", 1)
    _class_tree(tmp_path / "testing", 1)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    with pytest.raises(UserError, match="split folders, not classes"):
        load_data(_cfg(source="folder", path=str(tmp_path)), seed=0)


def test_folder_val_classes_must_match_train(tmp_path):
    _class_tree(tmp_path / "train", 2, ("ant", "bee", "cat"))
    _class_tree(tmp_path / "val", 1, ("ant", "bee"))
    (tmp_path / "val" / "dog").mkdir()
    _image(tmp_path / "val" / "dog" / "d.png", (0, 0, 0))
    with pytest.raises(UserError) as info:
        load_data(_cfg(source="folder", path=str(tmp_path)), seed=0)
    assert "missing in val/: cat" in info.value.message
    assert "only in val/: dog" in info.value.message


def test_folder_class_with_only_bad_files_is_an_error(tmp_path):
    _class_tree(tmp_path, 2, ("ant", "bee"))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(SkippedFilesWarning), pytest.raises(UserError, match=r"class.*cat"):
        load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0, verify=True),
                  seed=0)


def test_streamed_stats_equal_the_stats_of_every_image_decoded_up_front(tmp_path, monkeypatch):
    """The stats sample (all images of a small folder) decoded natively, with Pillow taking
    what only it reads like predict and a broken file counting nowhere, gives the stats
    ``data.verify`` computes over the same images."""
    rng = np.random.default_rng(0)
    for name in ("ant", "bee"):
        (tmp_path / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (40, 50, 3), np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.jpg")
    palette = Image.fromarray(rng.integers(0, 4, (30, 30), np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 90, 90, 90])
    palette.save(tmp_path / "ant" / "palette.png", transparency=1)  # Pillow only
    (tmp_path / "bee" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rescued = []
    decoded_images = folder_source.decoded_images

    def recorded(lookup, picks, shape):
        rescued.append(len(picks))
        return decoded_images(lookup, picks, shape)

    monkeypatch.setattr(folder_source, "decoded_images", recorded)
    settings = dict(source="folder", path=str(tmp_path), image_size=32, validation_split=0.0)
    with pytest.warns(SkippedFilesWarning):  # verify names the broken file
        verified = load_data(_cfg(**settings, verify=True), seed=0)
    streamed = load_data(_cfg(**settings, cache=False), seed=0)
    assert rescued == [2]  # the palette PNG and the broken file; 12 JPEGs decoded natively
    assert verified.num_train == 13 and streamed.num_train == 14
    np.testing.assert_allclose(streamed.mean, verified.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.std, verified.std, rtol=1e-12)


def test_natively_decoded_with_no_picks_gives_no_images():
    from resnet_builder.data.resizing import Resize

    images, left = folder_source.natively_decoded(["a.jpg"], np.zeros(0, np.int64),
                                                  Resize(8), 3)
    assert images.shape == (0, 8, 8, 3) and len(left) == 0


# ------------------------------------------------------------------------------- npz


def test_npz_with_val_and_class_names(tmp_path):
    x_train = np.full((6, 5, 5, 3), 50, np.uint8)
    x_val = np.full((2, 5, 5, 3), 200, np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 0, 1, 2]).reshape(6, 1),
             x_val=x_val, y_val=np.array([2, 1]), class_names=np.array(["r", "g", "b"]))
    bundle = load_data(_cfg(source="npz", path=str(path), image_size=5), seed=0)
    assert bundle.class_names == ["r", "g", "b"]
    assert (bundle.num_train, bundle.num_val) == (6, 2)
    assert bundle.mean == [50.0] * 3  # the brighter val images are not counted
    x, y = _arrays(bundle.val_dataset(8))
    assert list(y) == [2, 1] and np.all(x == 200)


def test_npz_grayscale_float_without_val_is_split(tmp_path):
    x = np.linspace(0, 1, 20 * 4 * 4).reshape(20, 4, 4).astype(np.float32)
    path = tmp_path / "g.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 4)
    bundle = load_data(_cfg(source="npz", path=str(path), image_size=8, channels=1,
                            validation_split=0.25), seed=0)
    assert bundle.class_names == ["0", "1", "2", "3"]
    assert (bundle.num_train, bundle.num_val) == (15, 5)
    images, _ = _arrays(bundle.train_dataset(0, 20))
    assert images.shape == (15, 8, 8, 1) and images.max() > 200


@pytest.mark.parametrize(("arrays", "expected"), [
    ({"x_train": np.zeros((2, 4, 4), np.uint8)}, "lacks y_train"),
    ({"images": np.zeros(2)}, "lacks x_train, y_train"),
    ({"x_train": np.zeros((2, 4, 4)), "y_train": np.array([0, 1]),
      "x_val": np.zeros((1, 4, 4))}, "lacks y_val"),
    ({"x_train": np.zeros((2, 4)), "y_train": np.array([0, 1])}, "x_train has shape"),
    ({"x_train": np.zeros((2, 4, 4)), "y_train": np.array([0, 1, 1])}, "expected 2 labels"),
    ({"x_train": np.zeros((2, 4, 4)), "y_train": np.array([0, 3]),
      "class_names": np.array(["a", "b"])}, "class_names has 2"),
    ({"x_train": np.full((2, 4, 4), 300), "y_train": np.array([0, 1])}, "outside 0..255"),
])
def test_npz_errors_name_the_arrays(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=expected):
        load_data(_cfg(source="npz", path=str(path)), seed=0)


def test_npz_that_is_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_text("nope")
    with pytest.raises(UserError, match=r"x\.npz is not an \.npz archive") as caught:
        load_data(_cfg(source="npz", path=str(tmp_path / "x.npz")), seed=0)
    assert "pickle" not in str(caught.value) and "numpy.savez(" in caught.value.hint


@pytest.mark.parametrize("name", ["x.npy", "renamed.npz"])
def test_npz_source_given_a_single_npy_array_says_so(tmp_path, name):
    """np.load returns a bare array for .npy: it crashed with a TypeError (a "bug")."""
    path = tmp_path / name
    with open(path, "wb") as file:
        np.save(file, np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(UserError, match=f"{name} holds a single array.*not an .npz") as caught:
        load_data(_cfg(source="npz", path=str(path)), seed=0)
    assert "numpy.savez(path, x_train=..., y_train=...)" in caught.value.hint


def test_npz_object_arrays_are_refused_without_numpys_pickle_advice(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([None] * 2, dtype=object), y_train=np.array([0, 1]))
    with pytest.raises(UserError, match=r"x_train in .* holds Python objects") as caught:
        load_data(_cfg(source="npz", path=str(path)), seed=0)
    assert "allow_pickle" not in str(caught.value)


@pytest.mark.parametrize(("labels", "names", "said"), [
    ([0, 3, 0, 3], None, r"no training images for class\(es\) 1, 2 in .*0\.\.3"),
    ([0, 1_000_000, 0, 1], None, r"class\(es\) 2, 3, .*, 11 and 999988 more in"),
    ([0, 1, 0, 1], ["a", "b", "c"], r"no training images for class\(es\) c in"),
    ([0, 1, 0, 1], ["cat", "cat"], r"class_names in .* holds 'cat' more than once"),
    ([0, 2, 0, 2], ["a", "b"], r"labels go up to 2 but class_names has 2 entries"),
])
def test_npz_labels_must_be_every_class_id_from_zero(tmp_path, labels, names, said):
    """Gaps or a stray large id made output units no image teaches (1,000,001 of them)."""
    path = tmp_path / "labels.npz"
    extra = {} if names is None else {"class_names": np.array(names)}
    np.savez(path, x_train=np.zeros((4, 4, 4), np.uint8), y_train=np.array(labels), **extra)
    with pytest.raises(UserError, match=said):
        load_data(_cfg(source="npz", path=str(path)), seed=0)


def test_npz_class_seen_only_in_validation_is_refused(tmp_path):
    path = tmp_path / "val.npz"
    x = np.zeros((2, 4, 4), np.uint8)
    np.savez(path, x_train=x, y_train=np.array([0, 1]), x_val=x, y_val=np.array([2, 2]))
    with pytest.raises(UserError, match=r"no training images for class\(es\) 2 in") as caught:
        load_data(_cfg(source="npz", path=str(path)), seed=0)
    assert "numpy.unique" in caught.value.hint


# ------------------------------------------------------------------------------- csv


def _csv_case(root: Path, text: bytes) -> Path:
    _image(root / "img" / "a" / "0.png", COLOURS["ant"])
    _image(root / "img" / "1.png", COLOURS["bee"])
    (root / "l.csv").write_bytes(text)
    return root / "l.csv"


def test_a_csv_that_is_not_utf8_says_to_save_it_as_utf8(tmp_path):
    path = _csv_case(tmp_path, "path,labels\nimg/1.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"l\.csv: it is not UTF-8 text \(byte 0xe9") as caught:
        load_data(_cfg(source="csv", path=str(path)), seed=0)
    assert "save the CSV as UTF-8" in caught.value.hint


@pytest.mark.parametrize(("header", "row", "but"), [
    ("path,ant,bee,notes", "img/1.png,0,1,x", "the path"),
    ("path,split,ant,bee,notes", "img/1.png,train,0,1,x", "the path and split"),
])
def test_a_bad_class_column_value_names_its_column(tmp_path, header, row, but):
    """A stray text column read as a class: the message says which column and why."""
    path = _csv_case(tmp_path, f"{header}\n{row}\n".encode())
    with pytest.raises(UserError, match=r"l\.csv:2: class columns hold 0 or 1, got 'x' in "
                       rf"column 'notes' \(without a 'labels' column, every column but {but} "
                       "is a class column\\)"):
        load_data(_cfg(source="csv", path=str(path)), seed=0)


def test_a_csv_row_naming_a_folder_says_it_is_a_folder(tmp_path):
    path = _csv_case(tmp_path, b"path,labels\nimg/1.png,bee\nimg/a,ant\n")
    with pytest.raises(UserError, match=r"l\.csv:3: .*img/a is a folder, not an image file"):
        load_data(_cfg(source="csv", path=str(path)), seed=0)


# ------------------------------------------------------------------------- synthetic


def test_synthetic_is_seeded_and_learnable():
    cfg = _cfg(source="synthetic", synthetic_samples=300, synthetic_classes=5, image_size=8)
    bundle = load_data(cfg, seed=0)
    assert bundle.class_names == ["0", "1", "2", "3", "4"]
    assert (bundle.num_train, bundle.num_val) == (240, 60)
    x, y = _arrays(bundle.train_dataset(0, 300))
    x_val, y_val = _arrays(bundle.val_dataset(300))
    np.testing.assert_array_equal(x_val, _arrays(load_data(cfg, seed=0).val_dataset(300))[0])
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(5)])
    distances = ((x_val[:, None] - centroids[None]) ** 2).sum(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == y_val).mean() > 0.8  # chance is 0.2


# ----------------------------------------------------------------------------- CIFAR


def _py2(value) -> bytes:
    """Pickle opcodes as Python 2's cPickle (protocol 2) wrote the official CIFAR files."""
    if isinstance(value, bytes):  # a Python 2 str
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + struct.pack("<i", len(value)) + value
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, list):
        return b"](" + b"".join(_py2(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in value.items()) + b"u"
    assert isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 2
    dtype = b"cnumpy\ndtype\n" + _py2(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2(b"|") + \
        b"NNN" + _py2(-1) + _py2(-1) + b"K\x00tb"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2(b"b")
            + b"\x87R(K\x01" + _py2(value.shape[0]) + _py2(value.shape[1]) + b"\x86" + dtype
            + b"\x89" + _py2(value.tobytes()) + b"tb")


def _fake_cifar_dir(root: Path, variant: str = "cifar10", per_batch: int = 3) -> Path:
    """A tiny folder in the real CIFAR format: pickled dicts with bytes keys, RGB planes.

    The meta and test files are byte-for-byte Python 2 pickles, like the official ones;
    the training batches are Python 3 protocol-2 pickles, so both kinds are read.
    """
    spec = cifar.SPECS[variant]
    folder = root / spec.folder
    folder.mkdir(parents=True)
    num_classes = 10 if variant == "cifar10" else 100
    names = [f"class{k}".encode() for k in range(num_classes)]
    meta = {spec.names_key.encode(): names, b"num_cases_per_batch": per_batch}
    (folder / spec.meta).write_bytes(b"\x80\x02" + _py2(meta) + b".")
    for index, name in enumerate([*spec.train, spec.test]):
        data = np.zeros((per_batch, 3072), np.uint8)
        data[:, :1024] = np.arange(1024) % 256  # red plane: a ramp along rows
        data[:, 2048:] = index  # blue plane tells the batch apart
        labels = [(index + i) % num_classes for i in range(per_batch)]
        batch = {b"batch_label": name.encode(), spec.label_key.encode(): labels,
                 b"data": data, b"filenames": [b"f.png"] * per_batch}
        if name == spec.test:
            (folder / name).write_bytes(b"\x80\x02" + _py2(batch) + b".")
        else:
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _tar(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return target


def _check_cifar(bundle: DataBundle, train: int, val: int) -> None:
    assert (bundle.num_train, bundle.num_val) == (train, val)
    assert bundle.class_names[:2] == ["class0", "class1"]
    x, _ = _arrays(bundle.val_dataset(8))
    assert x.shape == (val, 32, 32, 3)
    assert (x[0, 0, 1, 0], x[0, 1, 0, 0], x[0, 0, 0, 1]) == (1, 32, 0)  # row-major planes
    assert np.all(x[..., 2] == (5 if bundle.num_classes == 10 else 1))  # the test batch


def test_cifar10_from_folder_parent_and_archive(tmp_path):
    folder = _fake_cifar_dir(tmp_path / "src")
    archive = _tar(folder, tmp_path / "c.tar.gz")
    for path in (folder, folder.parent, archive):
        bundle = load_data(_cfg(source="cifar10", path=str(path)), seed=0)
        _check_cifar(bundle, 15, 3)


def test_cifar100_and_grayscale(tmp_path):
    folder = _fake_cifar_dir(tmp_path, "cifar100", per_batch=4)
    bundle = load_data(_cfg(source="cifar100", path=str(folder)), seed=0)
    _check_cifar(bundle, 4, 4)
    assert bundle.num_classes == 100
    gray = load_data(_cfg(source="cifar100", path=str(folder), channels=1, image_size=16), seed=0)
    assert gray.sample_images(1).shape == (1, 16, 16, 1)


def test_cifar_from_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _fake_cifar_dir(tmp_path / "datasets" / "cifar-10-batches-py-target")  # Keras 3 layout
    _check_cifar(load_data(_cfg(source="cifar10"), seed=0), 15, 3)


def test_cifar_missing_batches_are_named(tmp_path):
    folder = _fake_cifar_dir(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(UserError, match="missing data_batch_4"):
        load_data(_cfg(source="cifar10", path=str(folder)), seed=0)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_tampered_cifar_pickle_is_refused_and_not_run(tmp_path, payload):
    folder = _fake_cifar_dir(tmp_path / "src")
    marker = tmp_path / "pwned"
    if payload == "os.system":
        evil = _Evil()
        evil.marker = marker
    else:
        evil = type("E", (), {"__reduce__": lambda self: (eval, (f"open('{marker}', 'w')",))})()
    batch = {b"data": evil, b"labels": [0]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    for path in (folder, _tar(folder, tmp_path / "evil.tar.gz")):
        with pytest.raises(UserError, match="tampered") as info:
            load_data(_cfg(source="cifar10", path=str(path)), seed=0)
        assert "data_batch_2" in info.value.message
        assert not marker.exists()


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_cifar_without_file_or_network_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(UserError) as info:
        load_data(_cfg(source="cifar100"), seed=0)
    text = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in text
    assert str(tmp_path / "kh" / "datasets" / "cifar-100-python.tar.gz") in text
    assert "cifar-100-python/" in text and "data.path" in text
    assert list((tmp_path / "kh" / "datasets").iterdir()) == []  # no partial file left


def test_cifar_download_is_checked_and_cached(tmp_path, monkeypatch):
    archive = _tar(_fake_cifar_dir(tmp_path / "src"), tmp_path / "served.tar.gz").read_bytes()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(archive))
    with pytest.raises(UserError, match="corrupt: md5"):
        load_data(_cfg(source="cifar10"), seed=0)  # the real checksum does not match the fake
    assert list((tmp_path / "kh" / "datasets").iterdir()) == []
    real = hashlib.md5(archive).hexdigest()
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(cifar.SPECS["cifar10"],
                                                                     md5=real))
    _check_cifar(load_data(_cfg(source="cifar10"), seed=0), 15, 3)
    assert (tmp_path / "kh" / "datasets" / "cifar-10-python.tar.gz").read_bytes() == archive
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    _check_cifar(load_data(_cfg(source="cifar10"), seed=0), 15, 3)  # from the cache now


def test_a_folder_that_cannot_be_listed_is_named_not_dropped(tmp_path, monkeypatch):
    """(Permissions do not stop root, so the refusal is made here.)"""
    _class_tree(tmp_path, 2, ("ant", "bee"))
    _image(tmp_path / "bee" / "locked" / "x.png", COLOURS["bee"])
    real = os.scandir

    def refusing(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.warns(SkippedFilesWarning, match=r"locked: folder cannot be read"):
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0),
                           seed=0)
    assert bundle.num_train == 4
    assert [(Path(p).name, why) for p, why in bundle.skipped] == [
        ("locked", "folder cannot be read (Permission denied); its files are left out")]


def test_a_folder_link_up_the_tree_does_not_add_other_classes_images(tmp_path):
    """`ln -s .. data/ant/loop` made bee's images train as ant too."""
    _class_tree(tmp_path, 2, ("ant", "bee"))
    os.symlink("..", tmp_path / "ant" / "loop")
    with pytest.warns(SkippedFilesWarning, match=r"loop: folder cannot be read \(a link back"):
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0,
                                image_size=8), seed=0)
    assert bundle.num_train == 4
    _labels_match_colours(bundle, bundle.train_dataset(0, 4))
    assert [Path(p).name for p, _ in bundle.skipped] == ["loop"]


def test_a_named_pipe_among_the_images_is_skipped_never_read(tmp_path):
    """Reading a pipe named x.png waited forever (Ctrl-C did not stop it)."""
    _class_tree(tmp_path, 2, ("ant", "bee"))
    os.mkfifo(tmp_path / "bee" / "pipe.png")
    with pytest.warns(SkippedFilesWarning, match=r"pipe.png: not a regular file"):
        bundle = load_data(_cfg(source="folder", path=str(tmp_path), validation_split=0.0),
                           seed=0)
    assert bundle.num_train == 4
    assert [(Path(p).name, why) for p, why in bundle.skipped] == [
        ("pipe.png", "not a regular file (a named pipe, socket or device)")]
