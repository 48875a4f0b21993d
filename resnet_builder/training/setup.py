"""Setting a run up: the machine (threads, seed, precision), the model and the optimizer."""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from resnet_builder.config import Config, model_arguments
from resnet_builder.data import DataBundle
from resnet_builder.errors import UserError
from resnet_builder.model.classifier import ResNetV2Classifier, build_model
from resnet_builder.model.presets import PRESETS
from resnet_builder.model.weights import load_donor_weights, load_preset_weights


def configure_hardware(cfg: Config, precision: str) -> None:
    """Threads, seed, op determinism and the Keras dtype policy for ``precision``."""
    hw = cfg.hardware
    if hw.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(hw.threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, hw.threads))
        except RuntimeError:  # TensorFlow already ran in this process: its pools stay, so
            now = tf.config.threading.get_intra_op_parallelism_threads()  # say it
            if now != hw.threads:
                warnings.warn(f"hardware.threads={hw.threads} is not in force: TensorFlow "
                              f"already runs in this process with {now or 'its default'} "
                              "thread(s), set once per process (start a new process, or "
                              "set the threads before any TensorFlow op)", UserWarning,
                              stacklevel=2)
    if hw.seed is not None:
        keras.utils.set_random_seed(hw.seed)  # once: re-seeding retraces every tf.function
    if hw.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    keras.mixed_precision.set_global_policy(policy[precision])


@contextlib.contextmanager
def process_settings_kept() -> Iterator[None]:
    """The Keras dtype policy, TensorFlow's op determinism and the random seeds as they were
    before a run, afterwards and after a failure: a notebook's next run (and its own Keras
    code) kept a run's mixed_bfloat16, or op determinism (~1.3x slower), for the rest of the
    process, and ``hardware.seed`` left Python, NumPy, TensorFlow and Keras seeded, so a
    random search drew the same point for every trial after the first."""
    from tensorflow.python.framework import config as tf_config  # no public disable

    policy = keras.mixed_precision.global_policy().name
    deterministic = tf_config.is_op_determinism_enabled()
    seeds = _random_state()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        if not deterministic and tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()
        _restore_random_state(seeds)


_KERAS_SEEDS = ("global_random_seed", "global_seed_generator")  # keras.utils.set_random_seed


def _random_state() -> tuple:
    """What ``keras.utils.set_random_seed`` changes: Python's, NumPy's, TensorFlow's global
    seed with its op-seed sequence (read from the eager context: ``get_seed`` would use up an
    op seed) and Keras' own (its seed and seed generator)."""
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    ctx = context.context()
    op_seeds = getattr(ctx, "_rng", None)
    return (random.getstate(), np.random.get_state(),
            (ctx._seed, None if op_seeds is None else op_seeds.getstate()),
            [global_state.get_global_attribute(name) for name in _KERAS_SEEDS])


def _restore_random_state(state: tuple) -> None:
    """Put ``_random_state`` back. TensorFlow's seed is restored with its op-seed sequence
    where it stood: ``tf.random.set_seed`` would restart it, and a user's ``tf.random``
    draws after the run would repeat those before it."""
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    python, numpy, (tf_seed, op_seeds), keras_seeds = state
    random.setstate(python)
    np.random.set_state(numpy)
    ctx = context.context()
    if tf_seed is None or op_seeds is None:
        if ctx._seed != tf_seed:
            tf.random.set_seed(tf_seed)
    else:
        ctx._seed = tf_seed
        ctx._rng = random.Random()
        ctx._rng.setstate(op_seeds)
    for name, value in zip(_KERAS_SEEDS, keras_seeds, strict=True):
        global_state.set_global_attribute(name, value)


def resolve_steps_per_call(setting: int | str) -> int:
    """``auto``: 8 steps per compiled call with a GPU (it hides Python's dispatch), else 1."""
    if setting != "auto":
        return int(setting)
    return 8 if tf.config.list_physical_devices("GPU") else 1


def resolve_precision(setting: str) -> str:
    """``auto``: float16 where it pays (a GPU), float32 on a CPU (bfloat16 is a choice)."""
    if setting != "auto":
        return setting
    return "float16" if tf.config.list_physical_devices("GPU") else "off"


def make_model(cfg: Config, data: DataBundle,
               initial_weights: bool = True) -> ResNetV2Classifier:
    """The classifier the config describes, sized and normalised for ``data``; with
    ``initial_weights`` (a new run) it starts from ``model.weights``. A resumed run's
    weights come from its checkpoint, so a donor file moved since does not stop it."""
    args = model_arguments(cfg)
    num_classes = args.pop("num_classes", data.num_classes)
    if num_classes != data.num_classes:
        raise UserError(f"model.num_classes is {num_classes} but the data has "
                        f"{data.num_classes} classes", hint="set model.num_classes: null",
                        exit_code=2)
    normalize = cfg.data.normalize
    args["input_shape"] = (data.image_size, data.image_size, data.channels)
    model = build_model(
        **args, num_classes=num_classes,
        mean=data.mean if normalize else None, std=data.std if normalize else None,
        class_names=data.class_names,
    )
    if cfg.model.weights and initial_weights:
        load_initial_weights(model, cfg.model.weights)
    return model


def load_initial_weights(model: ResNetV2Classifier, source: str) -> None:
    """Start from a preset's pretrained weights, a saved ``.keras`` model or a weights file."""
    if source in PRESETS:
        load_preset_weights(model.backbone, source)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"model.weights {source!r} is neither a preset with weights nor a file",
                        hint="use e.g. resnet50_v2_imagenet, or a path to a .keras or "
                             ".weights.h5 file")
    load_donor_weights(model, path)


def make_optimizer(cfg: Config, schedule, precision: str) -> keras.optimizers.Optimizer:
    """The config's optimizer; Keras 3 applies ``weight_decay`` decoupled, to the variables.

    ``optim.ema`` is Keras' own ``use_ema``: its averages are optimizer variables, so
    the checkpoint keeps them, and it works under every strategy (checked on two
    replicas). ``clipnorm`` and ``accumulate_steps`` are not Keras' (see step.py: its
    clipping is per replica, its accumulation fails under MirroredStrategy).
    """
    o = cfg.optim
    ema = {"use_ema": o.ema is not None, "ema_momentum": 0.99 if o.ema is None else o.ema}
    if o.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay or None, **ema)
    elif o.optimizer == "adam":
        opt = keras.optimizers.Adam(schedule, weight_decay=o.weight_decay or None, **ema)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=o.weight_decay, **ema)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
