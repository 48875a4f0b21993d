"""pack + the tfrecord source: files, counts, skipped files, epochs, worker shards, round trip."""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from resnet_builder.cli import main
from resnet_builder.config import AugmentConfig, DataConfig, load_config
from resnet_builder.data import load_data, shard_errors, tfrecord
from resnet_builder.data.pack import pack_folder
from resnet_builder.data.pack_format import FEATURES
from resnet_builder.data.pack_lock import writing_pack
from resnet_builder.errors import UserError
from resnet_builder.training import api as trainer
from resnet_builder.training.checkpoint import read_meta

CLASSES = ("ant", "bee", "cat")
PER_CLASS = 20
NO_AUGMENT = AugmentConfig(random_crop_padding=0, horizontal_flip=False, random_scale=0.0)


def make_folder(root: Path) -> Path:
    """3 classes x 20 noisy images (every 4th a PNG), 24x28, plus one corrupt JPEG."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
            pixels[..., c] = 240  # each class has its own strong channel
            Image.fromarray(pixels).save(root / name / f"{i:02d}.{'jpg' if i % 4 else 'png'}")
    (root / "bee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images") / "photos")


@pytest.fixture(scope="module")
def packed(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "out"
    return pack_folder(folder, str(out), shards=3), out


def bundle(out: Path, augment: AugmentConfig = NO_AUGMENT, **data):
    return load_data(DataConfig(source="tfrecord", path=str(out), image_size=16, **data),
                     augment, seed=0)


def epoch(b, number: int, batch: int = 8, **shard) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in b.train_dataset(number, batch, **shard)],
                 strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def repack_counting_only_jpegs(root: Path, out: Path, split: str, jpegs: int, **pack) -> None:
    """Pack ``root`` again (it holds one PNG among ``jpegs`` JPEGs in ``split``), then edit
    dataset.json to count only JPEGs there, as if the PNG came after pack counted."""
    pack_folder(root, str(out), overwrite=True, **pack)
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"][split]["formats"] == {"jpeg": jpegs, "other": 1}
    info["splits"][split]["formats"] = {"jpeg": jpegs + 1, "other": 0}
    (out / "dataset.json").write_text(json.dumps(info))


def fingerprints(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(image.tobytes()).hexdigest() for image in images]


def test_pack_writes_shards_counts_and_skipped_csv(packed):
    report, out = packed
    info = json.loads((out / "dataset.json").read_text())
    assert info["class_names"] == list(CLASSES)
    train, val = info["splits"]["train"], info["splits"]["val"]
    assert [s["file"] for s in train["shards"]] == [
        f"train-0000{k}-of-00003.tfrecord" for k in range(3)]
    assert [s["file"] for s in val["shards"]] == ["val-00000-of-00001.tfrecord"]
    assert train["count"] + val["count"] == 3 * PER_CLASS  # the broken file left out
    for split in (train, val):
        assert sum(s["count"] for s in split["shards"]) == split["count"]
        assert all(s["bytes"] == (out / s["file"]).stat().st_size for s in split["shards"])
        assert sum(split["per_class"].values()) == split["count"]
    assert all(train["per_class"][c] + val["per_class"][c] == PER_CLASS for c in CLASSES)
    assert val["count"] == 13  # ceil(0.2 * 61 listed files), stratified
    for split in (train, val):  # every 4th file a PNG
        assert split["formats"]["jpeg"] + split["formats"]["other"] == split["count"]
    assert train["formats"]["other"] > 0 and not bundle(out).jpeg_only
    assert len(info["mean"]["rgb"]) == 3 and len(info["std"]["gray"]) == 1
    assert info["stats"]["images"] == train["count"]  # fewer than 2,000: all of them
    assert sorted(p.name for p in out.iterdir()) == sorted([*report.files, ".pack.lock"])
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["broken.jpg"]
    assert rows[0]["reason"]
    assert report.images_per_second > 0


def test_records_hold_the_files_as_they_are_on_disk(packed, folder):
    _, out = packed
    record = next(iter(tf.data.TFRecordDataset(str(out / "val-00000-of-00001.tfrecord"))))
    example = tf.io.parse_single_example(record, FEATURES)
    path = example["path"].numpy().decode()
    assert example["image"].numpy() == (folder / path).read_bytes()
    assert CLASSES[int(example["label"])] == path.split("/")[0]


def test_image_size_reencodes_smaller_jpegs(folder, tmp_path):
    pack_folder(folder, str(tmp_path / "small"), shards=1, image_size=12)
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "small" /
                                                   "train-00000-of-00001.tfrecord"))))
    image = Image.open(io.BytesIO(tf.io.parse_single_example(record, FEATURES)["image"].numpy()))
    assert image.format == "JPEG" and min(image.size) == 12 and max(image.size) == 14


def test_an_epoch_reads_every_record_once_in_a_seeded_order(packed):
    _, out = packed
    b = bundle(out)
    info = json.loads((out / "dataset.json").read_text())["splits"]["train"]
    images, labels = epoch(b, 0)
    assert (b.num_train, b.num_val) == (info["count"], 13)
    assert np.bincount(labels).tolist() == [info["per_class"][c] for c in CLASSES]
    assert len(set(fingerprints(images))) == b.num_train
    again_images, again_labels = epoch(bundle(out), 0)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    next_images, _ = epoch(b, 1)
    assert fingerprints(next_images) != fingerprints(images)
    assert sorted(fingerprints(next_images)) == sorted(fingerprints(images))
    assert b.take_skipped() == []


@pytest.mark.parametrize("crop", [None, {"scale": [0.3, 1.0], "ratio": [0.75, 1.33]}])
def test_every_epoch_reuses_one_traced_decoder(packed, crop, monkeypatch):
    """The decoder is made and traced once per bundle (the epoch is its argument), and a
    later epoch decodes exactly what a fresh bundle's does."""
    _, out = packed
    made = []
    real = tfrecord.batch_decoder
    monkeypatch.setattr(tfrecord, "batch_decoder",
                        lambda *args, **kwargs: made.append(1) or real(*args, **kwargs))
    augment = NO_AUGMENT if crop is None else AugmentConfig(random_resized_crop=crop)
    b = bundle(out, augment)
    first, second, first_again = epoch(b, 0), epoch(b, 1), epoch(b, 0)
    assert len(made) == 1
    assert [f.experimental_get_tracing_count() for f in b._lookups.values()] == [1]
    fresh = bundle(out, augment)
    for number, (images, labels) in ((1, second), (0, first_again)):
        fresh_images, fresh_labels = epoch(fresh, number)
        assert np.array_equal(images, fresh_images) and np.array_equal(labels, fresh_labels)
    assert not np.array_equal(first[0], second[0])


def test_two_workers_read_disjoint_shard_files_covering_the_epoch(packed):
    _, out = packed
    b = bundle(out)
    whole = set(fingerprints(epoch(b, 0)[0]))
    parts = []
    for w in range(2):
        images, labels = epoch(b, 0, shard=w, num_shards=2)
        parts.append((fingerprints(images[labels >= 0]), len(labels)))
    (first, n_first), (second, n_second) = parts
    assert n_first == n_second  # the smaller share is padded with label -1
    # the epoch is as long as the fuller worker needs: its last records are trained on
    steps = b.batches_per_epoch(8, 2)
    assert steps == -(-max(len(first), len(second)) // 4) >= -(-b.num_train // 8)
    assert -(-n_first // 4) == steps
    assert not set(first) & set(second)
    assert set(first) | set(second) == whole and len(first) + len(second) == len(whole)


def test_more_workers_than_shard_files_says_which_is_short(packed):
    """3 shard files: 4 workers need a new pack; 2 workers with a data.limit that keeps one
    file's records need a larger limit, not a new pack."""
    _, out = packed
    with pytest.raises(UserError, match="4 workers but only 3 training shard") as err:
        epoch(bundle(out), 0, batch=8, shard=0, num_shards=4)
    assert "pack again with --shards 40" in err.value.hint
    with pytest.raises(UserError, match=r"only 1 training shard file.* within data\.limit") as err:
        epoch(bundle(out, limit=3), 0, batch=8, shard=0, num_shards=2)
    assert "raise data.limit" in err.value.hint


def test_first_batch_continues_the_same_epoch(packed):
    _, out = packed
    b = bundle(out, AugmentConfig(random_crop_padding=2, horizontal_flip=True))
    whole = [x.numpy() for x, _ in b.train_dataset(3, 8)]
    rest = [x.numpy() for x, _ in b.train_dataset(3, 8, first_batch=2)]
    assert len(rest) == len(whole) - 2
    assert all(np.array_equal(a, c) for a, c in zip(whole[2:], rest, strict=True))
    with pytest.raises(UserError, match="does not split evenly"):
        b.train_dataset(0, 9, shard=0, num_shards=2)
    with pytest.raises(UserError, match="only 3 training shard"):
        b.train_dataset(0, 8, shard=0, num_shards=4)


def test_pack_and_read_through_a_gfile_url(folder):
    url = f"ram://resnet-builder-test-{id(folder)}/packed"  # TensorFlow's in-memory file system
    report = pack_folder(folder, url, shards=2)
    assert sorted(tf.io.gfile.listdir(url)) == sorted(report.files)
    b = bundle(url)
    assert len(epoch(b, 0)[1]) == b.num_train == report.counts["train"]


def test_validation_is_unaugmented_and_in_file_order(packed):
    _, out = packed
    b = bundle(out, AugmentConfig(random_crop_padding=2, horizontal_flip=True))
    first = [(x.numpy(), y.numpy()) for x, y in b.val_dataset(5)]
    second = [(x.numpy(), y.numpy()) for x, y in b.val_dataset(5)]
    assert sum(len(y) for _, y in first) == 13
    assert all(np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])
               for a, c in zip(first, second, strict=True))
    gray = bundle(out, channels=1)
    assert next(iter(gray.val_dataset(4)))[0].shape == (4, 16, 16, 1)
    assert len(gray.mean) == 1


def test_limit_takes_the_first_records_in_pack_order(packed):
    _, out = packed
    b = bundle(out, limit=10)
    assert b.num_train == 10 and len(epoch(b, 0)[1]) == 10


def test_missing_pieces_are_user_errors_that_say_how_to_pack(packed, tmp_path):
    _, out = packed
    with pytest.raises(UserError, match=r"no dataset\.json") as caught:
        bundle(tmp_path)
    assert "resnet-builder pack FOLDER OUT" in str(caught.value)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "dataset.json").write_text((out / "dataset.json").read_text())
    with pytest.raises(UserError, match="missing") as caught:
        bundle(copy)
    assert "train-00000-of-00003.tfrecord" in str(caught.value)


@pytest.mark.parametrize(("edit", "said"), [
    (lambda info: info.pop("mean"), "it has no 'mean' entry"),
    (lambda info: info["splits"]["val"]["shards"][0].pop("count"), "it has no 'count' entry"),
    (lambda info: info.update(class_names=None), "class_names must be a list of strings"),
    (lambda info: info.update(class_names="abc"), "class_names must be a list of strings"),
    (lambda info: info["std"].update(rgb=["x"]), "could not convert string to float"),
])
def test_a_damaged_dataset_json_is_named_not_a_bug(packed, tmp_path, edit, said):
    _, out = packed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    info = json.loads((copy / "dataset.json").read_text())
    edit(info)
    (copy / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="is damaged or was edited: " + re.escape(said)) as err:
        bundle(copy)
    assert "pack the folder again" in err.value.hint


def test_pack_refuses_a_used_folder_unless_told(folder, tmp_path):
    out = tmp_path / "out"
    pack_folder(folder, str(out), shards=3)
    with pytest.raises(UserError, match="not empty"):
        pack_folder(folder, str(out), shards=2)
    pack_folder(folder, str(out), shards=2, overwrite=True)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "val-00000-of-00001.tfrecord"]


def test_train_val_layout_keeps_its_split(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train")
    make_folder(root / "val")
    pack_folder(root, str(tmp_path / "out"), shards=2)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["splits"]["val"]["count"] == info["splits"]["train"]["count"] == 3 * PER_CLASS
    assert info["validation_split"] is None


def test_cli_pack_names_the_files(folder, tmp_path):
    result = CliRunner().invoke(main, ["pack", str(folder), str(tmp_path / "out"),
                                       "--shards", "2"])
    assert result.exit_code == 0, result.output
    for name in ("train-00000-of-00002.tfrecord", "val-00000-of-00001.tfrecord",
                 "dataset.json", "skipped.csv", "images/s"):
        assert name in result.output
    missing = CliRunner().invoke(main, ["pack", str(tmp_path / "nope"), str(tmp_path / "o2")])
    assert missing.exit_code != 0 and "hint:" in missing.output
    assert "Traceback" not in missing.output and isinstance(missing.exception, SystemExit)
    assert "not a folder" in missing.output
    assert "packing" not in missing.output  # checked first, then announced
    assert not (tmp_path / "o2").exists()


def test_an_output_path_the_system_refuses_is_named_not_a_bug(folder, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["pack", str(folder), str(tmp_path / "afile" / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot write the pack to {tmp_path / 'afile' / 'out'}: " in result.output
    assert "is not a directory" in result.output and "bug" not in result.output


@pytest.mark.parametrize(("blocker", "reason", "hint"), [
    ("file", "is not a directory", "exist, as folders (a file stands in the way)"),
    ("dangling link", "No such file or directory", "check that the path and its folders exist"),
])
def test_pack_hint_follows_why_out_was_refused(folder, tmp_path, blocker, reason, hint):
    """The hint every other refused path gets (cli_errors.path_hint), not one for all reasons."""
    stop = tmp_path / "stop"
    if blocker == "file":
        stop.write_text("x")
    else:  # a link to a folder that is not there: making OUT below it finds no such file
        stop.symlink_to(tmp_path / "gone" / "deeper")
    out = stop / "out"
    result = CliRunner().invoke(main, ["pack", str(folder), str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    message, hint_line = result.output.strip().splitlines()[-2:]
    assert message.startswith(f"Error: cannot write the pack to {out}: ") and reason in message
    assert hint_line.startswith("  hint: ") and hint in hint_line
    assert "room for the encoded images" not in result.output  # the old hint for any reason
    assert "--project" not in hint_line  # pack's OUT is an argument, not an option


@pytest.mark.parametrize("inside", ["out", "bee/out", "."])
def test_pack_refuses_an_output_folder_inside_the_source(tmp_path, inside):
    """A pack inside the source would be read later as a class folder without images."""
    source = make_folder(tmp_path / "photos")
    before = sorted(source.rglob("*"))
    out = str(source / inside)
    result = CliRunner().invoke(main, ["pack", str(source), out, "--shards", "2"])
    assert result.exit_code == 2, result.output
    assert f"the output folder {out} is" in result.output and str(source) in result.output
    assert "outside the source folder" in result.output and "packing" not in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert sorted(source.rglob("*")) == before  # nothing written into the source
    with pytest.raises(UserError, match="inside the source folder"):
        pack_folder(source, str(tmp_path / "photos" / ".." / "photos" / "x"), shards=2)
    pack_folder(source, str(tmp_path / "photos-packed"), shards=2)  # a sibling is fine


def test_a_damaged_shard_is_a_user_error_not_a_bug(packed, tmp_path):
    """A truncated copy of a shard: one message and a hint, exit 1, no traceback."""
    _, out = packed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:3000])  # as `head -c 3000` would
    _edit_info(copy, lambda entry: entry.pop("bytes"))  # a pack before sizes: found in training
    config = tmp_path / "x.yaml"
    config.write_text(f"data:\n  source: tfrecord\n  path: {copy}\n  image_size: 16\n"
                      "model:\n  depth: 8\n  block_type: basic\n")
    result = CliRunner().invoke(main, [
        "train", str(config), "--set", "train.epochs=1", "--set", "run.plots=false",
        "--set", "run.tensorboard=false", "--progress", "none",
        "--project", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"a packed shard under {copy} is damaged (truncated or corrupt)" in result.output
    assert re.search(r"truncated record at \d+\n", result.output)
    assert "--overwrite" in result.output and "copy the whole packed folder" in result.output
    assert "bug in resnet-builder" not in result.output and "File " not in result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "data_damaged"


def test_a_corrupt_record_is_named_and_other_data_loss_is_not(packed, tmp_path):
    _, out = packed
    data = bytearray((out / "val-00000-of-00001.tfrecord").read_bytes())
    data[5000] ^= 0xFF  # one flipped byte: the record's checksum fails
    bad = tmp_path / "val-00000-of-00001.tfrecord"
    bad.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError) as caught:
        list(tf.data.TFRecordDataset(str(bad)))
    error = shard_errors.damaged_shard_error(caught.value)
    assert error is not None and "corrupted record at" in error.message
    named = tf.errors.DataLossError(None, None, f"corrupted record at 12 in {bad}")
    message = shard_errors.damaged_shard_error(named).message
    assert "shard val-00000-of-00001.tfrecord under" in message
    checkpoint = tf.errors.DataLossError(None, None, "not an sstable (bad magic number)")
    assert shard_errors.damaged_shard_error(checkpoint) is None
    assert shard_errors.damaged_shard_error(ValueError("corrupted record at 3")) is None


@pytest.mark.slow
def test_pack_then_train_round_trip(packed, tmp_path):
    _, out = packed
    cfg = load_config(None, [
        "model.depth=8", "model.block_type=basic", "data.source=tfrecord", f"data.path={out}",
        "data.image_size=16", "data.batch_size=16", "train.epochs=2", "run.progress=none",
        "run.plots=false", "run.tensorboard=false", f"run.project={tmp_path / 'runs'}"])
    gc.disable()  # the run itself lets go of the pack's read lock, not the collector
    try:
        result = trainer.train(cfg)
        with writing_pack(str(out)):  # a pack may write it again now
            pass
    finally:
        gc.enable()
    with open(result.run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # Labels came through: validation saw each class as often as pack counted it (a label
    # bug, e.g. every record read as class 0, would fill one column, not these rows), and
    # the classes' own strong channel is learned.
    val = json.loads((out / "dataset.json").read_text())["splits"]["val"]["per_class"]
    confusion = np.asarray(read_meta(result.run_dir / "checkpoint.npz")["best_confusion"])
    assert confusion.sum(axis=1).tolist() == [val[c] for c in CLASSES]
    assert result.best_val_accuracy >= 0.9


def test_records_only_pillow_reads_right_decode_like_predict_every_epoch(tmp_path):
    """Packed GIFs, 16-bit PNGs, EXIF-rotated JPEGs among plain JPEGs: the batch decoder's
    attempt leaves them to Pillow (their header says so), and each image equals what
    ``predict`` decodes from the file, with its label, in every epoch."""
    from resnet_builder.data.decode import decode_and_resize
    from resnet_builder.data.resizing import Resize

    rng, root = np.random.default_rng(2), tmp_path / "odd"
    exif = Image.Exif()
    exif[0x0112] = 6
    for c, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for i in range(5):  # 8 files a class: two full batches of 4 per epoch
            photo = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(photo).save(root / name / f"{i}.jpg", quality=90)
        Image.fromarray(photo).save(root / name / "rot.jpg", exif=exif)
        Image.fromarray(photo).convert("P").save(root / name / "pal.gif")
        Image.fromarray(photo[..., c].astype(np.uint16) * 257).save(root / name / "g16.png")
    out = tmp_path / "packed"
    pack_folder(root, str(out), shards=2, validation_split=0.0)
    want = {}
    for c, name in enumerate(("ant", "bee")):
        for path in sorted((root / name).iterdir()):
            image = decode_and_resize(tf.constant(path.read_bytes()), Resize(16), 3).numpy()
            want[fingerprints(image[None])[0]] = c
    b = bundle(out)
    for number in range(2):
        images, labels = epoch(b, number, batch=4)
        got = dict(zip(fingerprints(images), labels.tolist(), strict=True))
        assert got == want


def test_a_pack_of_jpegs_decodes_without_the_format_check_and_a_png_still_works(tmp_path):
    """pack counts formats; a pack of JPEGs only is decoded on the JPEG-only route. If a
    record is not a JPEG after all (dataset.json edited here to say so), its batch goes
    the careful way: every image still equals what ``predict`` decodes, every epoch."""
    from resnet_builder.data.decode import decode_and_resize
    from resnet_builder.data.resizing import Resize

    rng, root = np.random.default_rng(3), tmp_path / "jpegs"
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            photo = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(photo).save(root / name / f"{i}.jpg", quality=90)
    out = tmp_path / "packed"
    pack_folder(root, str(out), shards=2, validation_split=0.0)
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["train"]["formats"] == {"jpeg": 8, "other": 0}
    assert bundle(out).jpeg_only

    Image.fromarray(photo).save(root / "bee" / "odd.png")  # 9 images: a PNG among them
    repack_counting_only_jpegs(root, out, "train", jpegs=8, shards=2, validation_split=0.0)
    b = bundle(out)
    assert b.jpeg_only
    want = {}
    for c, name in enumerate(("ant", "bee")):
        for path in sorted((root / name).iterdir()):
            image = decode_and_resize(tf.constant(path.read_bytes()), Resize(16), 3).numpy()
            want[fingerprints(image[None])[0]] = c
    for number in range(2):
        images, labels = epoch(b, number, batch=4)
        good = labels >= 0  # the last batch is padded
        assert dict(zip(fingerprints(images[good]), labels[good].tolist(), strict=True)) == want
        assert good.sum() == 9 and not b.take_skipped()
    assert len(b._skips._pillow) == 1  # the PNG: given to Pillow from the first epoch on


def test_validation_of_a_pack_of_jpegs_skips_the_format_check_and_a_png_still_works(tmp_path):
    """The validation split gets the JPEG-only route too when pack counted only JPEGs there;
    a PNG it holds after all (dataset.json edited) is still read, in order."""
    from resnet_builder.data.decode import decode_and_resize
    from resnet_builder.data.resizing import Resize

    rng, root = np.random.default_rng(4), tmp_path / "photos"
    for split in ("train", "val"):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                photo = rng.integers(0, 256, (18 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(photo).save(root / split / name / f"{i}.jpg", quality=90)
    out = tmp_path / "packed"
    pack_folder(root, str(out), shards=1)
    assert bundle(out).val_jpeg_only
    Image.fromarray(photo).save(root / "val" / "bee" / "odd.png")
    repack_counting_only_jpegs(root, out, "val", jpegs=6, shards=1)
    b = bundle(out)
    assert b.val_jpeg_only
    want = sorted((fingerprints(decode_and_resize(tf.constant(path.read_bytes()), Resize(16),
                                                  3).numpy()[None])[0], c)
                  for c, name in enumerate(("ant", "bee"))
                  for path in (root / "val" / name).iterdir())
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in b.val_dataset(4)]
        images = np.concatenate([x for x, _ in batches])
        labels = np.concatenate([y for _, y in batches])
        assert sorted(zip(fingerprints(images), labels.tolist(), strict=True)) == want
        assert not b.take_skipped()


def test_settings_a_pack_makes_pointless_are_named_not_ignored(packed, folder, tmp_path):
    _, out = packed
    with pytest.warns(UserWarning, match=r"^data.verify does not apply to packed records"):
        bundle(out, verify=True)
    with pytest.warns(UserWarning, match=r"^data.verify and data.cache: disk do not apply"):
        bundle(out, verify=True, cache="disk")
    small = tmp_path / "small"
    pack_folder(folder, str(small), shards=1, image_size=12)
    with pytest.warns(UserWarning, match="packed with --image-size 12; data.image_size 16 "
                                         "enlarges every image"):
        bundle(small)


def _spoiled_copy(out: Path, tmp_path: Path, shard_name: str, bad: int,
                  label: int | None = None) -> tuple[Path, list[dict]]:
    """A copy of the pack ``out`` whose record ``bad`` of ``shard_name`` holds bytes that
    start like a JPEG and are none (or, given ``label``, its image with that label), its
    size in dataset.json as if pack wrote it; -> (the copy, that shard's parsed records)."""
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / shard_name
    records = [tf.io.parse_single_example(r, FEATURES) for r in tf.data.TFRecordDataset(
        str(shard))]
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for k, example in enumerate(records):
            image = example["image"].numpy()
            image = b"\xff\xd8\xff\xe0 not a jpeg" if k == bad and label is None else image
            writer.write(tfrecord.example_bytes(
                image, label if k == bad and label is not None else int(example["label"]),
                example["path"].numpy().decode()))
    _edit_info(copy, lambda entry: entry.update(bytes=shard.stat().st_size)
               if entry["file"] == shard_name else None)
    return copy, records


def _edit_info(pack: Path, edit) -> None:
    """``edit`` each shard entry of ``pack``'s dataset.json."""
    info = json.loads((pack / "dataset.json").read_text())
    for split in info["splits"].values():
        for entry in split["shards"]:
            edit(entry)
    (pack / "dataset.json").write_text(json.dumps(info))


def test_a_shard_from_another_pack_is_named_before_reading(packed, folder, tmp_path):
    """A shard copied in from another pack under the same name was read as this pack's:
    wrong images, wrong labels, and its count cut by take(count) without a word."""
    _, out = packed
    other = tmp_path / "other"
    pack_folder(folder, str(other), shards=3, seed=1)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    name = "train-00001-of-00003.tfrecord"
    shutil.copy(other / name, copy / name)
    assert (copy / name).stat().st_size != (out / name).stat().st_size
    with pytest.raises(UserError, match=rf"shard {re.escape(str(copy / name))} is [\d,]+ bytes "
                       r"but this pack wrote [\d,]+: it is not the shard this pack wrote") as err:
        bundle(copy)
    assert "put this pack's own shard back" in err.value.hint and "--overwrite" in err.value.hint
    shutil.copy(out / name, copy / name)  # the pack's own shard back: read as before
    assert bundle(copy).num_train == packed[0].counts["train"]


def test_a_pack_without_shard_sizes_loads_as_before(packed, tmp_path):
    """Packs written before sizes were recorded are read unchecked, as they were."""
    _, out = packed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    _edit_info(copy, lambda entry: entry.pop("bytes"))
    b = bundle(copy)
    assert len(epoch(b, 0)[1]) == b.num_train == packed[0].counts["train"]


def test_a_record_whose_label_is_not_a_class_is_skipped_and_named(packed, tmp_path):
    """tf.one_hot of label 7 with 3 classes is an all-zero target: trained on silently."""
    copy, records = _spoiled_copy(packed[1], tmp_path, "train-00000-of-00003.tfrecord", 2,
                                  label=7)
    b = bundle(copy)
    _, labels = epoch(b, 0)
    assert (labels == -1).sum() == 1 and labels.max() < len(CLASSES)
    path = records[2]["path"].numpy().decode()
    assert b.take_skipped() == [(f"{path} (train-00000-of-00003.tfrecord#2)",
                                 "label 7 is not a class of this pack (0..2)")]


def test_a_record_that_fails_to_decode_is_named_by_its_file(packed, tmp_path):
    """skipped.csv names the packed file a bad record came from, with its place."""
    copy, records = _spoiled_copy(packed[1], tmp_path, "train-00000-of-00003.tfrecord", 2)
    b = bundle(copy)
    _, labels = epoch(b, 0)
    assert (labels == -1).sum() > 0
    path = records[2]["path"].numpy().decode()
    assert [name for name, _ in b.take_skipped()] == [
        f"{path} (train-00000-of-00003.tfrecord#2)"]


def test_batch_parsed_validation_equals_its_records_read_one_at_a_time(packed, tmp_path):
    """Validation is parsed and decoded a batch at a time: each image, label and place is
    what its record gives read alone; a corrupt one is label -1, named, and spoils no other."""
    from resnet_builder.data.decode import decode_and_resize

    copy, records = _spoiled_copy(packed[1], tmp_path, "val-00000-of-00001.tfrecord", 6)
    b = bundle(copy)
    batches = [(x.numpy(), y.numpy()) for x, y in b.val_dataset(5)]
    assert [len(y) for _, y in batches] == [5, 5, 3]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    want = [int(r["label"]) for r in records]
    want[6] = -1
    assert labels.tolist() == want
    for k, example in enumerate(records):
        alone = (np.zeros_like(images[k]) if k == 6 else
                 decode_and_resize(example["image"], b.resizing, 3).numpy())
        assert np.array_equal(images[k], alone), k
    path = records[6]["path"].numpy().decode()
    assert [name for name, _ in b.take_skipped()] == [f"{path} (val-00000-of-00001.tfrecord#6)"]


def test_a_url_scheme_tensorflow_cannot_open_is_named_not_a_bug(folder, tmp_path):
    """s3:// (no file system in TensorFlow itself) or a typo'd scheme: exit 2 and the fix."""
    result = CliRunner().invoke(main, ["pack", str(folder), "zz://bucket/packed"])
    assert result.exit_code == 2, result.output
    assert "TensorFlow cannot open zz:// paths here" in result.output
    assert "use a local path or a gs:// URL" in result.output and "bug" not in result.output
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  source: tfrecord\n  path: s3://bucket/packed\n"
                   f"run:\n  project: {tmp_path / 'runs'}\n")
    result = CliRunner().invoke(main, ["train", str(cfg)])
    assert result.exit_code == 2, result.output
    assert "TensorFlow cannot open s3:// paths here" in result.output
    assert not (tmp_path / "runs" / "exp").exists()  # its name is free for the next try


def test_more_shards_than_images_says_how_many_were_written(folder, tmp_path):
    result = CliRunner().invoke(main, ["pack", str(folder), str(tmp_path / "out"),
                                       "--shards", "500"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").glob("train-*.tfrecord"))
    assert len(written) < 500 and written[-1].endswith(f"-of-{len(written):05d}.tfrecord")
    assert (f"note: --shards 500 is more than the {len(written)} training files: "
            f"{len(written)} train shards written, one file each") in result.output


def test_a_pack_being_read_is_not_rewritten_and_one_being_written_is_not_read(folder, tmp_path):
    """pack --overwrite into the folder a run trains from replaced its shards under it (other
    labels from the next epoch, exit 0); two packs into one folder left a mix of both."""
    out = tmp_path / "out"
    pack_folder(folder, str(out), shards=2)
    reader = bundle(out)  # a run reading it holds it while its bundle lives
    with pytest.raises(UserError, match="in use: a training run reads this pack"):
        pack_folder(folder, str(out), shards=3, overwrite=True)
    result = CliRunner().invoke(main, ["pack", str(folder), str(out), "--overwrite"])
    assert result.exit_code == 2 and "is in use" in result.output
    assert len(list(out.glob("train-*-of-00002.tfrecord"))) == 2  # the pack it reads, intact
    also = bundle(out)  # other readers still may
    reader.close()  # a run closes its bundle as it ends (api._train)
    also.close()
    with writing_pack(str(out)):  # a pack writing it: no run starts reading, nor another pack
        with pytest.raises(UserError, match="being written by resnet-builder pack"):
            bundle(out)
        (out / "dataset.json").unlink()  # what a pack removes first and writes last
        with pytest.raises(UserError, match="being written by resnet-builder pack"):
            bundle(out)
        with pytest.raises(UserError, match="in use"):
            pack_folder(folder, str(out), shards=3, overwrite=True)
    pack_folder(folder, str(out), shards=3, overwrite=True)  # alone now: it may
    assert len(list(out.glob("train-*-of-00003.tfrecord"))) == 3


def test_overwrite_removes_what_a_killed_pack_left_half_written(folder, tmp_path):
    out = tmp_path / "out"
    pack_folder(folder, str(out), shards=2)
    (out / ".train-00000-of-00002.tmp1483-262875.tfrecord").write_bytes(b"half")
    (out / "dataset.json.tmp77-abcdef").write_bytes(b"half")  # the gs:// writer's name
    (out / "notes.txt").write_text("the user's")
    pack_folder(folder, str(out), shards=2, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if "tmp" in p.name) == []
    assert (out / "notes.txt").read_text() == "the user's"


def test_a_refused_pack_leaves_no_lock_file_in_the_users_folder(folder, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="is not empty"):
        pack_folder(folder, str(tmp_path / "mine"))
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
