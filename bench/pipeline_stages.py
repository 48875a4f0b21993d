"""Where the streaming folder pipeline's time goes, stage by stage, in one run.

    python bench/pipeline_stages.py [--files 1000] [--size 224] [--batch 64] [--rounds 3]

Makes photo-size JPEGs (500x375, quality 90), then times full passes of each stage below,
alternating so all see the same machine conditions, and prints median images/s:

  * decode alone: ``decode_jpeg`` (exact DCT) in a flat parallel map, a 224 corner kept so
    images batch: the ceiling of any pipeline that decodes the whole photo (the hand-written
    baseline does; 1.2x it needs a pipeline within a few % of this);
  * bare: ``decode_jpeg`` (exact DCT) + bilinear resize in a flat parallel map: the floor of
    the work any pipeline does here;
  * our per-image decode (``native_decode_and_resize``: the Pillow check, the format and
    DCT-scale branches, the resize rule) in the same flat map, failures dropped;
  * the same decode as ``tf.map_fn`` over each batch inside a parallel map of batches (no
    places kept: a failure drops the batch);
  * ours, the failure-safe batch decoder alone (``stream.file_images``: uint8 batches, places
    kept), which redoes a failed batch;
  * ours, the streamed batches (``guarded.guarded_batches``: the ``map_fn`` fast path with
    that redo; uint8);
  * ours, ``train_dataset`` without augmentation (+ the float32 copy), and with the flip;
  * the hand-written tf.data pipeline of ``bench/pipeline_folder.py`` (no error handling).

The last two come from ``benchmark.pipelines.folder_pipelines``: a pass there is 3 epochs,
each iterated as a training run does (ours one dataset for the run, the hand-written one
dataset per epoch); the other stages are one epoch a pass.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from _common import photo_pipeline_args


def stages(folder: Path, size: int, batch: int) -> dict[str, Callable[[], Iterable]]:
    """name -> a function giving one epoch of (images, labels) batches."""
    import tensorflow as tf

    from resnet_builder.benchmark.pipelines import folder_pipelines
    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data
    from resnet_builder.data.decode import (
        BATCHES_AT_ONCE,
        DECODE_THREADS,
        SkipLog,
        native_decode_and_resize,
        without_autotune,
    )
    from resnet_builder.data.guarded import guarded_batches
    from resnet_builder.data.resizing import Resize, resample
    from resnet_builder.data.stream import fast_file_images, file_images

    names = sorted(str(p) for p in folder.rglob("*.jpg"))
    paths, how, shape = tf.constant(names), Resize(size), (size, size, 3)
    orders = (np.random.default_rng(epoch).permutation(len(names)) for epoch in range(10**6))
    plain = tf.autograph.experimental.do_not_convert

    def flat(decode: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[], tf.data.Dataset]:
        def load(path: tf.Tensor) -> tuple[tf.Tensor, int]:
            return decode(tf.io.read_file(path)), 0
        return lambda: (tf.data.Dataset.from_tensor_slices(tf.gather(paths, next(orders)))
                        .map(plain(load), num_parallel_calls=DECODE_THREADS)
                        .ignore_errors().batch(batch).with_options(without_autotune()))

    def ours_decode(contents: tf.Tensor) -> tf.Tensor:
        return native_decode_and_resize(contents, how, 3)

    def decode_alone(contents: tf.Tensor) -> tf.Tensor:
        return tf.io.decode_jpeg(contents, 3, dct_method="INTEGER_ACCURATE")[:size, :size]

    def bare(contents: tf.Tensor) -> tf.Tensor:
        return resample(tf.io.decode_jpeg(contents, 3, dct_method="INTEGER_ACCURATE"),
                        size, size)

    def batch_level() -> tf.data.Dataset:
        def decode_all(sources: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            images = tf.map_fn(lambda path: ours_decode(tf.io.read_file(path)), sources,
                               fn_output_signature=tf.TensorSpec(shape, tf.uint8),
                               parallel_iterations=DECODE_THREADS)
            return images, tf.zeros(tf.shape(sources), tf.int32)
        return (tf.data.Dataset.from_tensor_slices(tf.gather(paths, next(orders))).batch(batch)
                .map(plain(decode_all), num_parallel_calls=BATCHES_AT_ONCE).ignore_errors()
                .with_options(without_autotune()))

    labels, skips = np.zeros(len(names), np.int32), SkipLog()
    signature = [tf.TensorSpec([None], tf.int64)]  # each traced once, as in bundle.py
    lookup = tf.function(file_images(names, labels, how, 3, skips, None),
                         input_signature=signature, autograph=False)
    fast = tf.function(fast_file_images(names, labels, how, 3, skips),
                       input_signature=signature, autograph=False)

    def batch_decoder() -> tf.data.Dataset:
        return (tf.data.Dataset.from_tensor_slices(next(orders).astype(np.int64)).batch(batch)
                .map(lookup, num_parallel_calls=BATCHES_AT_ONCE).prefetch(tf.data.AUTOTUNE)
                .with_options(without_autotune()))

    def guarded() -> tf.data.Dataset:
        picks = tf.constant(next(orders).astype(np.int64))
        spec = (tf.TensorSpec([None, *shape], tf.uint8), tf.TensorSpec([None], tf.int32))
        return guarded_batches(
            range(-(-len(names) // batch)), lambda n: (picks[n * batch:(n + 1) * batch],), fast,
            lookup, spec).prefetch(tf.data.AUTOTUNE).with_options(without_autotune())

    cfg = DataConfig(source="folder", path=str(folder), image_size=size, validation_split=0.0,
                     cache=False, batch_size=batch)
    unaugmented = load_data(cfg, AugmentConfig(), seed=0)
    baselines = folder_pipelines(folder, size, batch)  # ours with the flip, hand-written
    epochs = iter(range(10**6))
    return {"decode alone (no resize), flat map": flat(decode_alone),
            "bare decode + resize, flat map": flat(bare),
            "our per-image decode, flat map": flat(ours_decode),
            "our decode, map_fn per batch": batch_level,
            "ours: failure-safe decoder (uint8)": batch_decoder,
            "ours: streamed batches (uint8)": guarded,
            "ours: + float32 (no augmentation)": lambda: unaugmented.train_dataset(
                next(epochs), batch),
            "ours: + flip (training pipeline)": baselines["ours"],
            "hand-written tf.data (flip)": baselines["tfdata"]}


def main() -> None:
    args = photo_pipeline_args()

    from resnet_builder.benchmark.pipelines import images_per_second, make_jpegs

    work = Path(tempfile.mkdtemp(prefix="pipeline_stages_"))
    make_jpegs(work / "photos", args.files)
    pipelines = stages(work / "photos", args.size, args.batch)
    for make in pipelines.values():  # warm-up: graphs, file cache
        images_per_second(make)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, make in pipelines.items():
            rates[name].append(images_per_second(make))
    print(f"{args.files} JPEGs 500x375 -> {args.size}, batch {args.batch}, median images/s "
          f"over {args.rounds} alternating passes:")
    for name, values in rates.items():
        print(f"  {name:36s} {np.median(values):7.0f}   {[round(v) for v in values]}")


if __name__ == "__main__":
    main()
