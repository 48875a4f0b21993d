"""The training config's schema: every key, its default, its type and its range, in one place.

A config is a tree of small dataclasses, one per YAML section. Each field's
``metadata`` carries the help text and the allowed values, so validation, the
``config --show`` listing, ``train --help`` and the README table all read the
same facts (through ``key_specs``; how a key is declared: ``keys.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any, get_type_hints

from resnet_builder.config.keys import KeySpec, Part, read_spec
from resnet_builder.config.keys import declare as _key
from resnet_builder.depth import BLOCK_TYPE_ALIASES
from resnet_builder.model.architecture import RESIZE_MODES
from resnet_builder.runs import TRAIN_PROJECT

# How a key that counts steps says a time instead ('10min', '30s', '1.5h', '10 MIN'); group 1
# is the number (not zero), group 2 the unit (``DURATION_SECONDS``).
DURATION = r"(?i)\s*(?=[\d.]*[1-9])(\d+(?:\.\d+)?)\s*(s|sec|min|h)\s*"
DURATION_SECONDS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}

# Every block-type spelling depth.py accepts, in its order (ours before keras-cv's).
BLOCK_TYPES = tuple(BLOCK_TYPE_ALIASES)


@dataclass
class ModelConfig:
    """How the network is said: a CIFAR-style depth, stackwise lists, or a preset."""

    depth: int | None = _key(20, "Network depth: 9n+2 (bottleneck) or 6n+2 (basic); CIFAR-style "
                             "network. Ignored when preset or the stackwise_* lists are set.",
                             min=3, nullable=True)
    preset: str | None = _key(None, "Named preset (see `resnet-builder presets`).", nullable=True)
    block_type: str | None = _key(None, "basic | bottleneck (keras-cv: basic_block | block); "
                                  "null = the depth rule's default (bottleneck when 9n+2 fits).",
                                  choices=BLOCK_TYPES, nullable=True)
    stackwise_filters: list[int] | None = _key(None, "Explicit filters per stage.", min=1,
                                               nullable=True)
    stackwise_blocks: list[int] | None = _key(None, "Explicit blocks per stage.", min=1,
                                              nullable=True)
    stackwise_strides: list[int] | None = _key(None, "Explicit strides per stage.", min=1,
                                               nullable=True)
    stem_filters: int | None = _key(None, "Stem width; null = 16 for depth networks, 64 for "
                                    "stackwise/preset ones (the tutorial uses 32).",
                                    min=1, nullable=True)
    bn_momentum: float = _key(0.99, "Batch-norm moving-average momentum (Keras/keras-cv: 0.99; "
                              "0.9 settles faster when an epoch has few steps).",
                              min=0.0, max=0.999)
    head: str = _key("gap", "Classifier head: gap (global pooling + Dense) or tutorial "
                     "(BN-ReLU-AvgPool-Flatten-Dense(512)-BN-Dropout-Dense).",
                     choices=("gap", "tutorial"))
    dropout: float = _key(0.0, "Dropout before the last Dense layer.", min=0.0, max=0.99)
    num_classes: int | None = _key(None, "Classes; null = taken from the data.", min=2,
                                   nullable=True)
    weights: str | None = _key(None, "Start from: a preset with weights (e.g. "
                               "resnet50_v2_imagenet) or a .keras / .weights.h5 file.",
                               nullable=True)
    task: str = _key("multiclass", "multiclass (one label per image: softmax, cross-entropy) or "
                     "multilabel (any number of labels per image: sigmoid, binary "
                     "cross-entropy; needs data.source csv).", choices=("multiclass", "multilabel"))
    freeze_backbone_epochs: int = _key(0, "Epochs to train with the backbone frozen (its "
                                       "batch-norm in inference mode) before fine-tuning all.",
                                       min=0)


@dataclass
class DataConfig:
    """Where images come from and how they are batched."""

    source: str = _key("digits", "Where images come from.",
                       choices=("digits", "cifar10", "cifar100", "folder", "npz", "synthetic",
                                "tfrecord", "csv"))
    path: str | None = _key(None, "Folder or file for cifar10/cifar100/folder/npz; for csv the "
                            "CSV file (a path column, relative to the CSV's folder, and labels "
                            "as 'a;b;c' or one 0/1 column per class); for tfrecord "
                            "the folder `resnet-builder pack` wrote (a local path or any "
                            "tf.io.gfile URL such as gs://bucket/data).", nullable=True)
    image_size: int = _key(32, "Images are resized to image_size x image_size.", min=8, max=4096)
    channels: int = _key(3, "1 (grayscale) or 3 (RGB).", choices=(1, 3))
    batch_size: int = _key(128, "Global batch size (split across replicas).", min=1)
    validation_split: float = _key(0.2, "Share held out for validation when the source has no "
                                   "validation split of its own.", min=0.0, max=0.9)
    cache: bool | str = _key(True, "true: keep decoded images in memory when they fit the "
                             "memory budget, else stream them from disk; false: always stream; "
                             "disk: keep decoded images in a memory-mapped file under the "
                             "system temp folder (shared by the workers of a machine) for slow "
                             "storage.", choices=(True, False, "disk"))
    verify: bool = _key(False, "folder source: decode every file once before training and "
                        "leave out unreadable ones up front (slow on big folders); by default "
                        "files are only listed, and a file that fails to decode is skipped, "
                        "counted and listed in the run's skipped.csv.")
    normalize: bool = _key(True, "Per-channel mean/std computed on the training split, stored "
                           "in the model.")
    resize: str = _key("stretch", "How an image becomes image_size x image_size: stretch "
                       "(resize both sides), crop (shorter side to image_size / crop_pct, then "
                       "the centre square: timm's evaluation rule) or pad (longer side to "
                       "image_size, the rest filled). Stored in the model, so predict, evaluate "
                       "and exports resize the same way.", choices=RESIZE_MODES)
    crop_pct: float = _key(0.875, "resize: crop keeps this share of the shorter side (timm: "
                           "0.875, i.e. 256 -> 224).", min=0.05, max=1.0)
    class_weight: str | dict | None = _key(
        None, "Loss weight per class: balanced (n_samples / (n_classes * count), as "
        "scikit-learn) or a mapping {class name: weight} (classes left out weigh 1). null = "
        "all 1.", choices=("balanced",), nullable=True, types=(str, dict),
        parts=Part((float,), None, 0.0))
    sampler: str = _key("uniform", "uniform (each image once per epoch) or balanced (each "
                        "epoch draws as many images from every class, seeded by (seed, epoch); "
                        "the epoch keeps its length).", choices=("uniform", "balanced"))
    synthetic_samples: int = _key(512, "Images in the synthetic source.", min=2)
    synthetic_classes: int = _key(10, "Classes in the synthetic source.", min=2)
    limit: int | None = _key(None, "Use at most this many training images (quick tries).",
                             min=1, nullable=True)


@dataclass
class AugmentConfig:
    """Random changes to training images."""

    random_crop_padding: int = _key(0, "Pad by this many pixels and crop back at random "
                                    "(He et al.: 4). 0 = off.", min=0, max=64)
    horizontal_flip: bool = _key(False, "Random left-right flips.")
    random_scale: float = _key(0.0, "Random zoom in/out by up to this fraction. 0 = off.",
                               min=0.0, max=0.9)
    random_resized_crop: dict | None = _key(
        None, "The ImageNet training crop (Inception / timm): a random box covering a share "
        "`scale` of the image with aspect ratio in `ratio`, resized to image_size; `{}` takes "
        "the defaults. null = off.", nullable=True,
        parts={"scale": Part((list[float],), [0.08, 1.0], 0.0, 1.0, 2),
               "ratio": Part((list[float],), [0.75, 1.3333], 0.01, 100.0, 2)})
    rand_augment: dict | None = _key(
        None, "RandAugment (keras.layers.RandAugment): num_ops random ops per image at "
        "magnitude 0-10 (timm's rand-m9-n2 = {num_ops: 2, magnitude: 9}). null = off.",
        nullable=True, parts={"num_ops": Part((int,), 2, 1, 10),
                              "magnitude": Part((float,), 9.0, 0.0, 10.0)})
    color_jitter: list[float] | None = _key(
        None, "Random [brightness, contrast, saturation, hue] changes, each a factor in [0, 1] "
        "(keras.layers.RandomColorJitter; 0 leaves that one off). null = off.",
        min=0.0, max=1.0, length=4, nullable=True)
    random_erasing: float = _key(0.0, "Probability of erasing a random rectangle of each image "
                                 "with noise (keras.layers.RandomErasing; ultralytics: 0.4). "
                                 "0 = off.", min=0.0, max=1.0)
    mixup: float = _key(0.0, "MixUp alpha: blend pairs of images and their labels by a "
                        "Beta(alpha, alpha) weight (0.2 is common). 0 = off.", min=0.0, max=10.0)
    cutmix: float = _key(0.0, "CutMix alpha: paste a box from another image, labels mixed by "
                         "area (1.0 is common). 0 = off; with mixup too, each batch takes one of "
                         "the two at random.", min=0.0, max=10.0)


@dataclass
class OptimConfig:
    """Optimizer and loss."""

    optimizer: str = _key("sgd", "sgd, adam or adamw.", choices=("sgd", "adam", "adamw"))
    lr: float = _key(0.1, "Peak learning rate.", min=0.0)
    momentum: float = _key(0.9, "SGD momentum.", min=0.0, max=1.0)
    nesterov: bool = _key(False, "Nesterov momentum (SGD).")
    weight_decay: float = _key(1e-4, "Decoupled weight decay, the same for sgd, adam and adamw "
                               "(Keras 3 applies it to the weights, not as a loss penalty): "
                               "before each update every weight except biases and batch-norm "
                               "gamma/beta shrinks by the current lr * weight_decay * weight, "
                               "bypassing momentum and Adam's moments (so adam with weight "
                               "decay is adamw). 0 = off.", min=0.0)
    label_smoothing: float = _key(0.0, "Label smoothing.", min=0.0, max=0.99)
    scale_lr_with_replicas: bool = _key(False, "Multiply lr by the number of replicas "
                                        "(linear scaling rule; warmup_lr and min_lr stay).")
    ema: float | None = _key(None, "Decay of an exponential moving average of the weights "
                             "(Keras' use_ema; batch-norm statistics are not averaged), which "
                             "is evaluated and saved as best/last.keras. It spans ~1/(1-ema) "
                             "updates: keep that well below the run's (timm: 0.9998, long runs; "
                             "ultralytics: 0.9999 with a warm-up Keras lacks). null = off.",
                             min=0.5, max=0.99999, nullable=True)
    clipnorm: float | None = _key(None, "Clip each update's gradient to this global L2 norm "
                                  "(all weights and replicas). null = off.", min=1e-8,
                                  nullable=True)
    accumulate_steps: int = _key(1, "Batches per update (gradient accumulation): lr and the "
                                 "schedule apply to the effective batch data.batch_size * "
                                 "accumulate_steps and count updates; an epoch's short last "
                                 "group is applied at its end.", min=1, max=1024)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, with optional warm-up."""

    type: str = _key("cosine", "constant, step or cosine.", choices=("constant", "step", "cosine"))
    milestones: list[int] = _key([], "Step schedule: where lr is multiplied by gamma (in "
                                 "`unit`, increasing). Ignored by other schedules.", min=1)
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
    """How long to train and when to stop."""

    epochs: int = _key(15, "Epochs to train.", min=1, max=1_000_000)
    early_stopping_patience: int = _key(0, "Stop after this many epochs without a better "
                                        "train.monitor. 0 = off.", min=0)
    monitor: str = _key("val_accuracy", "The validation number that chooses best.keras and "
                        "early stopping (higher is better, except val_loss). model.task "
                        "multilabel: val_map, val_macro_f1 or val_loss.",
                        choices=("val_accuracy", "val_loss", "val_balanced_accuracy",
                                 "val_macro_f1", "val_map"))
    eval_batch_size: int | None = _key(None, "Validation batch size; null = data.batch_size.",
                                       min=1, nullable=True)
    checkpoint_every: int | str | None = _key(
        None, "Also write a mid-epoch checkpoint every N steps (a number) or after a time "
        "('10min', '30s', '1.5h'); train --resume continues at that step. null = at epoch "
        "ends only.",
        min=1, nullable=True, text=(DURATION, "a time such as '10min', '30s' or '1.5h'"))


@dataclass
class RunConfig:
    """Where results go and what is shown while training."""

    project: str = _key(TRAIN_PROJECT, "Parent folder of run folders.")
    name: str = _key("exp", "Run name, a plain folder name; exp, exp2, ... when taken "
                     "(unless exist_ok). "
                     "multi_worker uses it as is and continues the run when restarted.")
    exist_ok: bool = _key(False, "Reuse an existing run folder of the same name; an earlier "
                          "run's files there (checkpoint, models, results) are removed first.")
    progress: str = _key("auto", "auto (bar on a terminal, lines otherwise), bar, line or none.",
                         choices=("auto", "bar", "line", "none"))
    loggers: list[str] = _key(
        ["csv", "tensorboard"], "Where each epoch's results.csv numbers go (a list): csv (the "
        "run folder's results.csv), tensorboard (<run>/tensorboard), mlflow (MLFLOW_TRACKING_URI, "
        "else MLflow's default store; experiment MLFLOW_EXPERIMENT_NAME, else the last folder "
        "of run.project; best.keras, results.csv, config, summary and plots as artifacts at the "
        "end), wandb (project WANDB_PROJECT, else that folder; files in <run>/wandb; "
        "WANDB_MODE=offline works). mlflow and wandb are extras: pip install "
        "\"resnet-builder[mlflow]\" / \"resnet-builder[wandb]\". Only the chief worker logs.",
        choices=("csv", "tensorboard", "mlflow", "wandb"))
    tensorboard: bool = _key(True, "Older switch, still read: false takes tensorboard out of "
                             "run.loggers.")
    plots: bool = _key(True, "Write curves.png and confusion_matrix.png.")
    log_every: int = _key(10, "Read the running loss and accuracy back from the device every "
                          "this many steps (progress bar, NaN check); the epoch's numbers are "
                          "exact either way.", min=1)


@dataclass
class HardwareConfig:
    """Seed, precision and compilation."""

    seed: int | None = _key(0, "Random seed of the validation split, data order, augmentation "
                            "and initial weights; null = a new seed each run (written to the "
                            "run's config.yaml, so a resume repeats it). It does not turn "
                            "on op determinism (see deterministic); on CPU the same seed and "
                            "config give the same results.csv without it.",
                            min=0, max=2**31 - 1, nullable=True)  # TensorFlow's int32 seeds
    fused_batchnorm: bool = _key(True, "Train batch norm through TensorFlow's fused kernel "
                                 "(same weights and files; 1.6-1.8x faster on CPU than "
                                 "Keras' element-wise batch norm).")
    deterministic: bool = _key(False, "Turn on TensorFlow's op determinism (slower by about a "
                               "third on CPU); hardware.seed alone does not. CPU runs with a "
                               "seed repeat without it; GPU runs need it.")
    mixed_precision: str = _key("auto", "auto (float16 when a GPU is visible, else off), off, "
                                "float16 (with loss scaling) or bfloat16 (fast on CPUs with "
                                "AVX512_BF16).", choices=("auto", "off", "float16", "bfloat16"))
    xla: bool = _key(False, "Compile the training step with XLA (jit_compile).")
    steps_per_call: int | str = _key("auto", "Training steps per compiled call: auto (1 on a "
                                     "CPU, 8 with a GPU) or a number.", min=1,
                                     text=("auto", "auto"))
    threads: int = _key(0, "CPU threads for TensorFlow ops, for the whole process: set once, "
                        "before TensorFlow's first op (a later run in the same process keeps "
                        "them, with a warning); 0 = TensorFlow's choice.", min=0)


@dataclass
class DistributeConfig:
    """Training on several devices."""

    strategy: str = _key("auto", "auto (mirrored with more than one GPU, else none), none, "
                         "mirrored, multi_worker (cluster from TF_CONFIG) or tpu.",
                         choices=("auto", "none", "mirrored", "multi_worker", "tpu"))
    connect_timeout: float = _key(120.0, "multi_worker: seconds every task waits for all "
                                  "tasks of TF_CONFIG to start before it gives up, naming "
                                  "the missing ones.", min=1.0)
    sync_batchnorm: bool = _key(False, "Batch-norm statistics over the global batch (all "
                                "replicas, as on one device) instead of each replica's "
                                "share; one extra all-reduce per BN layer and step.")


@dataclass
class PredictConfig:
    """How predictions are read (stored in the model, so predict and evaluate use them)."""

    threshold: float = _key(0.5, "model.task multilabel: a label is predicted when its "
                            "probability is at least this (predict --threshold overrides).",
                            min=0.0, max=1.0)


@dataclass
class Config:
    """The whole training config: one dataclass per YAML section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)


SECTION_CLASSES: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}
STACKWISE = ("stackwise_filters", "stackwise_blocks", "stackwise_strides")


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dicts (lists copied), in schema order."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------- key facts


@cache
def key_specs() -> dict[str, dict[str, KeySpec]]:
    """Section -> key -> KeySpec, in the order the dataclasses declare them."""
    out: dict[str, dict[str, KeySpec]] = {}
    for section, cls in SECTION_CLASSES.items():
        hints = get_type_hints(cls)
        out[section] = {f.name: read_spec(section, f, hints[f.name])
                        for f in dataclasses.fields(cls)}
    return out


def home_section(key: object, besides: str | None = None) -> str | None:
    """The section that has a key of this name, to catch keys written in the wrong section."""
    for section, specs in key_specs().items():
        if section != besides and key in specs:
            return section
    return None
