"""Time to the first training step on a big folder: ``train`` vs a plain tf.data + fit script.

    python bench/first_step.py [--files 20000] [--size 224] [--repeats 2]

Makes ``--files`` small JPEGs (160x120) in 10 class folders, then runs, alternately and
each in a fresh process, the two ways to reach the first training step from a folder path:
  plain: ``tf.data.Dataset.list_files`` + a parallel decode/resize map + ``fit`` (1 step)
  ours:  ``resnet_builder.train`` (data.source folder, data.cache false, streaming)
on the same tiny network and batch. Each process takes its clock after its imports (both
import Keras and TensorFlow; the import is not what differs) and stops at the end of the
first step. Prints the seconds and the ratio ours / plain (the issue's target is 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each process starts TensorFlow as it would for a user (before anything here imports
# resnet_builder, which asks for oneDNN: runtime.prefer_onednn).
USER_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def _first_step_callback(start: float):
    """A callback that prints the seconds since ``start`` at the first step's end and exits."""
    import keras

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            print(json.dumps({"seconds": round(time.perf_counter() - start, 3)}), flush=True)
            os._exit(0)  # the measurement is taken; nothing after it is timed

    return FirstStep()


def plain(folder: Path, size: int, batch: int) -> None:
    """What a plain Keras user writes: list_files, decode + resize in a map, fit."""
    import keras
    import tensorflow as tf
    from plain_keras_folder import TINY

    from resnet_builder import build_model

    start = time.perf_counter()
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(classes, list(range(len(classes)))), -1)

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (size, size)), table.lookup(tf.strings.split(path, "/")[-2])

    files = tf.data.Dataset.list_files(str(folder / "*" / "*.jpg"), shuffle=True, seed=0)
    train = files.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)
    model = build_model(num_classes=len(classes), input_shape=(size, size, 3), **TINY)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, epochs=1, verbose=0, callbacks=[_first_step_callback(start)])


def ours(folder: Path, size: int, batch: int, project: Path) -> None:
    """``resnet_builder.train`` on the folder, streaming (what a big folder gets)."""
    from plain_keras_folder import TINY

    from resnet_builder import train
    from resnet_builder.config import Config, apply_overrides

    start = time.perf_counter()
    cfg = apply_overrides(Config(), [
        "model.preset=null", *(f"model.{key}={json.dumps(value)}" for key, value in TINY.items()),
        "data.source=folder", f"data.path={folder}", f"data.image_size={size}",
        "data.cache=false", f"data.batch_size={batch}", "train.epochs=1",
        "run.progress=none", "run.plots=false", f"run.project={project}",
        "run.log_every=1"])  # callbacks hear of a step when it is read: read the first one
    train(cfg, callbacks=[_first_step_callback(start)])


def _one(which: str, folder: Path, args: argparse.Namespace, tmp: str) -> float:
    """Seconds to the first step of ``which`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", which, "--folder", str(folder), "--size",
         str(args.size), "--batch", str(args.batch)],
        cwd=tmp, capture_output=True, text=True, check=True,
        env=USER_ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=("plain", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "plain":
        return plain(args.folder, args.size, args.batch)
    if args.one == "ours":
        return ours(args.folder, args.size, args.batch, Path.cwd() / "runs")

    from resnet_builder.benchmark.pipelines import make_jpegs

    seconds: dict[str, list[float]] = {"plain": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "small"
        make_jpegs(folder, args.files, (160, 120), classes=10)
        _one("plain", folder, args, tmp)  # warm-up: the file system cache
        for _ in range(args.repeats):
            for which in ("plain", "ours"):
                seconds[which].append(_one(which, folder, args, tmp))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"time to the first training step, {args.files} JPEGs 160x120 -> {args.size}, "
          f"batch {args.batch}, after imports (median of {args.repeats}):")
    for name, values in seconds.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:6s} {median[name]:6.2f} s   (runs: {runs})")
    print(f"  ours/plain: {median['ours'] / median['plain']:.2f}x")


if __name__ == "__main__":
    main()
