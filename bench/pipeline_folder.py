"""Folder input pipeline, side by side in one run: ours vs hand-written tf.data vs Keras.

    python bench/pipeline_folder.py [--files 1000] [--size 224] [--first-batch-files 20000]
                                    [--photo 500x375]

Makes photo-size JPEGs (500x375, quality 90) under a temp folder, then reports the median
images/s over alternating passes of 3 epochs, each pipeline iterated as a training run does
(``resnet_builder.benchmark.pipelines.folder_pipelines``) of:
  * ours: ``load_data(folder, cache=false)`` + ``train_dataset`` (flip on), streaming;
  * tfdata: read_file + decode_jpeg + resize + flip in a parallel map (no error handling);
  * keras: ``keras.utils.image_dataset_from_directory`` + a flip;
then the resize rules on their own (decode + resize in a bare parallel map), crops (the
random resized crop and ``resize: crop``, ours taken while decoding, against hand-written
tf.data decoding whole or with ``decode_and_crop_jpeg``: TF's own boxes, which are
smaller, and ours), and the time
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


def crop_loaders(names: list[str], size: int, batch: int, crop: dict) -> dict:
    """Hand-written tf.data random resized crops + flip: decoding whole, then cropping;
    ``decode_and_crop_jpeg`` in TF's official ImageNet input, whose boxes
    (``sample_distorted_bounding_box``) draw the height uniformly and so are smaller than
    timm's (area share drawn uniformly): a mean area of ~0.36 of a 500x375 photo against
    ~0.43, ~20% fewer pixels to decode; and ``decode_and_crop_jpeg`` of the same boxes as
    ours (``crops.crop_boxes`` of per-image draws), so the decoding work is equal."""
    import numpy as np
    import tensorflow as tf

    from resnet_builder.data.crops import DRAWS_PER_IMAGE, Draw, box_window, crop_boxes, crop_draws

    draws = crop_draws(tf.constant([0, 1], tf.int64), crop,
                       Draw(len(names), 0, len(names))).numpy()
    (area_low, area_high), ratio = crop["scale"], crop["ratio"]

    def tf_box(contents):
        begin, box_size, _ = tf.image.sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(contents), tf.zeros([0, 0, 4]),
            area_range=(area_low, area_high), aspect_ratio_range=ratio,
            min_object_covered=0.0, use_image_if_no_bounding_boxes=True)
        return tf.concat([begin[:2], box_size[:2]], 0)

    def timm_box(contents, row):
        dims = tf.io.extract_jpeg_shape(contents)[:2]
        return tf.concat(box_window(*crop_boxes(row, tf.cast(dims, tf.float32), crop), dims), 0)

    def finish(image):
        return tf.image.random_flip_left_right(tf.image.resize(image, (size, size))), 0

    def whole(path, row):
        contents = tf.io.read_file(path)
        y, x, h, w = tf.unstack(tf_box(contents))
        return finish(tf.io.decode_jpeg(contents, 3)[y:y + h, x:x + w])

    def fused(path, row):
        contents = tf.io.read_file(path)
        return finish(tf.io.decode_and_crop_jpeg(contents, tf_box(contents), 3))

    def fused_same_boxes(path, row):
        contents = tf.io.read_file(path)
        return finish(tf.io.decode_and_crop_jpeg(contents, timm_box(contents, row), 3))

    def hand_written(load):
        return lambda: (tf.data.Dataset.from_tensor_slices((names, draws[:, :DRAWS_PER_IMAGE]))
                        .shuffle(len(names)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
                        .batch(batch).prefetch(tf.data.AUTOTUNE))

    contents = tf.io.read_file(names[0])
    area = float(tf.reduce_prod(tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.float32)))
    boxes = (lambda c, r: tf_box(c), timm_box)
    shares = [float(np.mean([float(tf.reduce_prod(box(contents, tf.constant(row))[2:])) / area
                             for row in draws[:500]])) for box in boxes]
    print(f"random resized crop boxes, mean area share of {names[0]}: "
          f"sample_distorted_bounding_box {shares[0]:.2f}, timm's (ours) {shares[1]:.2f}")
    return {"tf.data: decode whole, then crop": hand_written(whole),
            "tf.data: decode_and_crop_jpeg": hand_written(fused),
            "tf.data: decode_and_crop_jpeg, our boxes": hand_written(fused_same_boxes)}


def crops(folder: Path, size: int, batch: int, rounds: int = 3) -> None:
    """Crops, ours (taken while decoding) vs hand-written tf.data: the ImageNet training
    crop (random resized crop, scale 0.08-1, + flip) and ``resize: crop`` (centre 0.875)."""
    import numpy as np
    import tensorflow as tf

    from resnet_builder.benchmark.pipelines import images_per_second
    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data

    names = sorted(str(p) for p in folder.rglob("*.jpg"))
    crop = {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}

    def ours(augment: AugmentConfig, mode: str):
        cfg = DataConfig(source="folder", path=str(folder), image_size=size,
                         validation_split=0.0, cache=False, resize=mode)
        bundle, epochs = load_data(cfg, augment, seed=0), iter(range(10**6))
        return lambda: bundle.train_dataset(next(epochs), batch)

    def centre_whole(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), 3)
        return tf.image.resize(tf.image.central_crop(image, 0.875), (size, size)), 0

    groups = {
        "random resized crop + flip": {
            "ours (crop taken while decoding)": ours(AugmentConfig(
                random_resized_crop=crop, horizontal_flip=True), "stretch"),
            **crop_loaders(names, size, batch, crop)},
        "resize: crop (centre 0.875), no augmentation": {
            "ours (centre window decoded alone)": ours(AugmentConfig(), "crop"),
            "tf.data: decode whole, central_crop": lambda: (
                tf.data.Dataset.from_tensor_slices(names).shuffle(len(names))
                .map(centre_whole, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
                .prefetch(tf.data.AUTOTUNE))}}
    for title, pipelines in groups.items():
        for make in pipelines.values():
            images_per_second(make)  # warm-up
        rates = {name: [] for name in pipelines}
        for _ in range(rounds):
            for name, make in pipelines.items():
                rates[name].append(images_per_second(make))
        medians = {name: float(np.median(values)) for name, values in rates.items()}
        ours_rate = next(iter(medians.values()))
        print(f"{title}, median images/s:")
        for name, rate in medians.items():
            print(f"  {name:42s} {rate:8.0f}   ours/this = {ours_rate / rate:.2f}x")


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
    crops(work / "photos", args.size, args.batch)
    if args.first_batch_files:
        first_batch(work / "small", args.first_batch_files, args.size, args.batch)


if __name__ == "__main__":
    main()
