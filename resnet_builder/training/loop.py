"""The epoch loop: train, evaluate, record, and tell the callbacks; nothing else.

Epoch ``k``'s data order and augmentation depend only on (seed, k), so a resumed run sees
the same batches as an uninterrupted one, also mid-epoch. Each compiled call adds its sums
to running totals on the device, read by the host every ``run.log_every`` steps (progress,
NaN check), at a checkpoint and at the epoch's end. Everything written or shown happens in
callbacks (``callbacks.py``); a NaN loss, Ctrl-C, SIGTERM and a lost worker become a message
that says how to go on, once the callbacks know training ended (summary.json, plots).
"""

from __future__ import annotations

import contextlib
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from resnet_builder import scores
from resnet_builder.data import DataBundle
from resnet_builder.data.shard_errors import damaged_shard_error
from resnet_builder.errors import UserError
from resnet_builder.runs import RunPaths, resume_command
from resnet_builder.training import progress
from resnet_builder.training.batchnorm import make_moving_stats_sync
from resnet_builder.training.ema import EmaWeights
from resnet_builder.training.preemption import (
    PREEMPTED_EXIT_CODE,
    CheckpointClock,
    Diverged,
    Preempted,
    StopFlag,
    StopPoints,
)
from resnet_builder.training.run_inputs import RepeatedBatches, RunBatches
from resnet_builder.training.step import (
    is_multilabel,
    make_eval_step,
    make_loss,
    make_train_function,
    updates_per_epoch,
)
from resnet_builder.training.strategy import (
    StrategyInfo,
    distribute_dataset,
    distribute_shards,
    pairs_from_every_worker,
)
from resnet_builder.training.totals import EpochTotals, Evaluation, WeightCheck
from resnet_builder.training.workers import RESTART_HINT, cluster_failure, lost_peer


class _StoppedInEvaluation(Exception):  # SIGTERM arrived while an epoch was evaluated
    pass


_NO_VALIDATION = object()  # what val_batches keeps when the data has no validation split

# The run's iterator makes batches from when it is made, while the train function is traced
# (a 3,000-JPEG folder, 3 epochs: 0.29-0.98 s less wall, ~2.5% more images/s; 4 of 4 pairs).
_WARM_START = tf.data.Options()
_WARM_START.experimental_warm_start = True


class TrainingLoop:
    """One run's epochs, from where the state stands to ``train.epochs``."""

    def __init__(self, cfg: Any, dist: StrategyInfo, model, optimizer, data: DataBundle,
                 schedule, state, callbacks: keras.callbacks.CallbackList,
                 paths: RunPaths, steps_per_call: int = 1, ema: EmaWeights | None = None
                 ) -> None:
        self.cfg, self.dist, self.model, self.optimizer = cfg, dist, model, optimizer
        self.data, self.schedule, self.state, self.callbacks = data, schedule, state, callbacks
        self.paths, self.steps_per_call, self.ema = paths, steps_per_call, ema
        task = getattr(model, "task", "multiclass")
        self.loss_fn = make_loss(model.num_classes, cfg.optim.label_smoothing,
                                 data.class_weights, task)  # validation's stays unweighted
        self.steps_per_epoch = data.batches_per_epoch(cfg.data.batch_size, dist.workers)
        # A call trains steps_per_call updates of accumulate_steps batches each, so calls (and
        # so reads and mid-epoch checkpoints) end on whole groups: no gradient sum to save.
        self.batches_per_call = steps_per_call * cfg.optim.accumulate_steps
        self.updates_per_epoch = updates_per_epoch(self.steps_per_epoch,
                                                   cfg.optim.accumulate_steps)
        self._val_batches: Any = None  # made when first wanted: see val_batches
        self.eval_step = make_eval_step(
            model, make_loss(model.num_classes, cfg.optim.label_smoothing, task=task),
            dist.strategy)
        self.clock = CheckpointClock(cfg.train.checkpoint_every)
        self.stop, self.weights_finite = StopFlag(), WeightCheck(model)
        self.points = StopPoints(self.clock, self.stop, dist, cfg.run.log_every)
        self.inputs = RunBatches(self._run_iterator)  # one iterator for the run's epochs
        self._background: ThreadPoolExecutor | None = None  # validation's pipeline is made there
        self._counts: dict[int, tf.Tensor] = {}  # batches per call, as tensors (_batch_count)
        # files this worker found unreadable this epoch before its last mid-epoch checkpoint,
        # saved in it (epoch_progress): a resumed epoch still names them at its end
        self._skipped_before: list[list[str]] = []

    def run(self) -> None:
        """Train every remaining epoch; raises ``UserError`` for a stop that loses work."""
        self.model.stop_training = False
        # SIGTERM stays a flag until the run's last files are written (the default action
        # killed a run in its final plots); after the last epoch it no longer stops anything
        with self.stop.catching_sigterm():
            self._run_epochs()
        if self.stop.requested:
            progress.say(self.cfg.run.progress, "SIGTERM arrived as the run ended: it "
                         "finished, nothing to resume")

    def _run_epochs(self) -> None:
        try:
            self.callbacks.on_train_begin()  # inside: a logger failing here still ends the run
            self._epochs()
        except Diverged as nan:
            self._end("diverged")
            point = self.state.saved_point()  # a run that diverged before any has none
            kept = (f"the last good checkpoint ({point}) is kept in {self.paths.root}" if point
                    else f"no checkpoint was written before it ({self.paths.root})")
            raise UserError(
                f"training diverged: the loss or weights became NaN or infinite at epoch "
                f"{nan.epoch}, by step {nan.step}; {kept}",
                hint="lower optim.lr, add warm-up (schedule.warmup), or check the data",
            ) from None
        except tf.errors.OpError as exc:
            damaged = damaged_shard_error(exc, self.cfg.data.path)
            if damaged is not None:  # a packed shard cut short or corrupt: the user's to fix
                self._end("data_damaged")
                raise damaged from None
            if self.dist.name != "multi_worker" or not lost_peer(exc):
                self._end_failed()
                raise
            self._end("worker_lost")
            raise cluster_failure(exc, self.dist, self.state.epochs_completed) from None
        except Preempted as stop:
            self._end("preempted")
            raise UserError(f"stopped by SIGTERM; saved at epoch {stop.epoch}, step "
                            f"{stop.step} in {self.paths.root}", hint=self._resume_hint(),
                            exit_code=PREEMPTED_EXIT_CODE) from None
        except KeyboardInterrupt:
            self.state.forget_unsaved_epochs()
            self._end("interrupted")
            raise UserError(
                f"interrupted; {self.state.epochs_completed} completed epoch(s) are saved in "
                f"{self.paths.root}", hint=self._resume_hint(), exit_code=130) from None
        except Exception:  # a callback's error, a full disk: the caller reports it
            self._end_failed()
            raise
        if self.state.status == "running":  # a callback set model.stop_training
            self.state.status = "stopped"
        self._end(self.state.status)

    def _resume_hint(self) -> str:
        """A multi-worker run continues when every worker re-runs its command (the run
        folder is on the chief's machine only)."""
        if self.dist.name == "multi_worker":
            return f"{RESTART_HINT}: the run continues from this checkpoint"
        return f"resume with: {resume_command(self.paths.root)}"

    def _end_failed(self) -> None:
        """An unexpected error: summary.json and the loggers say the run failed; it goes on."""
        with contextlib.suppress(Exception):  # a callback that fails again must not hide it
            self._end("failed")

    def _end(self, status: str) -> None:
        self.inputs.close()
        self._val_batches = None  # its iterator's prefetched batches and threads
        if self._background is not None:
            self._background.shutdown(wait=False)
            self._background = None
        self.state.end(status)
        self.callbacks.on_train_end({"status": status})

    def _epochs(self) -> None:
        cfg, train_fn, frozen = self.cfg, None, None
        sync_moving_stats = make_moving_stats_sync(self.model, self.dist.strategy)
        self.clock.written(self.state.steps_done(self.steps_per_epoch))  # not due on resume
        for epoch in range(self.state.epochs_completed + 1, cfg.train.epochs + 1):
            want_frozen = epoch <= cfg.model.freeze_backbone_epochs
            if train_fn is None or want_frozen != frozen:
                frozen = want_frozen
                train_fn = self.train_function(frozen)
            self.callbacks.on_epoch_begin(epoch - 1)
            logs = self.train_epoch(epoch, train_fn)
            sync_moving_stats()  # before evaluating and saving: one model on every replica
            with self.ema.in_model() if self.ema else contextlib.nullcontext():
                try:  # optim.ema: the EMA model is evaluated and saved
                    self._end_epoch(epoch, logs)
                except _StoppedInEvaluation:  # SIGTERM: leave now, evaluate again on resume
                    # a checkpoint at the epoch's last step: the resumed run trains no more
                    # of it, evaluates it and goes on
                    self._tell_progress(self.steps_per_epoch, checkpoint=True)
                    raise Preempted(epoch, self.steps_per_epoch) from None
            self.clock.written(epoch * self.steps_per_epoch)
            if self.model.stop_training:
                break
            if epoch < cfg.train.epochs and self.points.stop_agreed():  # the last: the run is done
                raise Preempted(epoch, self.steps_per_epoch)

    def _tell_progress(self, step: int, checkpoint: bool) -> None:
        """Tell the callbacks where the epoch stands (``state.epoch_progress``); with
        ``checkpoint`` they write a mid-epoch checkpoint, which holds the files the epoch
        skipped so far."""
        if checkpoint:
            self._skipped_before += [[path, why] for path, why in self.data.take_skipped()]
        progress = self.state.epoch_progress
        progress["skipped"] = list(self._skipped_before)
        count = max(progress["count"], 1.0)
        self.callbacks.on_train_batch_end(step - 1, {
            "loss": progress["loss_sum"] / count, "accuracy": progress["correct"] / count,
            "images_per_second": progress["count"] / max(progress["seconds"], 1e-9),
            "checkpoint": checkpoint})

    def _end_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        """Evaluate, record and tell the callbacks (they write the run folder)."""
        cfg = self.cfg
        evaluation = self.evaluate()
        # each worker decoded its own share: the chief's skipped.csv lists every worker's
        found = [(path, why) for path, why in self._skipped_before] + self.data.take_skipped()
        self._skipped_before = []
        self.state.note_skipped(pairs_from_every_worker(self.dist, found))
        if evaluation is not None:
            logs.update(evaluation.logs())
        elif is_multilabel(self.model):
            logs["val_map"] = None  # no validation split: results.csv keeps multilabel columns
        row = {"epoch": epoch, **{k: v for k, v in logs.items() if k != "images_per_second"}}
        self.state.record(row, None if evaluation is None else evaluation.confusion,
                          last=epoch == cfg.train.epochs, monitor=cfg.train.monitor)
        self.callbacks.on_epoch_end(epoch - 1, logs)

    def train_function(self, frozen: bool):
        """A train function over the variables trainable now (the backbone may be frozen)."""
        self.model.backbone.trainable = not frozen
        if frozen:
            last = min(self.cfg.model.freeze_backbone_epochs, self.cfg.train.epochs)
            whole = " (all of them: only the head trains)" if last == self.cfg.train.epochs else ""
            progress.say(self.cfg.run.progress, f"backbone frozen (batch-norm in inference "
                         f"mode) for epochs 1-{last}{whole}")
        return make_train_function(self.model, self.optimizer, self.loss_fn,
                                   strategy=self.dist.strategy,
                                   steps_per_call=self.steps_per_call,
                                   global_batch_size=self.cfg.data.batch_size,
                                   jit_compile=self.cfg.hardware.xla,
                                   accumulate_steps=self.cfg.optim.accumulate_steps,
                                   clipnorm=self.cfg.optim.clipnorm)

    def train_epoch(self, epoch: int, train_fn) -> dict[str, Any]:
        """One pass over the training split (or its rest, after a mid-epoch resume) -> logs.

        Every results.csv column but ``epoch``, which callbacks get as their argument
        (0-based, as in ``fit``; Keras' ``ModelCheckpoint`` formats ``epoch`` from it).
        """
        resumed = self.state.epoch_progress
        resumed = resumed if resumed and resumed["epoch"] == epoch else None
        step = resumed["batches"] if resumed else 0
        self._skipped_before = list(resumed.get("skipped", [])) if resumed else []
        before = resumed["seconds"] if resumed else 0.0
        totals = EpochTotals(resumed)
        # resumed after the epoch trained (stopped in its evaluation): no batches to read
        iterator = self.inputs.at(epoch, step) if step < self.steps_per_epoch else None
        start, last_read, first_call = time.perf_counter(), step, True
        while step < self.steps_per_epoch:
            taken = min(self.batches_per_call, self.steps_per_epoch - step)
            totals.add(train_fn(iterator, self._batch_count(taken)))
            if first_call and self._val_batches is None:  # not before: it would compete
                self._val_batches = self._in_background(self._make_val_batches)  # with tracing
            first_call = False
            step += taken
            self.inputs.moved_to(*((epoch, step) if step < self.steps_per_epoch
                                   else (epoch + 1, 0)))
            read, due, stopping = self.points.after_call(
                (epoch - 1) * self.steps_per_epoch + step, step - last_read,
                step == self.steps_per_epoch)
            if read:
                last_read = step
                self._report(epoch, step, totals, before + time.perf_counter() - start, due,
                             stopping)
        loss_sum, correct, count = totals.read()
        seconds = time.perf_counter() - start
        self.state.train_images += count - (resumed["count"] if resumed else 0.0)
        self.state.train_seconds += seconds
        return {"time": before + seconds,
                "lr": self.schedule.value(epoch * self.updates_per_epoch - 1),
                "loss": loss_sum / max(count, 1.0), "accuracy": correct / max(count, 1.0),
                "images_per_second": count / max(before + seconds, 1e-9)}

    def _batch_count(self, batches: int) -> tf.Tensor:
        """``batches`` as the int32 tensor the train function takes (made once per value)."""
        if batches not in self._counts:
            self._counts[batches] = tf.constant(batches, tf.int32)
        return self._counts[batches]

    def _in_background(self, make) -> Future:
        """``make()`` on the loop's one background thread."""
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inputs")
        return self._background.submit(make)

    @property
    def val_batches(self):
        """Validation's batches (one device: from one iterator over the split repeated,
        ``RepeatedBatches``; several: distributed), None without a validation split.

        Made when first wanted, or on a background thread while this run's first epoch
        trains (after its first call; an error in making them shows at the first
        evaluation). Made before the loop, they took 0.32 s of a 20,000-file folder's time
        to its first step (bench/first_step.py).
        """
        if self._val_batches is None:
            self._val_batches = self._make_val_batches()
        if isinstance(self._val_batches, Future):
            self._val_batches = self._val_batches.result()
        return None if self._val_batches is _NO_VALIDATION else self._val_batches

    def _make_val_batches(self):
        batch = self.cfg.train.eval_batch_size or self.cfg.data.batch_size
        val = self.data.val_dataset(batch)
        if val is None:
            return _NO_VALIDATION
        # Several replicas: tf.distribute rebatches the global batches, which over the split
        # repeated could fill one evaluation's short last batch with the next one's rows.
        if self.dist.replicas > 1:
            return distribute_dataset(self.dist, val)
        # Traced here, on the background thread while epoch 1 trains, rather than at the first
        # evaluation: that one took 0.66-0.70 s instead of 0.91-0.93 (600 streamed JPEGs).
        self.eval_step.get_concrete_function(val.element_spec)
        return RepeatedBatches(iter(val.repeat()), -(-self.data.num_val // batch))

    def _run_iterator(self, epoch: int, first_batch: int):
        """One iterator over the run's batches from batch ``first_batch`` of epoch ``epoch``
        (1-based) to the end of ``train.epochs``, distributed over the replicas."""
        batch, epochs = self.cfg.data.batch_size, range(epoch - 1, self.cfg.train.epochs)

        def shard_batches(shard: int, num_shards: int):
            return self.data.train_batches(epochs, batch, shard=shard, num_shards=num_shards,
                                           first_batch=first_batch).with_options(_WARM_START)

        return iter(distribute_shards(self.dist, shard_batches, batch))

    def _report(self, epoch: int, step: int, totals: EpochTotals, seconds: float,
                checkpoint_due: bool, stopping: bool) -> None:
        """Read the totals, stop on NaN, tell the callbacks; checkpoint or leave if asked."""
        loss_sum, correct, count = totals.read()
        save = (checkpoint_due or stopping) and step < self.steps_per_epoch
        # weights about to be saved are checked too: the last update can make them NaN
        # while the loss it was computed from was still finite
        if not math.isfinite(loss_sum) or ((save or step == self.steps_per_epoch)
                                           and not self.weights_finite()):
            raise Diverged(epoch, step)
        self.state.epoch_progress = {"epoch": epoch, "batches": step, "loss_sum": loss_sum,
                                     "correct": correct, "count": count, "seconds": seconds}
        self._tell_progress(step, checkpoint=save)
        if save:
            self.clock.written((epoch - 1) * self.steps_per_epoch + step)
        if stopping and step < self.steps_per_epoch:  # at the end: after saving
            raise Preempted(epoch, step)

    def evaluate(self) -> Evaluation | None:
        """Loss and confusion matrix on the validation split (None without one).

        Batches are added up on the device and read once; unreadable images (label -1)
        count nowhere.
        """
        if self.val_batches is None:
            return None
        if is_multilabel(self.model):
            return self._evaluate_labels()
        k = self.model.num_classes
        loss_sum, confusion = tf.constant(0.0, tf.float64), tf.zeros((k, k), tf.int64)
        for index, batch in enumerate(self.val_batches):
            self._stop_if_asked(index)
            batch_loss, batch_confusion = self.eval_step(batch)
            loss_sum += tf.cast(batch_loss, tf.float64)
            confusion += tf.cast(batch_confusion, tf.int64)
        matrix = confusion.numpy()
        return Evaluation(float(loss_sum) / max(int(matrix.sum()), 1), matrix)

    def _stop_if_asked(self, batch: int) -> None:
        """SIGTERM between evaluation batches: a large validation split could outlast the
        grace period a scheduler gives."""
        if self.points.stop_in_evaluation(batch):
            raise _StoppedInEvaluation

    def _evaluate_labels(self) -> Evaluation:
        """Multilabel: every validation probability comes back (kept on the device until the
        end), then AP, mAP and F1 at the model's threshold; rows of -1 (unreadable) drop."""
        loss_sum, probabilities, truth = tf.constant(0.0, tf.float64), [], []
        for index, batch in enumerate(self.val_batches):
            self._stop_if_asked(index)
            batch_loss, batch_probabilities, batch_truth = self.eval_step(batch)
            loss_sum += tf.cast(batch_loss, tf.float64)
            probabilities.append(batch_probabilities)
            truth.append(batch_truth)
        rows = np.concatenate([t.numpy() for t in truth])
        readable = rows.min(axis=1) >= 0
        found = np.concatenate([p.numpy() for p in probabilities])[readable]
        labels = scores.label_scores(rows[readable], found, self.model.threshold)
        return Evaluation(float(loss_sum) / max(int(readable.sum()), 1), None, labels)
