"""Shared pieces of the benchmarks: the model under test, synthetic data, round-robin timing.

Every benchmark here times its variants *in one process, alternating*: round r
runs variant A for a few steps, then B, then C, ..., then the baseline once
more, then round r+1. On
a machine other people share, load comes and goes; alternating puts each
variant under the same load, so the per-round ratio to the baseline is far
steadier than the absolute images/s. We report medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEPTH = 56
BLOCK = "bottleneck"
SHAPE = (32, 32, 3)
CLASSES = 10


def macs_per_image(depth: int = DEPTH, block: str = BLOCK) -> int:
    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.summary import model_summary

    return model_summary(resolve_architecture(depth, block_type=block, input_shape=SHAPE),
                         CLASSES)["macs_per_image"]


def train_flops_per_image(depth: int = DEPTH, block: str = BLOCK) -> float:
    """3 x forward (forward, grad w.r.t. inputs, grad w.r.t. weights), 2 FLOPs a multiply-add."""
    return 3 * 2 * macs_per_image(depth, block)


def build(policy: str | None = None, depth: int = DEPTH, block: str = BLOCK):
    """Our classifier (``build_model``), under a dtype policy when given."""
    import keras

    from resnet_builder import build_model

    old = keras.mixed_precision.global_policy().name
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        return build_model(depth, block_type=block, num_classes=CLASSES, input_shape=SHAPE)
    finally:
        keras.mixed_precision.set_global_policy(old)


def build_channels_first(policy: str | None = None, depth: int = DEPTH, block: str = BLOCK):
    """The same network made from the same ``Plan``, but channels-first (NCHW) inside.

    Conv/pool layers get ``data_format="channels_first"``, BN ``axis=1``; the
    input is transposed once. Flat functional model (no nested backbone).
    """
    import keras

    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.backbone import KERAS_LAYERS

    arch = resolve_architecture(depth, block_type=block, input_shape=SHAPE)
    plan, _ = arch.plan()
    old = keras.mixed_precision.global_policy().name
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input(SHAPE)
        tensors = {plan.input_name: keras.layers.Permute((3, 1, 2))(inputs)}
        for op in plan.ops:
            args = dict(op.args)
            if op.kind in ("conv", "max_pool"):
                args["data_format"] = "channels_first"
            if op.kind == "bn":
                args["axis"] = 1
            layer = KERAS_LAYERS[op.kind](name=op.name, **args)
            ins = [tensors[n] for n in op.inputs]
            tensors[op.name] = layer(ins if op.kind == "add" else ins[0])
        x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(tensors[plan.output])
        out = keras.layers.Dense(CLASSES, activation="softmax", dtype="float32")(x)
        return keras.Model(inputs, out)
    finally:
        keras.mixed_precision.set_global_policy(old)


def synthetic_pool(batch: int, batches: int = 4, seed: int = 0):
    """``batches`` batches of float32 images and int32 labels, already in memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches, batch, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=(batches, batch)).astype("int32")
    return x, y


def pool_dataset(batch: int, batches: int = 4):
    """An endless tf.data stream of the pre-batched in-memory pool (near-zero input cost)."""
    import tensorflow as tf

    x, y = synthetic_pool(batch, batches)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().prefetch(2)


def sgd():
    import keras

    return keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)


@dataclass
class Variant:
    """A named way to train; ``run(steps)`` trains and returns (images, seconds) it timed."""

    name: str
    note: str
    run: Callable[[int], tuple[int, float]]
    results: list = field(default_factory=list)  # images/s per round

    def rate(self) -> float:
        return statistics.median(self.results) if self.results else float("nan")


def round_robin(variants: list[Variant], rounds: int, steps: int, baseline: str | None,
                log: Callable[[str], None] = print) -> dict:
    """Alternate the variants for ``rounds`` rounds; medians and per-round ratios to baseline."""
    ratios: dict[str, list[float]] = {v.name: [] for v in variants}
    base = next((v for v in variants if v.name == baseline), None)
    for r in range(rounds):
        this_round = {}
        for v in variants:
            images, seconds = v.run(steps)
            v.results.append(images / seconds)
            this_round[v.name] = images / seconds
            log(f"round {r + 1}/{rounds} {v.name:28s} {images / seconds:8.1f} /s")
        if base is not None:
            # The baseline runs again at the end of the round: load that changes during
            # the round then moves both of its measurements, not just the variants'.
            images, seconds = base.run(steps)
            log(f"round {r + 1}/{rounds} {base.name + ' (again)':28s} {images / seconds:8.1f} /s")
            base.results.append(images / seconds)
            reference = (this_round[base.name] + images / seconds) / 2
            for name, rate in this_round.items():
                ratios[name].append(rate / reference)
    return {
        v.name: {
            "note": v.note,
            "per_s": v.rate(),
            "per_s_rounds": v.results,
            "ratio_to_baseline": statistics.median(ratios[v.name]) if ratios[v.name] else None,
        }
        for v in variants
    }


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


def timer() -> float:
    return time.perf_counter()


def photo_pipeline_args() -> argparse.Namespace:
    """The options of the photo-pipeline benches (pipeline_stages, pipeline_records)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()
