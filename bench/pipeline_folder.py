"""Folder input pipeline, side by side in one run: ours vs hand-written tf.data vs Keras.

    python bench/pipeline_folder.py [--files 1000] [--size 224] [--first-batch-files 20000]
                                    [--photo 500x375]

Makes photo-size JPEGs (500x375, quality 90) under a temp folder, then reports the median
images/s over alternating full passes (``resnet_builder.benchmark.pipelines``) of:
  * ours: ``load_data(folder, cache=false)`` + ``train_dataset`` (flip on), streaming;
  * tfdata: read_file + decode_jpeg + resize + flip in a parallel map (no error handling);
  * keras: ``keras.utils.image_dataset_from_directory`` + a flip;
then the resize rules on their own (decode + resize in a bare parallel map), and the time
to the first batch on a folder of ``--first-batch-files`` small JPEGs: ours streaming,
ours with ``data.verify: true`` and a plain tf.data pipeline (list the files, decode).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def resize_rules(files: list[Path], size: int, batch: int, photo: str) -> None:
    """Decode + resize alone: our rule (DCT-scaled JPEG decode, box + bilinear) vs others."""
    import tensorflow as tf

    from resnet_builder.benchmark.pipelines import images_per_second
    from resnet_builder.data.decode import decode_and_resize
    from resnet_builder.data.resizing import Resize

    names = [str(p) for p in files]
    ours = Resize(size)

    def plain(method: str, antialias: bool = False):
        def load(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.image.resize(image, (size, size), method, antialias=antialias), 0
        return load

    rules = {"ours (decode_and_resize)": lambda p: (decode_and_resize(tf.io.read_file(p),
                                                                      ours, 3), 0),
             "full decode + bilinear": plain("bilinear"),
             "full decode + area": plain("area"),
             "full decode + antialiased bilinear (Pillow)": plain("bilinear", True)}
    rates: dict[str, list[float]] = {name: [] for name in rules}
    for _ in range(3):
        for name, load in rules.items():
            rates[name].append(images_per_second(
                lambda load=load: tf.data.Dataset.from_tensor_slices(names)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)))
    print(f"decode + resize only, best of 3, images/s ({photo} -> {size}):")
    for name, values in rates.items():
        print(f"  {name:44s} {max(values):8.0f}")


def first_batch(root: Path, count: int, size: int, batch: int) -> None:
    """Seconds from a folder path to the first batch: ours (streaming, verify) vs tf.data."""
    import tensorflow as tf

    from resnet_builder.benchmark.pipelines import make_jpegs
    from resnet_builder.config import DataConfig
    from resnet_builder.data import load_data

    make_jpegs(root, count, (160, 120), classes=10)

    def plain() -> None:
        files = tf.data.Dataset.list_files(str(root / "*" / "*.jpg"), shuffle=True, seed=0)

        def load(path):
            label = tf.strings.split(path, "/")[-2]
            image = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
                                    (size, size))
            return image, label
        dataset = files.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        next(iter(dataset))

    def ours(verify: bool) -> None:
        cfg = DataConfig(source="folder", path=str(root), image_size=size,
                         validation_split=0.0, cache=False, verify=verify)
        next(iter(load_data(cfg, seed=0).train_dataset(0, batch)))

    plain()  # warm-up: TensorFlow's start, the file system cache
    timed = {}
    for name, run in (("plain tf.data (list_files + decode)", plain),
                      ("ours, streaming (default)", lambda: ours(False)),
                      ("ours, data.verify: true", lambda: ours(True))):
        start = time.perf_counter()
        run()
        timed[name] = time.perf_counter() - start
    base = timed["plain tf.data (list_files + decode)"]
    print(f"time to first batch, {count} JPEGs 160x120 -> {size}:")
    for name, seconds in timed.items():
        print(f"  {name:36s} {seconds:6.2f} s   {seconds / base:5.2f}x plain")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--first-batch-files", type=int, default=20000)
    parser.add_argument("--photo", default="500x375", help="WIDTHxHEIGHT of the made JPEGs")
    args = parser.parse_args()
    photo = tuple(int(v) for v in args.photo.split("x"))

    from resnet_builder.benchmark.pipelines import compare_folder_pipelines, make_jpegs

    work = Path(tempfile.mkdtemp(prefix="pipeline_folder_"))
    files = make_jpegs(work / "photos", args.files, photo)
    rates = compare_folder_pipelines(work / "photos", args.size, args.batch)
    print(f"{args.files} JPEGs {args.photo} -> {args.size}, batch {args.batch}, median images/s:")
    print(f"  ours (streaming folder)          {rates['ours']:8.0f}")
    for name, label in (("tfdata", "hand-written tf.data"),
                        ("keras_directory", "keras image_dataset_from_dir")):
        print(f"  {label:32s} {rates[name]:8.0f}   ours/this = {rates['ours'] / rates[name]:.2f}x")
    resize_rules(files, args.size, args.batch, args.photo)
    if args.first_batch_files:
        first_batch(work / "small", args.first_batch_files, args.size, args.batch)


if __name__ == "__main__":
    main()
