"""``train`` and ``resume``: the trainer's Python API (the CLI's ``train`` calls these).

Setting a run up happens here (machine, strategy, data, run folder, model,
optimizer, resume point); the epochs run in ``loop.TrainingLoop``; everything
a run writes or shows is a ``keras.callbacks.Callback`` (``callbacks.py``), and
a caller's own callbacks run after those.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from resnet_builder import runs
from resnet_builder.config import (
    Config,
    apply_overrides,
    dump_config,
    load_config,
    override_list,
)
from resnet_builder.data import DataBundle, load_data
from resnet_builder.data.loading import draw_seed
from resnet_builder.data.shards import check_batch_split
from resnet_builder.data.sources import check_run_data_path
from resnet_builder.errors import UserError
from resnet_builder.training import progress
from resnet_builder.training.batchnorm import fuse_batch_norm, synchronize_batchnorm
from resnet_builder.training.callbacks import standard_callbacks
from resnet_builder.training.ema import EmaWeights
from resnet_builder.training.loggers import check_loggers
from resnet_builder.training.loop import TrainingLoop
from resnet_builder.training.report import end_line, run_summary, start_line
from resnet_builder.training.resume import (
    check_overrides,
    check_same_classes,
    data_change,
    data_shape,
    flat_config,
    rebase_skipped,
    replace_earlier_run,
    resume_meta,
    rewrite_config_file,
)
from resnet_builder.training.schedules import build_schedule
from resnet_builder.training.setup import (
    configure_hardware,
    make_model,
    make_optimizer,
    process_settings_kept,
    resolve_precision,
    resolve_steps_per_call,
)
from resnet_builder.training.state import RunState
from resnet_builder.training.step import updates_per_epoch
from resnet_builder.training.strategy import StrategyInfo, make_strategy
from resnet_builder.training.workers import (
    cluster_failure,
    lost_peer,
    restore,
    start_together,
)


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run gives back."""

    run_dir: Path
    summary: dict[str, Any]  # summary.json
    history: list[dict[str, Any]]  # the results.csv rows, as numbers

    @property
    def best_val_accuracy(self) -> float | None:
        return self.summary["best_val_accuracy"]

    @property
    def best_epoch(self) -> int | None:
        return self.summary["best_epoch"]


def train(config: Config | str | os.PathLike | Mapping[str, Any] | None,
          overrides: Sequence[str] = (),
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train a new run from ``config`` (a YAML path, a loaded ``Config``, a dict of sections
    such as ``{"train": {"epochs": 2}}``, or None for every default).

    ``overrides`` are ``--set`` strings such as ``"train.epochs=2"``; ``callbacks``
    are Keras callbacks run after the trainer's own. With ``distribute.strategy:
    multi_worker`` the run folder is ``run.project/run.name`` exactly, and running
    the same command again continues it (what a restarted worker does).
    """
    callbacks = callback_list(callbacks)  # (load_config takes overrides in any form)
    if isinstance(config, Config):
        cfg = apply_overrides(config, overrides)
    else:
        cfg = load_config(config, overrides)
    return _run(cfg, None, None, callbacks)


def callback_list(callbacks: Sequence[keras.callbacks.Callback] | keras.callbacks.Callback
                  | None) -> list[keras.callbacks.Callback]:
    """Callbacks as a list: None or one callback too, as ``fit`` takes them."""
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    if not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks must be a list of keras.callbacks.Callback, got "
                        f"{callbacks!r}")
    return list(callbacks)


def resume(run_dir: str | os.PathLike, overrides: Sequence[str] = (),
           callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Continue ``run_dir`` after its last completed epoch (``overrides`` may extend it)."""
    overrides, callbacks = override_list(overrides), callback_list(callbacks)
    paths = runs.RunPaths(Path(run_dir))
    if not paths.config.exists():
        if not paths.checkpoint.exists():
            raise UserError(f"{run_dir} is not a run folder (no config.yaml)",
                            hint="pass a folder made by resnet-builder train, e.g. "
                                 "runs/train/exp", exit_code=2)
        rewrite_config_file(paths)  # each checkpoint records the config it trained with
    cfg = load_config(paths.config, overrides)  # first: an unknown key is named as such
    check_overrides(overrides)
    check_run_data_path(cfg.data, paths.config, fix="resume from the folder train ran in, or "
                        f"give the data's full path: {runs.resume_command(paths.root)} "
                        "--set data.path=/full/path")
    if not paths.checkpoint.exists():
        _refuse_lost_checkpoint(paths)
        if not any(p.exists() for p in (paths.root / ".lock", paths.summary)):
            raise UserError(f"{run_dir} is not a run folder: it has a config.yaml but nothing "
                            "a run writes (.lock, summary.json); resuming would train into "
                            "it and replace that config.yaml",
                            hint=f"train a new run from it: resnet-builder train "
                                 f"{shlex.quote(str(paths.config))}", exit_code=2)
        progress.say(cfg.run.progress, f"{run_dir} has no completed epoch yet; starting it again")
        return _run(cfg, paths.root, None, callbacks)
    meta = resume_meta(paths.root, cfg, load_config(paths.config))
    return _run(cfg, paths.root, meta, callbacks)


def _refuse_lost_checkpoint(paths: runs.RunPaths) -> None:
    """A run folder whose checkpoint.npz is gone but which has trained (models, results):
    starting it again would overwrite them, so it is refused instead."""
    trained = [p.name for p in (paths.results, paths.last, paths.best) if p.exists()]
    if trained:
        raise UserError(f"{paths.root} has no checkpoint.npz, but it has trained ("
                        f"{', '.join(trained)}); resuming would start it again over them",
                        hint="put its checkpoint.npz back, or train a new run (another --name, "
                             "or --exist-ok to replace this one)", exit_code=2)


# Keras callbacks that need a compiled model (``model.optimizer``), and what does their job here.
NEEDS_COMPILED_MODEL = {
    "BackupAndRestore": "the run folder's checkpoint.npz does this, with the optimizer state "
                        "and the data order: resume with resnet_builder.resume(run_dir) or "
                        "resnet-builder train --resume RUN",
    "TensorBoard": "keep tensorboard in run.loggers (the default; epoch scalars in the run "
                   "folder's tensorboard/)",
    "ReduceLROnPlateau": "the learning rate follows the schedule section (warm-up, step, cosine)",
    "LearningRateScheduler": "the learning rate follows the schedule section (warm-up, step, "
                             "cosine)",
}


def check_callbacks(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Refuse, with the alternative, Keras callbacks that cannot work in this loop."""
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise UserError(f"{callback!r} is not a keras.callbacks.Callback",
                            hint="pass instances of keras.callbacks.Callback subclasses")
        monitor_direction(callback)
        name = type(callback).__name__
        for base in type(callback).__mro__:
            if base.__module__.startswith("keras") and base.__name__ in NEEDS_COMPILED_MODEL:
                raise UserError(f"keras.callbacks.{base.__name__} ({name}) needs a compiled "
                                "model, which the trainer does not use",
                                hint=NEEDS_COMPILED_MODEL[base.__name__], exit_code=2)


# Which way is better for each results.csv column (runs.RESULTS_COLUMNS and the multilabel
# ones), for Keras' monitoring callbacks.
_HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "map"}


def monitor_direction(callback: keras.callbacks.Callback) -> None:
    """Keras' monitoring callbacks (EarlyStopping, ModelCheckpoint) in mode auto look a
    metric's direction up in a compiled model's metrics; this loop's model is not compiled,
    so EarlyStopping(monitor="val_accuracy") failed after the first epoch. Our results.csv
    columns say it; other callbacks and other columns are left as they are."""
    if not isinstance(callback, (keras.callbacks.EarlyStopping,
                                 keras.callbacks.ModelCheckpoint)) or callback.mode != "auto":
        return
    column = str(callback.monitor).removeprefix("val_")
    if column == "loss":
        callback.mode = "min"
    elif column in _HIGHER_IS_BETTER:
        callback.mode = "max"


@dataclass
class _Setup:
    cfg: Config
    precision: str
    dist: StrategyInfo
    data: DataBundle
    run_dir: Path
    meta: dict | None
    resumes: bool  # a folder given, or a checkpoint found: config.yaml waits for the model


def _start(cfg: Config, run_dir: Path | None, meta: dict | None,
           held: contextlib.ExitStack) -> _Setup:
    """The machine, the strategy, the data and the run folder every worker agrees on; the
    chief holds the run folder's lock in ``held`` (one training process per folder)."""
    if cfg.distribute.strategy == "multi_worker" and cfg.hardware.seed is None:
        raise UserError("distribute.strategy multi_worker needs hardware.seed",
                        hint="every worker must shuffle and augment the same way; set "
                             "hardware.seed to a number (the default is 0)", exit_code=2)
    if cfg.hardware.seed is None:  # drawn once and written to config.yaml: a resume repeats it
        cfg = replace(cfg, hardware=replace(cfg.hardware, seed=draw_seed()))
        progress.say(cfg.run.progress, f"hardware.seed is null: this run drew seed "
                                       f"{cfg.hardware.seed} (kept in its config.yaml)")
    precision = resolve_precision(cfg.hardware.mixed_precision)  # on this machine, every time
    configure_hardware(cfg, precision)
    dist = make_strategy(cfg.distribute.strategy,
                         connect_timeout=cfg.distribute.connect_timeout,
                         say=lambda text: progress.say(cfg.run.progress, text))
    refuse_what_cannot_run_on(cfg, dist)
    if os.environ.get("TF_CONFIG") and dist.name != "multi_worker":
        progress.say(cfg.run.progress,
                     f"note: TF_CONFIG is set but the strategy is {dist.name}; training on "
                     f"this machine only (use --strategy multi_worker to join the cluster)")
    data = load_data(cfg.data, cfg.augment, cfg.hardware.seed, cfg.model.task)
    if data.num_train == 0:
        raise UserError("the training split is empty", hint="check data.path / data.limit")
    if data.num_val == 0 and cfg.train.early_stopping_patience:  # it would never stop
        raise UserError(f"train.early_stopping_patience watches {cfg.train.monitor}, but the "
                        "data has no validation split", exit_code=2,
                        hint="set train.early_stopping_patience: 0, or (a new run) give "
                             "the data a validation split, e.g. data.validation_split: 0.1")
    cfg = replace(cfg, model=replace(cfg.model, num_classes=cfg.model.num_classes
                                     or data.num_classes))
    fresh = run_dir is None and dist.name != "multi_worker"
    given_folder = run_dir is not None

    def lock(folder: Path) -> None:
        held.enter_context(runs.holding_run(folder))

    try:
        if dist.name == "multi_worker":
            run_dir, meta = start_together(cfg, run_dir, meta, dist, data, lock)
        elif run_dir is None:
            run_dir = runs.new_run_dir(cfg.run.project, cfg.run.name, cfg.run.exist_ok)
    except tf.errors.OpError as exc:
        raise _cluster_error(exc, dist, meta) from None
    check_same_classes(meta, data.class_names)  # (a worker's meta is known only here)
    resumes = given_folder or meta is not None  # a multi-worker run learns it from meta
    if dist.is_chief:
        if dist.name != "multi_worker":  # start_together took it, before anything else
            lock(Path(run_dir))
        if fresh:
            replace_earlier_run(cfg, run_dir, why="run.exist_ok: ")
        if not resumes:  # a resume's keys: once its model is made (_train)
            dump_config(cfg, runs.RunPaths(run_dir).config)  # as given: precision stays auto
    return _Setup(cfg, precision, dist, data, Path(run_dir), meta, resumes)


def refuse_what_cannot_run_on(cfg: Config, dist: StrategyInfo) -> None:
    """What the strategy rules out, said before the data loads or a folder is made: XLA
    over several replicas (a TPU's is its own) failed in the first step (under multi_worker
    as a "lost" peer), an odd global batch after the run folder was written."""
    if cfg.hardware.xla and dist.replicas > 1 and dist.name in ("mirrored", "multi_worker"):
        raise UserError(f"hardware.xla is not supported with {dist.replicas} replicas "
                        f"({dist.name}): TensorFlow cannot run the compiled step's loop per "
                        "replica", hint="set hardware.xla: false, or train on one device",
                        exit_code=2)
    if dist.name == "multi_worker":  # (--exist-ok: the chief's key, refused by the chief)
        check_batch_split(cfg.data.batch_size, dist.workers)


def _cluster_error(exc: tf.errors.OpError, dist: StrategyInfo, meta: dict | None) -> Exception:
    if dist.name != "multi_worker" or not lost_peer(exc):
        return exc
    return cluster_failure(exc, dist, int((meta or {}).get("epochs_completed", 0)))


def _model_and_optimizer(s: _Setup, schedule, paths: runs.RunPaths, backup: Path | None
                         ) -> tuple[keras.Model, keras.optimizers.Optimizer, EmaWeights]:
    """The run's model (from ``model.weights`` when new, from its checkpoint when resumed),
    its optimizer and the EMA of its weights, made under the strategy."""
    cfg, dist = s.cfg, s.dist
    try:
        with dist.strategy.scope():
            model = make_model(cfg, s.data, initial_weights=s.meta is None)
            optimizer = make_optimizer(cfg, schedule, s.precision)
            optimizer.build(model.trainable_variables)
            ema = EmaWeights(optimizer, model.trainable_variables)  # optim.ema, else a no-op
        if cfg.distribute.sync_batchnorm and dist.replicas > 1:
            synchronize_batchnorm(model)
        elif cfg.hardware.fused_batchnorm:
            fuse_batch_norm(model)  # the same weights; TensorFlow's one-kernel batch norm
        if s.meta is not None:
            restore(paths, backup, model, optimizer, dist, s.meta, cfg.run.progress)
    except tf.errors.OpError as exc:
        raise _cluster_error(exc, dist, s.meta) from None
    return model, optimizer, ema


def _run(cfg: Config, run_dir: Path | None, meta: dict | None,
         user_callbacks: Sequence[keras.callbacks.Callback]) -> TrainResult:
    with contextlib.ExitStack() as held:  # the run folder's lock, until the run ends
        held.enter_context(process_settings_kept())  # the dtype policy, op determinism
        return _train(cfg, run_dir, meta, user_callbacks, held)


def _train(cfg: Config, run_dir: Path | None, meta: dict | None,
           user_callbacks: Sequence[keras.callbacks.Callback],
           held: contextlib.ExitStack) -> TrainResult:
    check_callbacks(user_callbacks)
    check_loggers(cfg.run)  # a missing optional package, before any data or model
    s = _start(cfg, run_dir, meta, held)
    held.callback(s.data.close)  # a pack's read lock ends with the run, not at collection
    cfg, dist, paths = s.cfg, s.dist, runs.RunPaths(s.run_dir)
    steps_per_epoch = s.data.batches_per_epoch(cfg.data.batch_size, dist.workers)
    lr = cfg.optim.lr * (dist.replicas if cfg.optim.scale_lr_with_replicas else 1)
    schedule = build_schedule(cfg.schedule, lr, cfg.train.epochs,  # counts updates
                              updates_per_epoch(steps_per_epoch, cfg.optim.accumulate_steps))
    backup = (dist.backup_dir(Path(cfg.run.project) / cfg.run.name) / "checkpoint.npz"
              if dist.name == "multi_worker" and not dist.is_chief else None)
    try:
        model, optimizer, ema = _model_and_optimizer(s, schedule, paths, backup)
    except BaseException:
        if run_dir is None and dist.name != "multi_worker":  # e.g. a weights file that does
            runs.remove_unstarted_run(paths.root)  # not fit: its name is free for the next
        raise
    if s.resumes and dist.is_chief:  # its model made (and restored): now its keys (README)
        dump_config(cfg, paths.config)
    state = RunState.from_meta(s.meta)
    rebase_skipped(state, (state.config or {}).get("data.path"), cfg.data.path)
    state.config = flat_config(cfg)  # what its checkpoints record: a resume compares it
    state.skipped.update(dict(s.data.skipped))  # left out up front (data.verify)
    shape = data_shape(s.data, random_crop=bool(cfg.augment.random_resized_crop),
                       steps=steps_per_epoch)
    change = data_change(state.data_shape, shape)
    if change is not None:
        progress.say(cfg.run.progress, change)
    state.data_shape = shape

    def summary() -> dict[str, Any]:
        return run_summary(state, cfg, dist, paths.root, s.precision)

    own = standard_callbacks(cfg=cfg, paths=paths, state=state, optimizer=optimizer,
                             summary=summary, class_names=s.data.class_names,
                             steps_per_epoch=steps_per_epoch, is_chief=dist.is_chief,
                             backup=backup, ema=ema,
                             unreadable_classes=s.data.unreadable_classes)
    callbacks = keras.callbacks.CallbackList([*own, *user_callbacks], model=model)
    loop = TrainingLoop(cfg, dist, model, optimizer, s.data, schedule, state, callbacks, paths,
                        steps_per_call=resolve_steps_per_call(cfg.hardware.steps_per_call),
                        ema=ema)
    progress.say(cfg.run.progress,
                 start_line(cfg, state, paths.root, s.data, model.count_params(), dist, lr))
    loop.run()
    result = summary()
    progress.say(cfg.run.progress, end_line(result, writes_run_folder=s.dist.is_chief))
    return TrainResult(paths.root, result, state.history)
