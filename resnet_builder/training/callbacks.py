"""The trainer's own ``keras.callbacks``: everything a run does besides training.

The loop (``loop.py``) only trains, evaluates and records; it tells a
``keras.callbacks.CallbackList`` what happened, as Keras documents for custom
loops: ``on_train_begin/end``, ``on_epoch_begin/end`` (0-based epoch index, logs
holding every other results.csv column plus ``images_per_second``) and
``on_train_batch_end`` (running ``loss``/``accuracy``). Progress, early stopping,
results.csv, the run folder and the plots are callbacks, in that order, then the
other loggers of ``run.loggers`` (``loggers.py``); a user's callbacks come after
them (so they see the epoch's files written) and may stop the run with
``self.model.stop_training = True``.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from resnet_builder import plots
from resnet_builder.files import atomic_save, write_json
from resnet_builder.runs import RunPaths, write_skipped_csv
from resnet_builder.training import checkpoint, progress
from resnet_builder.training.ema import EmaWeights
from resnet_builder.training.loggers import make_loggers
from resnet_builder.training.state import RunState


class ProgressCallback(keras.callbacks.Callback):
    """A tqdm bar per epoch on a terminal, one line per epoch elsewhere (``run.progress``)."""

    def __init__(self, mode: str, epochs: int, steps_per_epoch: int, state: RunState,
                 unreadable_classes: Callable[[set[str]], list[str]] | None = None) -> None:
        super().__init__()
        self.mode, self.epochs, self.steps, self.state = mode, epochs, steps_per_epoch, state
        self.unreadable_classes = unreadable_classes  # DataBundle.unreadable_classes
        self.bar: progress.EpochProgress | None = None
        self.done = 0  # steps of this epoch shown so far

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.bar = progress.EpochProgress(self.mode, epoch + 1, self.epochs, self.steps)
        resumed = self.state.epoch_progress  # a run resumed from the middle of this epoch
        self.done = resumed["batches"] if resumed and resumed["epoch"] == epoch + 1 else 0
        if self.done:  # where the epoch stood, its rate so far too (not 0 img/s)
            count = max(resumed["count"], 1.0)
            seconds = resumed.get("seconds", 0.0)
            self.bar.update(self.done, resumed["loss_sum"] / count, resumed["correct"] / count,
                            resumed["count"] / seconds if seconds > 0 else 0.0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called at each read of the running totals (every run.log_every steps)."""
        logs = logs or {}
        if self.bar is not None:
            self.bar.update(batch + 1 - self.done, logs["loss"], logs["accuracy"],
                            logs["images_per_second"])
            self.done = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close(self.state.history[-1], (logs or {})["images_per_second"],
                           "(best)" if self.state.improved else "")
            self.bar = None
        if self.state.skipped_now:
            names = ", ".join(f"{path} ({why})" for path, why in self.state.skipped_now[:5])
            more = len(self.state.skipped_now) - 5
            progress.say(self.mode, f"skipped {len(self.state.skipped_now)} unreadable "
                         f"file(s): {names}{f' and {more} more' if more > 0 else ''} "
                         "(listed in the run's skipped.csv)")
            empty = self.unreadable_classes(set(self.state.skipped)) \
                if self.unreadable_classes else []
            if empty:
                progress.say(self.mode, f"warning: no training image of class(es) "
                             f"{', '.join(empty)} could be read (all skipped): the model "
                             "cannot learn them; fix or replace their files and train again")


class EarlyStopping(keras.callbacks.Callback):
    """Stop after ``patience`` epochs without a better ``monitor`` value (train.monitor).

    The count lives in the run state (saved in the checkpoint), so a resumed run
    keeps its patience; Keras' own ``EarlyStopping`` also works in this loop but
    starts counting afresh on every resume.
    """

    def __init__(self, patience: int, state: RunState, say: Callable[[str], None],
                 monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.patience, self.state, self.say, self.monitor = patience, state, say, monitor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.patience or (logs or {}).get(self.monitor) is None:
            return
        if self.state.status == "finished":  # patience ran out with the last epoch: no stop
            return
        if self.state.stale_epochs >= self.patience:
            self.state.status = "stopped_early"
            self.model.stop_training = True
            best = self.state.best_value
            epochs = "epoch" if self.patience == 1 else "epochs"
            self.say(f"early stopping: no better {self.monitor} for {self.patience} {epochs}"
                     + (f" (best {best:.4f} at epoch {self.state.best_epoch})"
                        if best is not None else ""))


class RunFolderWriter(keras.callbacks.Callback):
    """Per epoch: last.keras, best.keras, checkpoint.npz (last), summary.json.

    The checkpoint is written last: it is the commit point a resumed run restarts
    from. A worker that is not the chief writes only its own resume checkpoint
    (``backup``), outside the run folder, and removes it when the run ends well.
    """

    def __init__(self, paths: RunPaths, state: RunState, optimizer, summary: Callable[[], dict],
                 *, is_chief: bool, backup: Path | None, ema: EmaWeights | None = None) -> None:
        super().__init__()
        self.paths, self.state, self.optimizer, self.summary = paths, state, optimizer, summary
        self.is_chief, self.backup, self.ema = is_chief, backup, ema

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """A mid-epoch checkpoint when the loop says one is due (train.checkpoint_every,
        SIGTERM): the model, the optimizer and the epoch's progress, nothing else."""
        if (logs or {}).get("checkpoint"):
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        path = self.paths.checkpoint if self.is_chief else self.backup
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = self.state.to_meta()
            with self.ema.raw() if self.ema else contextlib.nullcontext():  # optim.ema
                checkpoint.save_checkpoint(path, self.model, self.optimizer, meta)
            self.state.saved = copy.deepcopy(meta)  # to_meta() holds the live history list

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.is_chief:
            self._save_checkpoint()
            return
        if self.state.skipped:
            write_skipped_csv(self.paths.skipped, self.state.skipped.items())
        atomic_save(self.paths.last, self.model.save)
        if self.state.improved:  # the same bytes: copying beats saving the model twice
            atomic_save(self.paths.best, lambda tmp: shutil.copyfile(self.paths.last, tmp))
        self._save_checkpoint()
        write_json(self.paths.summary, self.summary())

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.is_chief:
            write_json(self.paths.summary, self.summary())
        elif self.backup is not None and self.state.status in ("finished", "stopped_early"):
            remove_backup(self.backup.parent)


class PlotsCallback(keras.callbacks.Callback):
    """curves.png and the best epoch's validation confusion matrix, when the run ends."""

    def __init__(self, paths: RunPaths, state: RunState, class_names: list[str]) -> None:
        super().__init__()
        self.paths, self.state, self.class_names = paths, state, class_names

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.state.history:
            return
        plots.plot_curves(self.state.history, self.paths.curves)
        if self.state.best_confusion is not None:
            plots.plot_confusion_matrix(np.asarray(self.state.best_confusion), self.class_names,
                                        self.paths.confusion_matrix,
                                        title=f"validation, best epoch {self.state.best_epoch}")


def remove_backup(folder: Path) -> None:
    """Delete a worker's backup folder, and its parents when that leaves them empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break


def standard_callbacks(*, cfg: Any, paths: RunPaths, state: RunState, optimizer,
                       summary: Callable[[], dict], class_names: list[str], steps_per_epoch: int,
                       is_chief: bool, backup: Path | None, ema: EmaWeights | None = None,
                       unreadable_classes: Callable[[set[str]], list[str]] | None = None
                       ) -> list[keras.callbacks.Callback]:
    """The callbacks every run has, in order; the chief alone draws and logs (run.loggers)."""
    say = lambda text: progress.say(cfg.run.progress, text)  # noqa: E731
    before, after = make_loggers(cfg, paths, state) if is_chief else ([], [])
    found: list[keras.callbacks.Callback] = [
        ProgressCallback(cfg.run.progress, cfg.train.epochs, steps_per_epoch, state,
                         unreadable_classes),
        EarlyStopping(cfg.train.early_stopping_patience, state, say, cfg.train.monitor),
        *before,  # results.csv, before the checkpoint that commits the epoch
        RunFolderWriter(paths, state, optimizer, summary, is_chief=is_chief, backup=backup,
                        ema=ema),
    ]
    if is_chief and cfg.run.plots:
        found.append(PlotsCallback(paths, state, class_names))
    return found + after
