"""The yardstick for big folders: what a plain Keras user writes for a folder of JPEGs.

    python bench/plain_keras_folder.py FOLDER [--size 224] [--epochs 3] [--batch 64]

``keras.utils.image_dataset_from_directory`` (80/20 split, seed 0) + ``RandomFlip`` +
``model.fit``. The network is the same one ``bench/train_folder.py`` trains with
resnet-builder (built here with ``build_model``, so only the input path and the loop
differ). Prints one JSON line: wall seconds, training images/s (training time only,
validation excluded) and the last val_accuracy. Run by ``bench/train_folder.py``.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import keras  # noqa: E402  (timed from process start, imports included)
import tensorflow as tf  # noqa: E402

from resnet_builder import build_model  # noqa: E402

TINY = {"stackwise_filters": [8], "stackwise_blocks": [1], "stackwise_strides": [2],
        "stem_filters": 8}  # the input, not the network, decides the speed


class TrainClock(keras.callbacks.Callback):
    """Seconds spent in training batches (each epoch's validation left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.started = 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.seconds += time.perf_counter() - self.started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    common = {"image_size": (args.size, args.size), "batch_size": args.batch,
              "validation_split": 0.2, "seed": 0, "verbose": False}
    train = keras.utils.image_dataset_from_directory(args.folder, subset="training", **common)
    val = keras.utils.image_dataset_from_directory(args.folder, subset="validation", **common)
    classes, count = len(train.class_names), len(train.file_paths)
    flip = keras.layers.RandomFlip("horizontal")
    train = train.map(lambda x, y: (flip(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    train, val = train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE)
    model = build_model(num_classes=classes, input_shape=(args.size, args.size, 3), **TINY)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    clock = TrainClock()
    history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=0,
                        callbacks=[clock])
    print(json.dumps({"wall_seconds": round(time.perf_counter() - START, 2),
                      "train_images_per_second": round(count * args.epochs / clock.seconds, 1),
                      "val_accuracy": round(history.history["val_accuracy"][-1], 4)}))


if __name__ == "__main__":
    main()
