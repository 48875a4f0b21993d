"""Folder input pipeline, side by side in one run: ours vs hand-written tf.data vs Keras.

    python bench/pipeline_folder.py [--files 1000] [--size 224] [--first-batch-files 5000]

Makes photo-size JPEGs (500x375, quality 90) under a temp folder, then measures
images/s over one epoch (after one warm-up epoch) of:
  * ours: ``load_data(folder, cache=false)`` + ``train_dataset`` (flip on), streaming;
  * tfdata: read_file + decode_jpeg + resize + flip in a parallel map (no error handling);
  * keras: ``keras.utils.image_dataset_from_directory`` + a flip map;
  * guard cost: our decoder in a bare parallel map vs through ``decode_or_skip``;
and the time to the first batch on a folder of ``--first-batch-files`` small JPEGs for
the old decode-everything path (``data.verify: true``) and streaming.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_jpegs(root: Path, count: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8))
        photo = np.asarray(small.resize(size, Image.Resampling.BICUBIC)).astype(int)
        photo = np.clip(photo + rng.integers(-12, 12, photo.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(photo).save(path, quality=90)
        files.append(path)
    return files


def rate(make) -> float:
    """Images/s of the second full pass over ``make()`` (the first warms up)."""
    for _ in range(2):
        start, count = time.perf_counter(), 0
        for _, labels in make():
            count += len(labels)
        seconds = time.perf_counter() - start
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--first-batch-files", type=int, default=5000)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data
    from resnet_builder.data.decode import SkipLog, decode_and_resize, decode_or_skip

    work = Path(tempfile.mkdtemp(prefix="pipeline_folder_"))
    files = make_jpegs(work / "photos", args.files, (500, 375))
    size, batch = args.size, args.batch
    cfg = DataConfig(source="folder", path=str(work / "photos"), image_size=size,
                     validation_split=0.0, cache=False, batch_size=batch)
    bundle = load_data(cfg, AugmentConfig(horizontal_flip=True), seed=0)
    ours = rate(lambda: bundle.train_dataset(0, batch))

    names = [str(p) for p in files]

    def hand_made():
        def load(path):
            image = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
                                    (size, size))
            return tf.image.random_flip_left_right(image), 0
        return (tf.data.Dataset.from_tensor_slices(names).shuffle(len(names))
                .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
                .prefetch(tf.data.AUTOTUNE))

    handmade = rate(hand_made)
    flip = keras.layers.RandomFlip("horizontal")

    def keras_dir():
        ds = keras.utils.image_dataset_from_directory(
            work / "photos", image_size=(size, size), batch_size=batch, verbose=False)
        return ds.map(lambda x, y: (flip(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    keras_rate = rate(keras_dir)
    elements = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(names), dtype=np.int64), names, np.zeros(len(names), np.int32)))
    bare = rate(lambda: elements.map(
        lambda k, s, y: (decode_and_resize(tf.io.read_file(s), size, 3), y),
        num_parallel_calls=tf.data.AUTOTUNE).batch(batch))
    guarded = rate(lambda: decode_or_skip(elements, size, 3, SkipLog(),
                                          from_files=True).batch(batch))
    print(f"{args.files} JPEGs 500x375 -> {size}, batch {batch}, images/s:")
    print(f"  ours (streaming folder)          {ours:8.0f}")
    print(f"  hand-written tf.data             {handmade:8.0f}   ours/this = "
          f"{ours / handmade:.2f}x")
    print(f"  keras image_dataset_from_dir     {keras_rate:8.0f}   ours/this = "
          f"{ours / keras_rate:.2f}x")
    print(f"  our decoder, bare parallel map   {bare:8.0f}")
    print(f"  our decoder, decode_or_skip      {guarded:8.0f}   guarded/bare = "
          f"{guarded / bare:.2f}x")
    first_batch(work / "small", args.first_batch_files, size, batch)


def first_batch(root: Path, count: int, size: int, batch: int) -> None:
    """Seconds from load_data to the first batch: decode-everything (verify) vs streaming."""
    from resnet_builder.config import DataConfig
    from resnet_builder.data import load_data

    make_jpegs(root, count, (160, 120))
    print(f"time to first batch, {count} JPEGs 160x120 -> {size}:")
    for verify in (True, False):
        cfg = DataConfig(source="folder", path=str(root), image_size=size,
                         validation_split=0.0, cache=False, verify=verify)
        start = time.perf_counter()
        bundle = load_data(cfg, seed=0)
        next(iter(bundle.train_dataset(0, batch)))
        label = "data.verify (decode all first)" if verify else "streaming"
        print(f"  {label:36s} {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
