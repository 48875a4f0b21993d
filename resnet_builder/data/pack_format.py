"""The packed folder's format, shared by its writer (``pack.py``) and reader (``tfrecord.py``).

A packed folder (local or any ``tf.io.gfile`` URL such as ``gs://bucket/data``) holds
``train-KKKKK-of-NNNNN.tfrecord`` and ``val-...`` shards of ``tf.train.Example`` records
(``image``: the encoded file, ``label``: class index, ``path``: the file below the packed
folder), ``skipped.csv`` and ``dataset.json``: class names, counts per split, class, format
(``formats``: JPEG or other) and shard, each shard's size in bytes (packs before sizes
were recorded have none, and are read unchecked), and mean/std of the training images.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from resnet_builder.errors import UserError

DATASET_FILE = "dataset.json"
SKIPPED_FILE = "skipped.csv"
FORMAT_NAME = "resnet-builder tfrecord"
FORMAT_VERSION = 1
SHARD_PATTERN = r"(train|val)-\d{5}-of-\d{5}\.tfrecord"
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "path": tf.io.FixedLenFeature([], tf.string)}
STAT_THREADS = 16  # shard sizes asked at once: 1,024 on gs:// in seconds, not minutes
PACK_HINT = "make one with `resnet-builder pack FOLDER OUT` and set data.path to OUT"


def is_url(path: str) -> bool:
    """``gs://...``, ``s3://...``: a ``tf.io.gfile`` URL rather than a local path."""
    return "://" in path


def join(folder: str, name: str) -> str:
    """``folder/name`` for local paths and URLs alike."""
    return folder.rstrip("/") + "/" + name if is_url(folder) else os.path.join(folder, name)


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00000-of-00016.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def example_bytes(image: bytes, label: int, path: str) -> bytes:
    """One serialized record: the encoded image as on disk, its label, its relative path."""
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
               "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_dataset_info(folder: str) -> dict:
    """``dataset.json`` of a packed folder, checked: a missing file or shard is a UserError."""
    path = join(folder, DATASET_FILE)
    if not tf.io.gfile.exists(path):
        what = "folder" if tf.io.gfile.isdir(folder) else "folder (it does not exist)"
        raise UserError(f"no {DATASET_FILE} in {folder}: not a packed {what}", hint=PACK_HINT)
    try:
        with tf.io.gfile.GFile(path) as f:
            info = json.load(f)
    except (ValueError, tf.errors.OpError) as exc:
        raise UserError(f"cannot read {path}: {exc}", hint=PACK_HINT) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise UserError(f"{path} is not a {FORMAT_NAME} description", hint=PACK_HINT)
    if info.get("version") != FORMAT_VERSION:
        raise UserError(f"{path} has format version {info.get('version')}, this resnet-builder "
                        f"reads version {FORMAT_VERSION}", hint="pack the folder again")
    _check_entries(info, path)
    present = {name.rstrip("/") for name in tf.io.gfile.listdir(folder)}
    missing = [s["file"] for split in info["splits"].values() for s in split["shards"]
               if s["file"] not in present]
    if missing:
        raise UserError(f"{len(missing)} shard file(s) listed in {path} are missing, e.g. "
                        f"{join(folder, missing[0])}",
                        hint="copy the whole packed folder, or pack again: " + PACK_HINT)
    _check_sizes(folder, info)
    return info


def _check_sizes(folder: str, info: dict) -> None:
    """Each shard is the size pack wrote: a shard copied in from another pack under the same
    name (or cut short) was read as this pack's, wrong images with wrong labels and count.
    One ``stat`` per shard, asked concurrently (each a round trip on gs://)."""
    listed = [(s["file"], int(s["bytes"])) for split in info["splits"].values()
              for s in split["shards"] if "bytes" in s]
    if not listed:
        return

    def size(name: str) -> int:
        try:
            return tf.io.gfile.stat(join(folder, name)).length
        except tf.errors.OpError as exc:
            raise UserError(f"cannot read shard {join(folder, name)}: {exc.message}",
                            hint="copy the whole packed folder, or pack again: "
                                 + PACK_HINT) from None

    with ThreadPoolExecutor(min(STAT_THREADS, len(listed))) as pool:
        sizes = list(pool.map(size, [name for name, _ in listed]))
    wrong = [(name, want, got) for (name, want), got in zip(listed, sizes, strict=True)
             if got != want]
    if wrong:
        name, want, got = wrong[0]
        others = f" ({len(wrong) - 1} more shard(s) differ too)" if len(wrong) > 1 else ""
        raise UserError(f"shard {join(folder, name)} is {got:,} bytes but this pack wrote "
                        f"{want:,}: it is not the shard this pack wrote (another pack's, or a "
                        f"partial copy){others}",
                        hint="put this pack's own shard back (copy the whole packed folder "
                             "again), or pack again with --overwrite")


def _check_entries(info: dict, path: str) -> None:
    """Every entry the reader uses is there, of its kind: a dataset.json cut short or edited
    by hand is one message, not a KeyError reported as a bug."""
    try:
        for split in ("train", "val"):
            for shard in info["splits"][split]["shards"]:
                str(shard["file"]), int(shard["count"]), int(shard.get("bytes", 0))
        names = info["class_names"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError("class_names must be a list of strings")
        for key in ("mean", "std"):
            for space in ("rgb", "gray"):
                [float(v) for v in info[key][space]]
    except KeyError as exc:
        raise UserError(f"{path} is damaged or was edited: it has no {exc.args[0]!r} entry",
                        hint="pack the folder again: " + PACK_HINT) from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path} is damaged or was edited: {exc}",
                        hint="pack the folder again: " + PACK_HINT) from None
