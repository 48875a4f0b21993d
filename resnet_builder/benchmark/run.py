"""``resnet-builder bench``: how fast the trainer's step is, next to plain Keras and the machine.

Everything is measured in one process after warm-up, on synthetic images held in
memory: our training step (the one ``train`` uses), ``keras.Model.fit`` on the
same model, batch and data, our compiled forward pass against
``model.predict``, the machine's float32 matmul rate, and the input pipelines
(digits in memory, a PNG folder streamed, and photo-size JPEGs against a
hand-written tf.data pipeline and ``image_dataset_from_directory``, see
``pipelines.py``). Ratios measured side by side are the numbers to trust on a
busy machine.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from resnet_builder.benchmark.loop import BenchModel, loop_runner, precision
from resnet_builder.benchmark.machine import matmul_gflops
from resnet_builder.benchmark.pipelines import (
    compare_folder_pipelines,
    make_jpegs,
    pipeline_rate,
    png_folder,
)
from resnet_builder.config import DataConfig
from resnet_builder.model.architecture import Architecture
from resnet_builder.model.summary import model_summary
from resnet_builder.runtime import onednn_in_force
from resnet_builder.training.batchnorm import fuse_batch_norm
from resnet_builder.training.setup import resolve_steps_per_call
from resnet_builder.training.step import make_loss, make_train_function

BENCH_JPEGS = 256  # photo-size JPEGs the pipeline comparison decodes per pass


def _timed(fn, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``fn`` (which must block until done)."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - start


def step_runner(net: BenchModel, images, labels, batch_size: int, warmup: int, xla: bool,
                mixed_precision: str = "off") -> Callable[[int], float]:
    """A warmed-up ``run(steps) -> images/s`` of the trainer's own step on one batch.

    The same train function the trainer runs, one step per call, fed by a tf.data
    iterator as in training.
    """
    model = net.build()
    fuse_batch_norm(model)  # as the trainer does (hardware.fused_batchnorm)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    train = make_train_function(model, optimizer, make_loss(model.num_classes, 0.0),
                                global_batch_size=batch_size, jit_compile=xla)
    batch = (tf.constant(images[:batch_size]), tf.constant(labels[:batch_size]))
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())

    def one():
        float(train(iterator)[0])

    _timed(one, warmup)
    return lambda steps: steps * batch_size / _timed(one, steps)


class _FitClock(keras.callbacks.Callback):
    """Seconds from ``fit``'s ``on_train_begin`` to its ``on_train_end``."""

    def on_train_begin(self, logs=None) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, logs=None) -> None:
        self.seconds = time.perf_counter() - self.start


def fit_runner(net: BenchModel, images, labels, batch_size: int, warmup: int
               ) -> Callable[[int], float]:
    """A warmed-up ``run(steps) -> images/s`` of plain ``keras.Model.fit`` on the same model,
    batch and data (one ``fit`` call of ``steps`` steps, as a user's epoch).

    Timed from ``on_train_begin`` to ``on_train_end``: after that, from its second call on,
    ``fit`` took another 2.2 s (ResNet-20, 16x16x1) to 8-10 s (ResNet-56 bottleneck, 32x32x3)
    before returning, which a user pays once per call, not per step; counted in rounds of
    20 steps it halved ``fit``'s rate.
    """
    model = net.build()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    x, y = images[:batch_size], labels[:batch_size]
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0, shuffle=False)
    clock = _FitClock()

    def run(steps: int) -> float:
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                  callbacks=[clock])
        return steps * batch_size / clock.seconds

    return run


def predict_rates(net: BenchModel, images, batch_size: int, repeats: int) -> tuple[float,
                                                                                        float]:
    """(ours, model.predict) images/s for inference over the same array."""
    model = net.build()
    forward = tf.function(lambda x: model(x, training=False))
    batches = [tf.constant(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]

    def ours():
        for b in batches:
            forward(b).numpy()

    def keras_predict():
        model.predict(images, batch_size=batch_size, verbose=0)

    ours()
    keras_predict()
    n = repeats * len(images)
    return n / _timed(ours, repeats), n / _timed(keras_predict, repeats)


def run_benchmark(arch: Architecture, *, num_classes: int = 10, head: str = "gap",
                  dropout: float = 0.0, batch_size: int = 128, steps: int = 10, warmup: int = 3,
                  xla: bool = False, pipelines: bool = True,
                  mixed_precision: str = "off") -> dict[str, Any]:
    """Every number ``bench`` reports, as one JSON-ready dict.

    ``mixed_precision`` (off, float16, bfloat16) applies to our step, the trainer's
    loop and ``fit`` alike, so the ratios compare like with like.
    """
    h, w, c = arch.input_shape
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, h, w, c)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size).astype("int32")
    labels[:num_classes] = np.arange(min(num_classes, batch_size))
    macs = model_summary(arch, num_classes, head)["macs_per_image"]
    net = BenchModel(arch, num_classes, head, dropout)
    with precision(mixed_precision):
        step = step_runner(net, images, labels, batch_size, warmup, xla, mixed_precision)
        fit_epoch = fit_runner(net, images, labels, batch_size, warmup)
    loop_steps = max(steps, 20)
    loop_epoch = loop_runner(net, batch_size=batch_size, steps=loop_steps, xla=xla,
                             mixed_precision=mixed_precision)
    # Alternating, the same number of steps each side, median of 5: with 10 bare steps
    # against a 20-step epoch in 3 rounds, ResNet-20's loop_vs_step read 0.924 where 7
    # rounds of 20 and 20 gave 0.962-1.030 on the same tree. fit alternates too: timed once
    # before the rounds, on a busy machine, train_vs_fit read 0.886 where 6 alternating
    # rounds gave 1.27-1.89.
    rounds = [(step(loop_steps), loop_epoch(), fit_epoch(loop_steps)) for _ in range(5)]
    train = float(np.median([s for s, _, _ in rounds]))
    loop = float(np.median([lp for _, lp, _ in rounds]))
    fit = float(np.median([f for _, _, f in rounds]))
    loop_ratio = float(np.median([lp / s for s, lp, _ in rounds]))
    fit_ratio = float(np.median([s / f for s, _, f in rounds]))
    ours_predict, keras_predict = predict_rates(net, np.repeat(images, 2, axis=0), batch_size,
                                                max(2, steps // 3))
    matmul = matmul_gflops(seconds=2.0)
    train_gflops = 3 * 2 * macs * train / 1e9
    result: dict[str, Any] = {
        "input_shape": [h, w, c], "batch_size": batch_size,
        "block_type": arch.backbone["block_type"], "num_classes": num_classes, "head": head,
        "macs_per_image": macs,
        "mixed_precision": mixed_precision,
        "train_images_per_second": round(train, 1),
        "trainer_loop_images_per_second": round(loop, 1),
        "loop_vs_step": round(loop_ratio, 3),
        "loop_steps_per_call": resolve_steps_per_call("auto"),  # 8 on a GPU; the step runs 1
        "baseline_fit_images_per_second": round(fit, 1),
        "train_vs_fit": round(fit_ratio, 3),
        "predict_images_per_second": round(ours_predict, 1),
        "baseline_predict_images_per_second": round(keras_predict, 1),
        "predict_vs_keras_predict": round(ours_predict / keras_predict, 3),
        "train_gflops": round(train_gflops, 2),
        "matmul_gflops": round(matmul, 2),
        "fraction_of_matmul": round(train_gflops / matmul, 3),
        "xla": xla,
        "onednn": onednn_in_force(),  # TensorFlow's oneDNN CPU kernels (runtime.prefer_onednn)
    }
    if pipelines:
        result.update(_pipeline_fields(h or 32, c, batch_size))
    return result


def _pipeline_fields(size: int, channels: int, batch_size: int) -> dict[str, float]:
    """Digits in memory, a PNG folder streamed, and photo JPEGs: ours vs two baselines."""
    out = {"pipeline_digits_images_per_second": round(pipeline_rate(
        DataConfig(source="digits", image_size=size, channels=channels, cache=True),
        batch_size), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = png_folder(Path(tmp) / "images", size)
        out["pipeline_folder_images_per_second"] = round(pipeline_rate(
            DataConfig(source="folder", path=str(folder), image_size=size, channels=channels,
                       cache=False), batch_size), 1)
        make_jpegs(Path(tmp) / "photos", BENCH_JPEGS)
        rates = compare_folder_pipelines(Path(tmp) / "photos", size, min(batch_size, 64),
                                         rounds=2, channels=channels)
    out["pipeline_jpeg_images_per_second"] = round(rates["ours"], 1)
    out["baseline_tfdata_images_per_second"] = round(rates["tfdata"], 1)
    out["baseline_keras_directory_images_per_second"] = round(rates["keras_directory"], 1)
    out["pipeline_jpeg_vs_tfdata"] = round(rates["ours"] / rates["tfdata"], 3)
    return out
