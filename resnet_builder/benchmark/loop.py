"""The trainer's whole loop, timed on in-memory data: pipeline, step, metrics, bookkeeping.

``bench`` reports it beside the bare step (``train_images_per_second``, one
constant batch, no pipeline) so the cost of everything around the step shows
as one ratio, ``loop_vs_step``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras

from resnet_builder.config import load_config
from resnet_builder.data import load_data
from resnet_builder.model.architecture import Architecture
from resnet_builder.model.classifier import ResNetV2Classifier, build_backbone
from resnet_builder.runs import RunPaths
from resnet_builder.training.batchnorm import fuse_batch_norm
from resnet_builder.training.loop import TrainingLoop
from resnet_builder.training.schedules import build_schedule
from resnet_builder.training.setup import make_optimizer, resolve_steps_per_call
from resnet_builder.training.state import RunState
from resnet_builder.training.strategy import make_strategy

POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclass(frozen=True)
class BenchModel:
    """The classifier every ``bench`` measurement builds: the backbone and ``bench``'s own
    model flags (--num-classes, --head, --dropout), so no measurement times another one."""

    arch: Architecture
    num_classes: int = 10
    head: str = "gap"
    dropout: float = 0.0

    def build(self) -> ResNetV2Classifier:
        return ResNetV2Classifier(build_backbone(self.arch), self.num_classes, head=self.head,
                                  dropout=self.dropout)


@contextlib.contextmanager
def precision(setting: str) -> Iterator[None]:
    """Models built inside compute under ``setting`` (off, float16, bfloat16)."""
    keras.mixed_precision.set_global_policy(POLICIES[setting])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def loop_runner(net: BenchModel, *, batch_size: int, steps: int, xla: bool,
                mixed_precision: str = "off") -> Callable[[], float]:
    """A warmed-up ``run() -> images/s`` of one ``TrainingLoop.train_epoch`` of ``steps``.

    Two epochs are run first: epoch 1 traces, and epoch 2 still runs ~15% slow while
    oneDNN and the allocator warm up (measured: ResNet-20, 16x16x1, batch 64).
    """
    h, _, c = net.arch.input_shape
    cfg = load_config(None, [
        "data.source=synthetic", f"data.image_size={h}", f"data.channels={c}",
        f"data.batch_size={batch_size}", f"data.synthetic_samples={batch_size * steps}",
        f"data.synthetic_classes={net.num_classes}", "data.validation_split=0",
        "augment.horizontal_flip=false", "augment.random_crop_padding=0",
        "optim.optimizer=sgd", "optim.lr=0.01", "optim.weight_decay=0", "train.epochs=1000",
        "run.progress=none", f"hardware.xla={str(xla).lower()}",
        f"hardware.mixed_precision={mixed_precision}"])
    data = load_data(cfg.data, cfg.augment, 0)
    schedule = build_schedule(cfg.schedule, cfg.optim.lr, cfg.train.epochs, steps)
    with precision(mixed_precision):
        model = net.build()
        optimizer = make_optimizer(cfg, schedule, mixed_precision)
    fuse_batch_norm(model)
    optimizer.build(model.trainable_variables)
    loop = TrainingLoop(cfg, make_strategy("none"), model, optimizer, data, schedule,
                        RunState(), keras.callbacks.CallbackList([], model=model),
                        RunPaths(Path(tempfile.gettempdir())),
                        steps_per_call=resolve_steps_per_call(cfg.hardware.steps_per_call))
    train_fn = loop.train_function(frozen=False)
    epochs = iter(range(1, cfg.train.epochs + 1))

    def run() -> float:
        start = time.perf_counter()
        loop.train_epoch(next(epochs), train_fn)
        return batch_size * steps / (time.perf_counter() - start)

    run()
    run()
    return run
