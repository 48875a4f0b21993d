"""The issue's GPU check, ready for a GPU machine with TensorFlow: ResNet50V2 at 224 fed from
a JPEG folder and from TFRecords by ``resnet_builder.train``, against plain Keras ``fit``.

    python bench/gpu_input_check.py [--files 4096] [--size 224] [--batch 128] [--epochs 2]
                                    [--preset resnet50_v2_imagenet] [--out results.jsonl]

Makes ``--files`` photo-size JPEGs (500x375, 10 classes), packs them (``pack_folder``, 16
shards), then trains, each in a fresh process (GPU memory freed between them):
  plain:           ``image_dataset_from_directory`` + ``RandomFlip`` + ``fit`` (the same
                   network, built with ``build_model``, and the same precision policy)
  ours_folder:     ``train`` with data.source folder, data.cache false (streaming)
  ours_tfrecord:   ``train`` with data.source tfrecord
no validation, ``--epochs`` epochs. Each prints one JSON line: the last epoch's training
images/s and the GPU's busy share during that epoch (``nvidia-smi``, every 200 ms; None
without one). ``--preset tiny`` runs a tiny network, for trying the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_model_check import busy_sampler
from plain_keras_folder import TINY

VARIANTS = ("plain", "ours_folder", "ours_tfrecord")


def _last_epoch_clock(sampler_log: str, epochs: int, images: int, report: dict):
    """A callback filling ``report`` with the last epoch's training images/s and GPU busy
    share, from the epoch's start to its last step (the trainer's checkpoint writes, which
    its own callbacks make at the epoch's end, are left out)."""
    import keras

    def lines() -> list[str]:
        return Path(sampler_log).read_text().splitlines() if os.path.exists(sampler_log) else []

    class LastEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.first = time.perf_counter(), len(lines())

        def on_train_batch_end(self, batch, logs=None):
            self.end, self.last = time.perf_counter(), len(lines())

        def on_epoch_end(self, epoch, logs=None):
            if epoch != epochs - 1:
                return
            report["images_per_second"] = round(images / (self.end - self.start), 1)
            busy = [float(v) for v in lines()[self.first:self.last]
                    if v.strip().replace(".", "", 1).isdigit()]
            report["gpu_busy_share"] = round(sum(busy) / len(busy) / 100, 3) if busy else None

    return LastEpoch()


def _model_keys(preset: str) -> dict:
    return {"preset": None, **TINY} if preset == "tiny" else {"preset": preset}


def plain(args: argparse.Namespace, report: dict, sampler_log: str) -> None:
    """What a plain Keras user writes for a folder, on the same network and policy."""
    import keras
    import tensorflow as tf

    from resnet_builder import build_model

    if args.precision != "off":
        keras.mixed_precision.set_global_policy(f"mixed_{args.precision}")
    data = keras.utils.image_dataset_from_directory(
        args.photos, image_size=(args.size, args.size), batch_size=args.batch, seed=0,
        verbose=False)
    flip = keras.layers.RandomFlip("horizontal")
    data = data.map(lambda x, y: (flip(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    model = build_model(num_classes=10, input_shape=(args.size, args.size, 3),
                        **{k: v for k, v in _model_keys(args.preset).items() if v is not None})
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    clock = _last_epoch_clock(sampler_log, args.epochs, args.files, report)
    model.fit(data.prefetch(tf.data.AUTOTUNE), epochs=args.epochs, verbose=0, callbacks=[clock])


def ours(args: argparse.Namespace, report: dict, sampler_log: str, source: str) -> None:
    """``resnet_builder.train`` streaming the folder, or reading the packed shards."""
    from resnet_builder import train
    from resnet_builder.config import Config, apply_overrides

    path = args.photos if source == "folder" else args.packed
    model = [f"model.{key}={json.dumps(value)}" for key, value in
             _model_keys(args.preset).items()]
    cfg = apply_overrides(Config(), [
        *model, f"data.source={source}", f"data.path={path}", f"data.image_size={args.size}",
        "data.cache=false", "data.validation_split=0", f"data.batch_size={args.batch}",
        "augment.horizontal_flip=true", "augment.random_crop_padding=0",
        f"hardware.mixed_precision={args.precision}", f"train.epochs={args.epochs}",
        "optim.lr=0.05", "schedule.type=constant", "run.progress=none", "run.plots=false",
        f"run.project={Path(args.packed).parent / 'runs'}", f"run.name={source}"])
    images = args.files if source == "folder" else int(json.loads(
        (Path(args.packed) / "dataset.json").read_text())["splits"]["train"]["count"])
    train(cfg, callbacks=[_last_epoch_clock(sampler_log, args.epochs, images, report)])


def _child(args: argparse.Namespace) -> None:
    sampler_log = str(Path(args.packed).parent / f"busy_{args.one}.log")
    sampler = busy_sampler(sampler_log)
    report: dict = {"variant": args.one, "preset": args.preset, "size": args.size,
                    "batch": args.batch, "precision": args.precision}
    try:
        if args.one == "plain":
            plain(args, report, sampler_log)
        else:
            ours(args, report, sampler_log, args.one.split("_", 1)[1])
    finally:
        if sampler is not None:
            sampler.terminate()
    print("RESULT " + json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--preset", default="resnet50_v2_imagenet",
                        help="a preset (default: keras.applications' ResNet50V2 network), or tiny")
    parser.add_argument("--precision", default="float16", choices=("off", "float16", "bfloat16"))
    parser.add_argument("--out", default=None, help="also append the JSON lines here")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--photos", help=argparse.SUPPRESS)
    parser.add_argument("--packed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _child(args)

    from resnet_builder.benchmark.pipelines import make_jpegs
    from resnet_builder.data.pack import pack_folder

    work = Path(tempfile.mkdtemp(prefix="gpu_input_check_"))
    photos, packed = work / "photos", work / "packed"
    make_jpegs(photos, args.files, classes=10)
    pack_folder(str(photos), str(packed), shards=16, validation_split=0.0)
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", variant, "--photos", str(photos), "--packed",
             str(packed), *(f"--{key}={getattr(args, key)}" for key in
                            ("files", "size", "batch", "epochs", "preset", "precision"))],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        line = lines[-1][7:] if lines else json.dumps(
            {"variant": variant, "error": out.stderr[-2000:]})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
