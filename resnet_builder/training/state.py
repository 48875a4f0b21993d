"""What a run knows between epochs, and how it is saved so a resumed run continues it.

``RunState`` is the one record the loop updates and the callbacks read: the
results.csv rows, the best epoch by ``train.monitor`` (which chooses best.keras and
drives early stopping), the status and the timings. ``to_meta``/``from_meta`` are what the
checkpoint stores. ``status`` is one of running, finished, stopped_early, stopped (by a
callback), diverged, interrupted, preempted (SIGTERM), worker_lost, data_damaged (a
packed shard cut short or corrupt) or failed (an unexpected error).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOWER_IS_BETTER = ("val_loss",)  # train.monitor values where smaller is better


def is_better(monitor: str, value: float | None, best: float | None) -> bool:
    """Whether ``value`` of ``monitor`` beats ``best`` (a NaN never does; anything beats None)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if monitor in LOWER_IS_BETTER else value > best


@dataclass
class RunState:
    history: list[dict[str, Any]] = field(default_factory=list)  # the results.csv rows
    best_value: float | None = None  # train.monitor's value at best_epoch
    best_epoch: int | None = None
    best_confusion: list[list[int]] | None = None  # validation confusion matrix at best_epoch
    stale_epochs: int = 0  # epochs since the monitored value last improved (early stopping)
    status: str = "running"
    wall_before: float = 0.0  # wall seconds of earlier sessions of this run
    train_images: float = 0.0
    train_seconds: float = 0.0
    improved: bool = False  # the latest epoch set a new best (not saved)
    # The epoch in progress at a mid-epoch checkpoint: {"epoch", "batches" done, "loss_sum",
    # "correct", "count", "seconds"}; None at epoch boundaries.
    epoch_progress: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> reason
    skipped_now: list[tuple[str, str]] = field(default_factory=list)  # new this epoch
    # what the run trains on: {"classes", "train", "val"} (resume.data_change compares it)
    data_shape: dict[str, Any] | None = None
    config: dict[str, Any] | None = None  # flat config it trains with (resume compares it)
    saved: dict[str, Any] | None = None  # to_meta() of the latest checkpoint.npz (resume point)
    started: float = field(default_factory=time.perf_counter, repr=False)
    ended: float | None = field(default=None, repr=False)  # set as the run ends (end)

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> RunState:
        """The state a checkpoint's metadata describes (a fresh one for ``None``); a
        checkpoint from before ``train.monitor`` monitored val_accuracy."""
        meta = meta or {}
        return cls(history=list(meta.get("history", [])),
                   best_value=meta.get("best_value", meta.get("best_val_accuracy")),
                   best_epoch=meta.get("best_epoch"),
                   best_confusion=meta.get("best_confusion"),
                   stale_epochs=int(meta.get("stale_epochs", 0)),
                   wall_before=float(meta.get("wall_seconds", 0.0)),
                   train_images=float(meta.get("train_images", 0.0)),
                   train_seconds=float(meta.get("train_seconds", 0.0)),
                   epoch_progress=meta.get("epoch_progress"),
                   skipped=dict(meta.get("skipped", {})), data_shape=meta.get("data"),
                   config=meta.get("config"), saved=meta or None)

    def to_meta(self) -> dict[str, Any]:
        return {"epochs_completed": self.epochs_completed, "history": self.history,
                "best_value": self.best_value, "best_val_accuracy": self.best_val_accuracy,
                "best_epoch": self.best_epoch,
                "best_confusion": self.best_confusion, "status": self.status,
                "wall_seconds": self.wall_seconds, "train_images": self.train_images,
                "train_seconds": self.train_seconds, "stale_epochs": self.stale_epochs,
                "epoch_progress": self.epoch_progress, "skipped": self.skipped,
                "data": self.data_shape, "config": self.config}

    @property
    def epochs_completed(self) -> int:
        return len(self.history)

    def forget_unsaved_epochs(self) -> None:
        """Stopped between an epoch's results.csv row and its checkpoint (Ctrl-C while a
        large last.keras is written): report what a resume starts from, not one more epoch
        nor its best (summary.json named a best epoch that no checkpoint held)."""
        saved = RunState.from_meta(self.saved)
        self.history = saved.history
        self.best_value, self.best_epoch = saved.best_value, saved.best_epoch
        self.best_confusion, self.stale_epochs = saved.best_confusion, saved.stale_epochs

    def saved_point(self) -> str | None:
        """Where the latest checkpoint stands, in words; None before the first one."""
        if self.saved is None:
            return None
        progress = self.saved.get("epoch_progress")
        if progress:
            return f"epoch {progress['epoch']}, batch {progress['batches']}"
        return f"epoch {len(self.saved.get('history', []))}"

    def steps_done(self, steps_per_epoch: int) -> int:
        """The run's global step: its whole epochs and a mid-epoch checkpoint's batches."""
        return (self.epochs_completed * steps_per_epoch
                + (self.epoch_progress["batches"] if self.epoch_progress else 0))

    @property
    def best_val_accuracy(self) -> float | None:
        """val_accuracy of the best epoch (whatever ``train.monitor`` chose it by)."""
        rows = [row for row in self.history if row["epoch"] == self.best_epoch]
        return rows[0].get("val_accuracy") if rows else None

    @property
    def wall_seconds(self) -> float:
        return self.wall_before + ((self.ended or time.perf_counter()) - self.started)

    def end(self, status: str) -> None:
        """The run ends with ``status``; its wall clock stops, so summary.json (written now)
        and the end line (printed after the plots and loggers) give the same time."""
        self.status, self.ended = status, time.perf_counter()

    @property
    def images_per_second(self) -> float:
        return self.train_images / max(self.train_seconds, 1e-9)

    def note_skipped(self, found: list[tuple[str, str]]) -> None:
        """Remember unreadable files; ``skipped_now`` holds the ones not seen before, each
        once (a file can be found twice in one epoch: mid-epoch checkpoints take the skips
        while the pipelines decode ahead, and a resume decodes again what was prefetched)."""
        fresh: dict[str, str] = {}
        for path, why in found:
            if path not in self.skipped:
                fresh.setdefault(path, why)
        self.skipped_now = list(fresh.items())
        self.skipped.update(fresh)

    def record(self, row: dict[str, Any], confusion: np.ndarray | None, last: bool,
               monitor: str = "val_accuracy") -> None:
        """Add a finished epoch: a better ``monitor`` value resets the patience count, else
        it grows (epochs without validation data count for neither)."""
        self.improved = False
        if row.get(monitor) is not None:
            self.improved = is_better(monitor, row[monitor], self.best_value)
            if self.improved:
                self.best_value, self.best_epoch = row[monitor], row["epoch"]
                self.best_confusion = None if confusion is None else confusion.tolist()
                self.stale_epochs = 0
            else:
                self.stale_epochs += 1
        self.history.append(row)
        self.epoch_progress = None
        self.status = "finished" if last else "running"
