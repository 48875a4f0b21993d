"""The training loop: config in, run folder out; resumable at any epoch boundary.

``train(cfg)`` starts a run, ``resume(run_dir)`` continues one. Per completed
epoch the run folder gets a results.csv row, ``last.keras``, ``best.keras`` on
a better validation accuracy, then ``checkpoint.npz`` (written last: it is the
commit point a resumed run restarts from). Epoch ``k``'s data order and
augmentation depend only on (seed, k), so a resumed run sees the same batches
as an uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import checkpoint, progress, runs
from .classifier import ResNetV2Classifier, build_model
from .config import Config, dump_config, load_config
from .data import DataBundle, load_data
from .distribute import StrategyInfo, make_strategy
from .errors import UserError
from .plots import confusion_matrix, plot_confusion_matrix, plot_curves
from .schedules import build_schedule
from .steps import make_eval_step, make_loss, make_train_step

# Keys a resumed run may change: the length of the run and how it reports.
RESUMABLE_KEYS = ("train.epochs", "train.early_stopping_patience", "run.progress", "run.plots",
                  "run.tensorboard", "hardware.threads", "distribute.strategy")


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
    from .presets import PRESETS, load_preset_weights

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

    # -- per-epoch pieces
    def _train_epoch(self, epoch: int, step, data: DataBundle, schedule) -> dict[str, Any]:
        cfg = self.cfg
        batch = cfg.data.batch_size
        steps = math.ceil(data.num_train / batch)
        bar = progress.EpochProgress(cfg.run.progress, epoch, cfg.train.epochs, steps)
        dataset = data.train_dataset(epoch - 1, batch)
        if self.dist.replicas > 1:
            dataset = self.dist.strategy.experimental_distribute_dataset(dataset)
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
            return
        runs.write_results(self.paths.results, self.rows)
        runs.atomic_save(self.paths.last, model.save)
        if improved:  # the same bytes: copying beats saving the model twice
            runs.atomic_save(self.paths.best, lambda tmp: shutil.copyfile(self.paths.last, tmp))
        checkpoint.save_checkpoint(self.paths.checkpoint, model, optimizer, self._meta())
        runs.write_json(self.paths.summary, self.summary())

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
        self.val_batches = data.val_dataset(cfg.train.eval_batch_size or cfg.data.batch_size)
        self.val_labels = (None if self.val_batches is None else
                           np.concatenate([labels.numpy() for _, labels in self.val_batches]))
        if self.val_batches is not None and self.dist.replicas > 1:
            self.val_batches = strategy.experimental_distribute_dataset(self.val_batches)
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
            runs.write_json(self.paths.summary, self.summary())


class _Diverged(Exception):
    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step = epoch, step


# --------------------------------------------------------------------------- entry points

def _run(cfg: Config, run_dir: Path | None, meta: dict | None) -> TrainResult:
    _configure_hardware(cfg)
    dist = make_strategy(cfg.distribute.strategy)
    data = load_data(cfg.data, cfg.augment, cfg.hardware.seed)
    if data.num_train == 0:
        raise UserError("the training split is empty", hint="check data.path / data.limit")
    if run_dir is None:
        run_dir = runs.new_run_dir(cfg.run.project, cfg.run.name, cfg.run.exist_ok)
    cfg = replace(cfg, model=replace(cfg.model, num_classes=cfg.model.num_classes
                                     or data.num_classes))
    if dist.is_chief:
        dump_config(cfg, runs.RunPaths(run_dir).config)
    steps_per_epoch = math.ceil(data.num_train / cfg.data.batch_size)
    lr = cfg.optim.lr * (dist.replicas if cfg.optim.scale_lr_with_replicas else 1)
    schedule = build_schedule(cfg.schedule, lr, cfg.train.epochs, steps_per_epoch)
    with dist.strategy.scope():
        model = make_model(cfg, data)
        optimizer = make_optimizer(cfg, schedule)
        optimizer.build(model.trainable_variables)
    run = _Run(cfg, Path(run_dir), dist, meta)
    if meta is not None:
        checkpoint.load_checkpoint(run.paths.checkpoint, model, optimizer)
    progress.say(cfg.run.progress, _start_line(cfg, run, data, model, dist))
    try:
        run.fit(model, optimizer, data, schedule)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    summary = run.summary()
    progress.say(cfg.run.progress, _end_line(summary))
    return TrainResult(Path(run_dir), summary, run.rows)


def _start_line(cfg: Config, run: _Run, data: DataBundle, model, dist: StrategyInfo) -> str:
    what = "resuming" if run.rows else "training"
    return (f"{what} {run.paths.root}: {model.count_params():,} parameters, "
            f"{data.num_train} train / {data.num_val} val images, {len(data.class_names)} "
            f"classes, epochs {len(run.rows) + 1}-{cfg.train.epochs}, strategy {dist.name} "
            f"({dist.replicas} replica{'s' if dist.replicas > 1 else ''})")


def _end_line(s: dict[str, Any]) -> str:
    best = (f"best val_accuracy {s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}"
            if s["best_val_accuracy"] is not None else "no validation data")
    return (f"{s['status']}: {s['epochs_completed']} epochs, {best}, "
            f"{s['wall_seconds']:.1f}s, {s['train_images_per_second']:.0f} train img/s "
            f"-> {s['run_dir']}")


def train(cfg: Config) -> TrainResult:
    """Train a new run from ``cfg`` (see ``config.load_config``)."""
    return _run(cfg, None, None)


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
    if extended:
        meta["stale_epochs"] = 0  # an extended run gets a fresh patience
    return _run(cfg, paths.root, meta)
