"""The training config: every key, its default, its type and its range, in one place.

A config is a tree of small dataclasses, one per YAML section. Each field's
``metadata`` carries the help text and the allowed values, so validation, the
``config --show`` listing, ``train --help`` and the README table all read the
same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _key(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, nullable: bool = False, types: tuple | None = None) -> Any:
    """A dataclass field with the facts validation and docs need."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "nullable": nullable,
            "types": types}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


BLOCK_TYPES = ("basic", "bottleneck", "basic_block", "block")


@dataclass
class ModelConfig:
    depth: int | None = _key(20, "Network depth: 9n+2 (bottleneck) or 6n+2 (basic); CIFAR-style "
                             "network. Ignored when preset or stackwise_blocks is set.",
                             min=3, nullable=True)
    preset: str | None = _key(None, "Named preset (see `resnet-builder presets`).", nullable=True)
    block_type: str | None = _key(None, "basic | bottleneck (keras-cv: basic_block | block); "
                                  "null = the depth rule's default (bottleneck when 9n+2 fits).",
                                  choices=BLOCK_TYPES, nullable=True)
    stackwise_filters: list[int] | None = _key(None, "Explicit filters per stage.", nullable=True)
    stackwise_blocks: list[int] | None = _key(None, "Explicit blocks per stage.", nullable=True)
    stackwise_strides: list[int] | None = _key(None, "Explicit strides per stage.", nullable=True)
    stem_filters: int | None = _key(None, "Stem width; null = 16 for depth networks, 64 for "
                                    "stackwise/preset ones (the tutorial uses 32).",
                                    min=1, nullable=True)
    head: str = _key("gap", "Classifier head: gap (global pooling + Dense) or tutorial "
                     "(BN-ReLU-AvgPool-Flatten-Dense(512)-BN-Dropout-Dense).",
                     choices=("gap", "tutorial"))
    dropout: float = _key(0.0, "Dropout before the last Dense layer.", min=0.0, max=0.99)
    num_classes: int | None = _key(None, "Classes; null = taken from the data.", min=2,
                                   nullable=True)
    weights: str | None = _key(None, "Start from: a preset with weights (e.g. "
                               "resnet50_v2_imagenet) or a .keras / .weights.h5 file.",
                               nullable=True)
    freeze_backbone_epochs: int = _key(0, "Epochs to train with the backbone frozen (its "
                                       "batch-norm in inference mode) before fine-tuning all.",
                                       min=0)


@dataclass
class DataConfig:
    source: str = _key("digits", "Where images come from.",
                       choices=("digits", "cifar10", "cifar100", "folder", "npz", "synthetic"))
    path: str | None = _key(None, "Folder or file for cifar10/cifar100/folder/npz.", nullable=True)
    image_size: int = _key(32, "Images are resized to image_size x image_size.", min=8, max=4096)
    channels: int = _key(3, "1 (grayscale) or 3 (RGB).", choices=(1, 3))
    batch_size: int = _key(128, "Global batch size (split across replicas).", min=1)
    validation_split: float = _key(0.2, "Share held out for validation when the source has no "
                                   "validation split of its own.", min=0.0, max=0.9)
    cache: bool = _key(True, "Cache decoded images in memory when they fit.")
    shuffle_buffer: int = _key(10000, "Shuffle buffer size (images).", min=1)
    normalize: bool = _key(True, "Per-channel mean/std computed on the training split, stored "
                           "in the model.")
    synthetic_samples: int = _key(512, "Images in the synthetic source.", min=2)
    synthetic_classes: int = _key(10, "Classes in the synthetic source.", min=2)
    limit: int | None = _key(None, "Use at most this many training images (quick tries).",
                             min=1, nullable=True)


@dataclass
class AugmentConfig:
    random_crop_padding: int = _key(0, "Pad by this many pixels and crop back at random "
                                    "(He et al.: 4). 0 = off.", min=0, max=64)
    horizontal_flip: bool = _key(False, "Random left-right flips.")
    random_scale: float = _key(0.0, "Random zoom in/out by up to this fraction. 0 = off.",
                               min=0.0, max=0.9)


@dataclass
class OptimConfig:
    optimizer: str = _key("sgd", "sgd, adam or adamw.", choices=("sgd", "adam", "adamw"))
    lr: float = _key(0.1, "Peak learning rate.", min=0.0)
    momentum: float = _key(0.9, "SGD momentum.", min=0.0, max=1.0)
    nesterov: bool = _key(False, "Nesterov momentum (SGD).")
    weight_decay: float = _key(1e-4, "L2 weight decay (decoupled for adamw).", min=0.0)
    label_smoothing: float = _key(0.0, "Label smoothing.", min=0.0, max=0.99)
    scale_lr_with_replicas: bool = _key(False, "Multiply lr by the number of replicas "
                                        "(linear scaling rule).")


@dataclass
class ScheduleConfig:
    type: str = _key("cosine", "constant, step or cosine.", choices=("constant", "step", "cosine"))
    milestones: list[int] = _key([], "Step schedule: where lr is multiplied by gamma.")
    unit: str = _key("epochs", "Unit of milestones and warmup: epochs or iterations.",
                     choices=("epochs", "iterations"))
    gamma: float = _key(0.1, "Step schedule factor.", min=0.0, max=1.0)
    warmup: int = _key(0, "Warm-up length (in `unit`). 0 = off.", min=0)
    warmup_mode: str = _key("linear", "linear (ramp from warmup_lr to lr) or constant "
                            "(hold warmup_lr, He et al.).", choices=("linear", "constant"))
    warmup_lr: float = _key(0.0, "Learning rate at the start of warm-up.", min=0.0)
    min_lr: float = _key(0.0, "Cosine schedule floor.", min=0.0)


@dataclass
class TrainConfig:
    epochs: int = _key(15, "Epochs to train.", min=1)
    early_stopping_patience: int = _key(0, "Stop after this many epochs without a better "
                                        "val_accuracy. 0 = off.", min=0)
    eval_batch_size: int | None = _key(None, "Validation batch size; null = data.batch_size.",
                                       min=1, nullable=True)


@dataclass
class RunConfig:
    project: str = _key("runs/train", "Parent folder of run folders.")
    name: str = _key("exp", "Run name; exp, exp2, ... when taken (unless exist_ok).")
    exist_ok: bool = _key(False, "Reuse an existing run folder of the same name.")
    progress: str = _key("auto", "auto (bar on a terminal, lines otherwise), bar, line or none.",
                         choices=("auto", "bar", "line", "none"))
    tensorboard: bool = _key(True, "Write TensorBoard logs to <run>/tensorboard.")
    plots: bool = _key(True, "Write curves.png and confusion_matrix.png.")


@dataclass
class HardwareConfig:
    seed: int | None = _key(0, "Random seed; same seed + config = same results.csv on CPU.",
                            nullable=True)
    mixed_precision: str = _key("off", "off, float16 (GPU) or bfloat16.",
                                choices=("off", "float16", "bfloat16"))
    xla: bool = _key(False, "Compile the training step with XLA (jit_compile).")
    threads: int = _key(0, "CPU threads for TensorFlow ops; 0 = TensorFlow's choice.", min=0)


@dataclass
class DistributeConfig:
    strategy: str = _key("auto", "auto, none, mirrored, multi_worker or tpu.",
                         choices=("auto", "none", "mirrored", "multi_worker", "tpu"))


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
