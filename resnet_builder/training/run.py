"""The training loop: config in, run folder out; resumable at any epoch boundary.

``train(cfg)`` starts a run, ``resume(run_dir)`` continues one. Per completed
epoch the run folder gets a results.csv row, ``last.keras``, ``best.keras`` on
a better validation accuracy, then ``checkpoint.npz`` (written last: it is the
commit point a resumed run restarts from). Epoch ``k``'s data order and
augmentation depend only on (seed, k), so a resumed run sees the same batches
as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from resnet_builder import runs
from resnet_builder.config import Config, config_to_dict, dump_config, load_config
from resnet_builder.data import DataBundle, load_data
from resnet_builder.errors import UserError
from resnet_builder.files import atomic_save, write_json
from resnet_builder.model.classifier import ResNetV2Classifier, build_model
from resnet_builder.plots import confusion_matrix, plot_confusion_matrix, plot_curves
from resnet_builder.training import checkpoint, progress
from resnet_builder.training.distribute import (
    StrategyInfo,
    all_workers,
    distribute_dataset,
    json_from_chief,
    make_strategy,
    variables_from_chief,
)
from resnet_builder.training.schedules import build_schedule
from resnet_builder.training.speed import fuse_batch_norm
from resnet_builder.training.step import (
    batchnorm_layers,
    make_eval_step,
    make_loss,
    make_moving_stats_sync,
    make_train_step,
)

# Keys a resumed run may change: the length of the run and how it reports.
RESUMABLE_KEYS = ("train.epochs", "train.early_stopping_patience", "run.progress", "run.plots",
                  "run.tensorboard", "hardware.threads", "distribute.strategy",
                  "distribute.connect_timeout")
# Keys the workers of one multi-worker run may set differently: they change where things go
# and what is shown on each machine, not what is computed.
LOCAL_KEYS = ("run.project", "run.exist_ok", "run.progress", "run.plots", "run.tensorboard",
              "hardware.threads", "distribute.connect_timeout", "data.path")


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


# --------------------------------------------------------------------------- set-up

def _configure_hardware(cfg: Config) -> None:
    hw = cfg.hardware
    if hw.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(hw.threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, hw.threads))
        except RuntimeError:
            pass  # TensorFlow already started in this process; its thread pools stay
    if hw.seed is not None:
        keras.utils.set_random_seed(hw.seed)  # once: re-seeding retraces every tf.function
    if hw.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    keras.mixed_precision.set_global_policy(policy[hw.mixed_precision])


def resolve_precision(setting: str) -> str:
    """``auto``: float16 where it pays (a GPU), float32 on a CPU (bfloat16 is a choice)."""
    if setting != "auto":
        return setting
    return "float16" if tf.config.list_physical_devices("GPU") else "off"


def make_model(cfg: Config, data: DataBundle) -> ResNetV2Classifier:
    """The classifier the config describes, sized and normalised for ``data``."""
    m = cfg.model
    num_classes = m.num_classes or data.num_classes
    if num_classes != data.num_classes:
        raise UserError(f"model.num_classes is {m.num_classes} but the data has "
                        f"{data.num_classes} classes", hint="set model.num_classes: null")
    way: dict[str, Any]
    if m.preset:
        way = {"preset": m.preset}
    elif m.stackwise_blocks:
        way = {"stackwise_filters": m.stackwise_filters, "stackwise_blocks": m.stackwise_blocks,
               "stackwise_strides": m.stackwise_strides}
    else:
        way = {"depth": m.depth}
    normalize = cfg.data.normalize
    model = build_model(
        **way, block_type=m.block_type, num_classes=num_classes,
        input_shape=(data.image_size, data.image_size, data.channels),
        stem_filters=m.stem_filters, bn_momentum=m.bn_momentum, head=m.head, dropout=m.dropout,
        include_rescaling=False if normalize else None,
        mean=data.mean if normalize else None, std=data.std if normalize else None,
        class_names=data.class_names,
    )
    if m.weights:
        load_initial_weights(model, m.weights)
    return model


def load_initial_weights(model: ResNetV2Classifier, source: str) -> None:
    """Start from a preset's pretrained weights, a saved ``.keras`` model or a weights file."""
    from resnet_builder.model.presets import PRESETS, load_preset_weights

    if source in PRESETS:
        load_preset_weights(model.backbone, source)
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"model.weights {source!r} is neither a preset with weights nor a file",
                        hint="use e.g. resnet50_v2_imagenet, or a path to a .keras or "
                             ".weights.h5 file")
    try:
        if path.suffix == ".keras":
            donor = keras.models.load_model(path, compile=False)
            donor_backbone = getattr(donor, "backbone", donor)
            model.backbone.set_weights(donor_backbone.get_weights())
            if getattr(donor, "num_classes", None) == model.num_classes:
                model.set_weights(donor.get_weights())
        else:
            try:
                model.load_weights(path)
            except ValueError:
                model.backbone.load_weights(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"model.weights {source} does not fit this model ({exc})",
                        hint="the file must come from a network with the same architecture"
                        ) from None


def make_optimizer(cfg: Config, schedule) -> keras.optimizers.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay or None)
    elif o.optimizer == "adam":
        opt = keras.optimizers.Adam(schedule, weight_decay=o.weight_decay or None)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=o.weight_decay)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if cfg.hardware.mixed_precision == "float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


# --------------------------------------------------------------------------- the loop

class _Run:
    """One training run's state; ``fit`` drives the epochs."""

    def __init__(self, cfg: Config, run_dir: Path, dist: StrategyInfo, meta: dict | None) -> None:
        self.cfg = cfg
        self.paths = runs.RunPaths(run_dir)
        self.dist = dist
        self.meta = meta or {}
        self.rows: list[dict[str, Any]] = list(self.meta.get("history", []))
        self.best_val = self.meta.get("best_val_accuracy")
        self.best_epoch = self.meta.get("best_epoch")
        self.best_predictions = self.meta.get("best_predictions")
        self.wall_before = float(self.meta.get("wall_seconds", 0.0))
        self.images_seen = float(self.meta.get("train_images", 0.0))
        self.train_seconds = float(self.meta.get("train_seconds", 0.0))
        self.stale_epochs = int(self.meta.get("stale_epochs", 0))
        self.status = "running"
        # A non-chief worker's own resume checkpoint, outside the run folder (its machine
        # may not even have the run folder); removed when the run ends well.
        self.backup = (dist.backup_dir(Path(cfg.run.project) / cfg.run.name) / "checkpoint.npz"
                       if dist.name == "multi_worker" and not dist.is_chief else None)

    # -- per-epoch pieces
    def _train_epoch(self, epoch: int, step, data: DataBundle, schedule) -> dict[str, Any]:
        cfg = self.cfg
        batch = cfg.data.batch_size
        steps = math.ceil(data.num_train / batch)
        bar = progress.EpochProgress(cfg.run.progress, epoch, cfg.train.epochs, steps)
        dataset = distribute_dataset(self.dist, data.train_dataset(epoch - 1, batch))
        loss_sum = correct = count = 0.0
        start = time.perf_counter()
        for i, batch_data in enumerate(dataset):
            b_loss, b_correct, b_count = (float(v) for v in step(batch_data))
            if not math.isfinite(b_loss):
                raise _Diverged(epoch, i + 1)
            loss_sum, correct, count = loss_sum + b_loss, correct + b_correct, count + b_count
            elapsed = time.perf_counter() - start
            bar.update(1, loss_sum / count, correct / count, count / max(elapsed, 1e-9))
        seconds = time.perf_counter() - start
        self.images_seen += count
        self.train_seconds += seconds
        lr = schedule.value(epoch * steps - 1)
        return {"epoch": epoch, "lr": lr, "loss": loss_sum / count, "accuracy": correct / count,
                "_bar": bar, "_seconds": seconds, "_ips": count / max(seconds, 1e-9)}

    def _evaluate(self, eval_step, data: DataBundle) -> tuple[float, float, np.ndarray] | None:
        dataset = self.val_batches
        if dataset is None:
            return None
        loss_sum, preds, labels = 0.0, [], []
        for batch_data in dataset:
            b_loss, b_pred, b_true = eval_step(batch_data)
            loss_sum += float(b_loss)
            preds.append(b_pred.numpy())
            labels.append(b_true.numpy())
        preds, labels = np.concatenate(preds), np.concatenate(labels)
        return loss_sum / len(labels), float(np.mean(preds == labels)), preds

    def _save_epoch(self, model, optimizer, row: dict, improved: bool) -> None:
        if not self.dist.is_chief:
            if self.backup is not None:
                self.backup.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.save_checkpoint(self.backup, model, optimizer, self._meta())
            return
        runs.write_results(self.paths.results, self.rows)
        atomic_save(self.paths.last, model.save)
        if improved:  # the same bytes: copying beats saving the model twice
            atomic_save(self.paths.best, lambda tmp: shutil.copyfile(self.paths.last, tmp))
        checkpoint.save_checkpoint(self.paths.checkpoint, model, optimizer, self._meta())
        write_json(self.paths.summary, self.summary())

    def _meta(self) -> dict[str, Any]:
        return {"epochs_completed": len(self.rows), "history": self.rows,
                "best_val_accuracy": self.best_val, "best_epoch": self.best_epoch,
                "best_predictions": self.best_predictions, "status": self.status,
                "wall_seconds": self.wall_seconds, "train_images": self.images_seen,
                "train_seconds": self.train_seconds, "stale_epochs": self.stale_epochs}

    @property
    def wall_seconds(self) -> float:
        return self.wall_before + (time.perf_counter() - self.started)

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val,
            "epochs_completed": len(self.rows),
            "epochs": self.cfg.train.epochs,
            "wall_seconds": round(self.wall_seconds, 2),
            "train_images_per_second": round(self.images_seen / max(self.train_seconds, 1e-9),
                                             1),
            "final_val_accuracy": self.rows[-1].get("val_accuracy") if self.rows else None,
            "strategy": self.dist.name,
            "replicas": self.dist.replicas,
            "workers": self.dist.workers,
            "mixed_precision": self.cfg.hardware.mixed_precision,
            "xla": self.cfg.hardware.xla,
            "run_dir": str(self.paths.root),
        }

    def _finish_outputs(self, class_names: list[str]) -> None:
        if not self.dist.is_chief or not self.cfg.run.plots or not self.rows:
            return
        plot_curves(self.rows, self.paths.curves)
        if self.best_predictions is not None and self.val_labels is not None:
            matrix = confusion_matrix(self.val_labels, np.asarray(self.best_predictions),
                                      len(class_names))
            plot_confusion_matrix(matrix, class_names, self.paths.confusion_matrix,
                                  title=f"validation, best epoch {self.best_epoch}")

    # -- the epochs
    def fit(self, model: ResNetV2Classifier, optimizer, data: DataBundle, schedule) -> None:
        cfg, strategy = self.cfg, self.dist.strategy
        self.started = time.perf_counter()
        loss_fn = make_loss(model.num_classes, cfg.optim.label_smoothing)
        eval_step = make_eval_step(model, loss_fn, strategy)
        sync_moving_stats = make_moving_stats_sync(model, strategy)
        val_batches = data.val_dataset(cfg.train.eval_batch_size or cfg.data.batch_size)
        self.val_labels = (None if val_batches is None else
                           np.concatenate([labels.numpy() for _, labels in val_batches]))
        self.val_batches = (None if val_batches is None else
                            distribute_dataset(self.dist, val_batches))
        writer = (tf.summary.create_file_writer(str(self.paths.tensorboard))
                  if cfg.run.tensorboard and self.dist.is_chief else None)
        step, frozen = None, None
        first = len(self.rows) + 1
        try:
            for epoch in range(first, cfg.train.epochs + 1):
                want_frozen = epoch <= cfg.model.freeze_backbone_epochs
                if step is None or want_frozen != frozen:
                    frozen = want_frozen
                    model.backbone.trainable = not frozen
                    step = make_train_step(model, optimizer, loss_fn, strategy,
                                           cfg.data.batch_size, jit_compile=cfg.hardware.xla)
                    if frozen:
                        progress.say(cfg.run.progress,
                                     f"backbone frozen (batch-norm in inference mode) for "
                                     f"epochs 1-{cfg.model.freeze_backbone_epochs}")
                row = self._train_epoch(epoch, step, data, schedule)
                sync_moving_stats()  # before evaluating and saving: one model on every replica
                bar, train_s, ips = row.pop("_bar"), row.pop("_seconds"), row.pop("_ips")
                evaluated = self._evaluate(eval_step, data)
                improved = False
                if evaluated:
                    row["val_loss"], row["val_accuracy"], preds = evaluated
                    improved = self.best_val is None or row["val_accuracy"] > self.best_val
                    if improved:
                        self.best_val, self.best_epoch = row["val_accuracy"], epoch
                        self.best_predictions = preds.tolist()
                        self.stale_epochs = 0
                    else:
                        self.stale_epochs += 1
                row["time"] = train_s + 0.0
                self.rows.append(row)
                if writer is not None:
                    with writer.as_default(step=epoch):
                        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
                            if row.get(key) is not None:
                                tf.summary.scalar(key, row[key])
                patience = cfg.train.early_stopping_patience
                stop = bool(patience and evaluated and self.stale_epochs >= patience)
                self.status = ("stopped_early" if stop else
                               "finished" if epoch == cfg.train.epochs else "running")
                self._save_epoch(model, optimizer, row, improved)
                bar.close(row, ips, "(best)" if improved else "")
                if stop:
                    progress.say(cfg.run.progress,
                                 f"early stopping: no better val_accuracy for {patience} epochs "
                                 f"(best {self.best_val:.4f} at epoch {self.best_epoch})")
                    break
        except _Diverged as nan:
            self.status = "diverged"
            self._close(writer, model.labels())
            raise UserError(
                f"training diverged: the loss became NaN or infinite at epoch {nan.epoch}, "
                f"step {nan.step}; the last good checkpoint (epoch {len(self.rows)}) is kept in "
                f"{self.paths.root}",
                hint="lower optim.lr, add warm-up (schedule.warmup), or check the data",
            ) from None
        except tf.errors.OpError as exc:
            if self.dist.name != "multi_worker":
                raise
            self.status = "worker_lost"
            self._close(writer, model.labels())
            raise _cluster_failure(exc, self.dist, len(self.rows)) from None
        except KeyboardInterrupt:
            self.status = "interrupted"
            self._close(writer, model.labels())
            raise UserError(
                f"interrupted; {len(self.rows)} completed epoch(s) are saved in "
                f"{self.paths.root}",
                hint=f"resume with: resnet-builder train --resume {self.paths.root}",
                exit_code=130,
            ) from None
        self._close(writer, model.labels())

    def _close(self, writer, class_names: list[str]) -> None:
        if writer is not None:
            writer.close()
        self._finish_outputs(class_names)
        if self.dist.is_chief:
            write_json(self.paths.summary, self.summary())
        elif self.backup is not None and self.status in ("finished", "stopped_early"):
            _remove_backup(self.backup.parent)


class _Diverged(Exception):
    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step = epoch, step


# --------------------------------------------------------------------------- several workers

def _cluster_failure(exc: tf.errors.OpError, dist: StrategyInfo, done: int) -> UserError:
    """A collective that TensorFlow aborted (a peer died or restarted), said plainly."""
    text = exc.message or str(exc)
    me = dist.cluster.me if dist.cluster else None
    lost = []
    for kind, index in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text):
        task = next((t for t in (dist.cluster.tasks if dist.cluster else ())
                     if t.type == kind and t.index == int(index)), None)
        if task is not None and task != me and str(task) not in lost:
            lost.append(str(task))
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if re.search(r"abort|unhealthy|unavailable|connect",
                                                        line, re.I)), lines[-1] if lines else "")
    who = ", ".join(lost) if lost else "another task of the cluster"
    return UserError(
        f"lost contact with {who} ({detail[:300]}); this task is {dist.task}",
        hint=f"restart the same command on every machine: each worker resumes from the last "
             f"completed epoch ({done})")


def _flat_config(cfg: Config) -> dict[str, Any]:
    flat = {f"{section}.{key}": value
            for section, keys in config_to_dict(cfg).items() for key, value in keys.items()}
    return json.loads(json.dumps(flat))  # the form it has after travelling as JSON


def _differing_keys(mine: dict[str, Any], theirs: dict[str, Any],
                    ignore: tuple[str, ...]) -> list[str]:
    return [k for k in sorted(set(mine) | set(theirs))
            if k not in ignore and mine.get(k) != theirs.get(k)]


def _data_fingerprint(data: DataBundle) -> dict[str, Any]:
    """What every worker must see the same of the data (the images themselves are not sent)."""
    return json.loads(json.dumps({
        "num_train": data.num_train, "num_val": data.num_val, "classes": data.class_names,
        "mean": [round(float(v), 4) for v in data.mean],
        "std": [round(float(v), 4) for v in data.std]}))


def _continue_in_place(cfg: Config, run_dir: Path) -> dict | None:
    """Multi-worker restart: the chief continues ``run_dir`` when it holds this run's checkpoint."""
    paths = runs.RunPaths(run_dir)
    if not paths.checkpoint.exists():
        return None
    if not paths.config.exists():
        raise UserError(f"{run_dir} has a checkpoint but no config.yaml",
                        hint="use another run.name (--name) for a new run")
    original = load_config(paths.config)
    differ = _differing_keys(_flat_config(cfg), _flat_config(original),
                             RESUMABLE_KEYS + LOCAL_KEYS + ("run.name",))
    if differ:
        raise UserError(f"{run_dir} holds a run with another config (differs in "
                        f"{', '.join(differ[:6])})",
                        hint="multi-worker runs continue in place when restarted: use another "
                             "run.name (--name) for a new run, or the run's own config.yaml")
    progress.say(cfg.run.progress, f"{run_dir} holds this run's checkpoint: continuing it")
    return _resume_meta(run_dir, cfg, original)


def _start_together(cfg: Config, run_dir: Path | None, meta: dict | None, dist: StrategyInfo,
                    data: DataBundle) -> tuple[Path, dict | None]:
    """Every worker agrees on the run folder, the resume point, the config and the data.

    The chief decides (its run folder is the record) and tells the others; a worker whose
    config or data differs stops every worker with a message instead of training on
    different batches.
    """
    view: dict[str, Any]
    refusal = None
    if dist.is_chief:
        try:
            if run_dir is None:  # no exp2 numbering: every worker must name the same folder
                run_dir = runs.new_run_dir(cfg.run.project, cfg.run.name, exist_ok=True)
                meta = _continue_in_place(cfg, run_dir)
            view = {"run_dir": str(run_dir), "meta": meta, "config": _flat_config(cfg),
                    "data": _data_fingerprint(data)}
        except UserError as exc:
            refusal = exc
            view = {"error": exc.message, "hint": exc.hint}
    else:
        view = {}
    chief = json_from_chief(dist, view)
    if refusal is not None:
        raise refusal
    if "error" in chief:
        raise UserError(f"the chief, {dist.cluster.chief if dist.cluster else 'task 0'}, "
                        f"refused to start: {chief['error']}", hint=chief.get("hint"))
    problem = None
    if not dist.is_chief:
        differ = _differing_keys(_flat_config(cfg), chief["config"], LOCAL_KEYS)
        if differ:
            problem = ("this worker's config differs from the chief's in "
                       + ", ".join(f"{k} ({_flat_config(cfg).get(k)!r} here, "
                                   f"{chief['config'].get(k)!r} on the chief)"
                                   for k in differ[:6]))
        elif _data_fingerprint(data) != chief["data"]:
            problem = (f"this worker's data differs from the chief's (here "
                       f"{_data_fingerprint(data)}, on the chief {chief['data']})")
    if not all_workers(dist, problem is None):
        raise UserError(problem or "a worker's config or data differs from the chief's; its "
                        "output says which", hint="start every worker with the same config "
                        "(only " + ", ".join(LOCAL_KEYS) + " may differ) and the same data")
    meta = chief["meta"]
    if not dist.is_chief and meta is None:  # a new run: forget an older run's backup
        _remove_backup(dist.backup_dir(Path(cfg.run.project) / cfg.run.name))
    return Path(chief["run_dir"]), meta


def _remove_backup(folder: Path) -> None:
    """Delete a worker's backup folder, and its parents when that leaves them empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break


def _restore(run: _Run, model, optimizer, dist: StrategyInfo, meta: dict) -> None:
    """Load the resume point: the chief from the run folder, other workers from their backup.

    A worker without a backup of that epoch (a new machine, a cleaned temp folder) gets the
    chief's weights through the collectives instead.
    """
    if dist.is_chief:
        checkpoint.load_checkpoint(run.paths.checkpoint, model, optimizer)
        have = True
    else:
        have = False
        if run.backup is not None and run.backup.exists():
            try:
                have = (checkpoint.read_meta(run.backup)["epochs_completed"]
                        == meta["epochs_completed"])
            except UserError:
                have = False
            if have:
                checkpoint.load_checkpoint(run.backup, model, optimizer)
    if dist.name == "multi_worker" and not all_workers(dist, have):
        progress.say(run.cfg.run.progress,
                     f"a worker has no backup of epoch {meta['epochs_completed']}: every "
                     f"worker takes the chief's weights and optimizer state")
        variables_from_chief(dist, [*model.variables, *optimizer.variables])


def _synchronize_batchnorm(model) -> None:
    """Switch every BatchNormalization layer to global-batch statistics (Keras' own option)."""
    for layer in batchnorm_layers(model):
        layer.synchronized = True


# --------------------------------------------------------------------------- entry points

def _run(cfg: Config, run_dir: Path | None, meta: dict | None) -> TrainResult:
    if cfg.distribute.strategy == "multi_worker" and cfg.hardware.seed is None:
        raise UserError("distribute.strategy multi_worker needs hardware.seed",
                        hint="every worker must shuffle and augment the same way; set "
                             "hardware.seed to a number (the default is 0)", exit_code=2)
    cfg = replace(cfg, hardware=replace(
        cfg.hardware, mixed_precision=resolve_precision(cfg.hardware.mixed_precision)))
    _configure_hardware(cfg)
    dist = make_strategy(cfg.distribute.strategy,
                         connect_timeout=cfg.distribute.connect_timeout,
                         say=lambda text: progress.say(cfg.run.progress, text))
    if os.environ.get("TF_CONFIG") and dist.name != "multi_worker":
        progress.say(cfg.run.progress,
                     f"note: TF_CONFIG is set but the strategy is {dist.name}; training on "
                     f"this machine only (use --strategy multi_worker to join the cluster)")
    data = load_data(cfg.data, cfg.augment, cfg.hardware.seed)
    if data.num_train == 0:
        raise UserError("the training split is empty", hint="check data.path / data.limit")
    cfg = replace(cfg, model=replace(cfg.model, num_classes=cfg.model.num_classes
                                     or data.num_classes))
    try:
        if dist.name == "multi_worker":
            run_dir, meta = _start_together(cfg, run_dir, meta, dist, data)
        elif run_dir is None:
            run_dir = runs.new_run_dir(cfg.run.project, cfg.run.name, cfg.run.exist_ok)
        if dist.is_chief:
            dump_config(cfg, runs.RunPaths(run_dir).config)
        steps_per_epoch = math.ceil(data.num_train / cfg.data.batch_size)
        lr = cfg.optim.lr * (dist.replicas if cfg.optim.scale_lr_with_replicas else 1)
        schedule = build_schedule(cfg.schedule, lr, cfg.train.epochs, steps_per_epoch)
        with dist.strategy.scope():
            model = make_model(cfg, data)
            optimizer = make_optimizer(cfg, schedule)
            optimizer.build(model.trainable_variables)
        if cfg.distribute.sync_batchnorm and dist.replicas > 1:
            _synchronize_batchnorm(model)
        elif cfg.hardware.fused_batchnorm:
            fuse_batch_norm(model)  # the same weights; TensorFlow's one-kernel batch norm
        run = _Run(cfg, Path(run_dir), dist, meta)
        if meta is not None:
            _restore(run, model, optimizer, dist, meta)
    except tf.errors.OpError as exc:
        if dist.name != "multi_worker":
            raise
        raise _cluster_failure(exc, dist, int((meta or {}).get("epochs_completed", 0))
                               ) from None
    progress.say(cfg.run.progress, _start_line(cfg, run, data, model, dist, lr))
    try:
        run.fit(model, optimizer, data, schedule)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    summary = run.summary()
    progress.say(cfg.run.progress, _end_line(summary))
    return TrainResult(Path(run_dir), summary, run.rows)


def _strategy_words(dist: StrategyInfo) -> str:
    replicas = f"{dist.replicas} replica{'s' if dist.replicas > 1 else ''}"
    if dist.name != "multi_worker":
        return f"strategy {dist.name} ({replicas})"
    role = "chief" if dist.is_chief else "not the chief: writes no run folder"
    return (f"strategy multi_worker ({replicas} on {dist.workers} worker"
            f"{'s' if dist.workers > 1 else ''}; this is {dist.task}, {role})")


def _start_line(cfg: Config, run: _Run, data: DataBundle, model, dist: StrategyInfo,
                lr: float) -> str:
    what = "resuming" if run.rows else "training"
    scaled = (f", lr {cfg.optim.lr:g} x {dist.replicas} replicas = {lr:g}"
              if cfg.optim.scale_lr_with_replicas and dist.replicas > 1 else "")
    return (f"{what} {run.paths.root}: {model.count_params():,} parameters, "
            f"{data.num_train} train / {data.num_val} val images, {len(data.class_names)} "
            f"classes, epochs {len(run.rows) + 1}-{cfg.train.epochs}, global batch "
            f"{cfg.data.batch_size}{scaled}, {_strategy_words(dist)}")


def _end_line(s: dict[str, Any]) -> str:
    best = (f"best val_accuracy {s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}"
            if s["best_val_accuracy"] is not None else "no validation data")
    return (f"{s['status']}: {s['epochs_completed']} epochs, {best}, "
            f"{s['wall_seconds']:.1f}s, {s['train_images_per_second']:.0f} train img/s "
            f"-> {s['run_dir']}")


def train(cfg: Config) -> TrainResult:
    """Train a new run from ``cfg`` (see ``config.load_config``).

    With ``distribute.strategy: multi_worker`` the run folder is ``run.project/run.name``
    exactly, and running the same command again continues it from its last completed
    epoch (what a restarted worker does).
    """
    return _run(cfg, None, None)


def _resume_meta(run_dir: Path, cfg: Config, original: Config) -> dict:
    """The checkpoint's metadata, after checking that the run can go on with ``cfg``."""
    paths = runs.RunPaths(run_dir)
    meta = checkpoint.read_meta(paths.checkpoint)
    done = meta["epochs_completed"]
    extended = cfg.train.epochs != original.train.epochs
    if meta["status"] == "stopped_early" and not extended:
        raise UserError(f"{run_dir} stopped early after {done} epochs",
                        hint=f"to train further: resnet-builder train --resume {run_dir} "
                             f"--set train.epochs=N (N > {done})")
    if done >= cfg.train.epochs:
        raise UserError(f"{run_dir} already finished its {done} epochs",
                        hint=f"to extend it: resnet-builder train --resume {run_dir} "
                             f"--set train.epochs=N (N > {done})")
    if extended:
        dump_config(cfg, paths.config)
        progress.say(cfg.run.progress,
                     f"extending {run_dir} from {original.train.epochs} to {cfg.train.epochs} "
                     f"epochs; the learning-rate schedule is recomputed for {cfg.train.epochs}")
        meta["stale_epochs"] = 0  # an extended run gets a fresh patience
    return meta


def resume(run_dir: str | Path, overrides: tuple[str, ...] = ()) -> TrainResult:
    """Continue ``run_dir`` after its last completed epoch (``overrides`` may extend it)."""
    paths = runs.RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)",
                        hint="pass a folder made by resnet-builder train, e.g. runs/train/exp")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise UserError(f"--set {key} cannot change when resuming",
                            hint=f"a resumed run may change only: {', '.join(RESUMABLE_KEYS)}",
                            exit_code=2)
    cfg = load_config(paths.config, overrides)
    original = load_config(paths.config)
    if not paths.checkpoint.exists():
        progress.say(cfg.run.progress, f"{run_dir} has no completed epoch yet; starting it again")
        return _run(cfg, paths.root, None)
    return _run(cfg, paths.root, _resume_meta(paths.root, cfg, original))
