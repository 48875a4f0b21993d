"""The one compiled training step (trainer and ``bench`` alike) and the evaluation step.

Our own step rather than ``model.fit``: Keras 3's ``fit`` breaks under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), and a compiled step
is where the speed is. Each replica averages its loss over the *global*
batch (``tf.nn.compute_average_loss``), so gradients summed across replicas
equal the single-device gradient. One loss-scaling path: ``optimizer.scale_loss``
(a ``LossScaleOptimizer`` scales under float16; every other optimizer returns the
loss unchanged).

``make_train_function`` runs up to ``steps_per_call`` updates in one call (a
``tf.range`` loop in the graph), reading batches from an iterator, and returns
plain sums ``(loss_sum, correct, count)`` for epoch means. ``optim.accumulate_steps``
makes each update from several batches (the loss averaged over the effective
batch); ``optim.clipnorm`` clips each update's gradient, summed over replicas;
``optim.ema`` is the optimizer's own (``setup.make_optimizer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def make_loss(num_classes: int, label_smoothing: float,
              class_weights: np.ndarray | None = None, task: str = "multiclass") -> Callable:
    """Per-example cross-entropy on probabilities and integer labels or [B, K] label rows
    (MixUp / CutMix soft labels), optional smoothing;
    ``class_weights`` (float [num_classes], ``data.class_weight``) weighs each example.
    ``task="multilabel"``: binary cross-entropy of the sigmoid outputs against multi-hot
    rows, averaged over the classes (one number per example)."""
    if task == "multilabel":
        binary = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing,
                                                 reduction=None)
        return lambda labels, probabilities: binary(tf.cast(labels, probabilities.dtype),
                                                    probabilities)
    crossentropy = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                        reduction=None)

    def loss(labels, probabilities):
        if labels.shape.rank == probabilities.shape.rank:  # [B, K] rows (MixUp, CutMix)
            return crossentropy(tf.cast(labels, probabilities.dtype), probabilities)
        return crossentropy(tf.one_hot(labels, num_classes), probabilities)

    return loss if class_weights is None else weighted_by_class(loss, class_weights)


def weighted_by_class(loss_fn: Callable, class_weights: np.ndarray) -> Callable:
    """``loss_fn`` times the weight of each example's class: gathered by label, or
    ``sum(soft * class_weights)`` for soft label rows (MixUp, CutMix).

    The train step still divides the sum by the global batch size, as Keras does with a
    ``sample_weight`` (not by the sum of the weights, as PyTorch's ``weight=`` does): each
    replica needs no other replica's weights, and balanced weights average 1 over an
    epoch, so the loss keeps its scale and the learning rate its meaning.
    """
    weights = tf.constant(class_weights, tf.float32)

    def weighted(labels, probabilities):
        if labels.shape.rank == probabilities.shape.rank:  # [B, K] soft or one-hot rows
            per_example = tf.reduce_sum(tf.cast(labels, tf.float32) * weights, axis=-1)
        else:
            per_example = tf.gather(weights, tf.reshape(tf.cast(labels, tf.int32), [-1]))
        return tf.reshape(tf.cast(loss_fn(labels, probabilities), tf.float32), [-1]) * per_example

    return weighted


def _class_ids(labels, probabilities):
    """Integer labels, whether given as ids or as one-hot (or smoothed) rows."""
    if labels.shape.rank == probabilities.shape.rank:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(labels, tf.int32), [-1])


def is_multilabel(model) -> bool:
    """Whether the model has a sigmoid per class (``task="multilabel"``)."""
    return getattr(model, "task", "multiclass") == "multilabel"


def _readable(labels, probabilities, multilabel: bool = False):
    """(labels safe to feed the loss, float mask): label -1 marks an image that could not be
    decoded (the data room keeps its place in the batch so batches stay aligned); it counts
    in no loss, accuracy or image count. Multilabel rows: a row of -1s (all zeros is a
    readable image without labels)."""
    if multilabel:
        valid = tf.reduce_min(labels, axis=-1) >= 0
        return tf.maximum(labels, 0), tf.cast(valid, tf.float32)
    if labels.shape.rank == probabilities.shape.rank:  # [B, K] rows: all zeros unreadable
        return labels, tf.cast(tf.reduce_sum(labels, axis=-1) > 0, tf.float32)
    valid = tf.reshape(labels, [-1]) >= 0
    return tf.maximum(labels, 0), tf.cast(valid, tf.float32)


def _replica_gradients(model, optimizer, loss_fn: Callable, images, labels,
                       global_batch_size: int | None, accumulate_steps: int
                       ) -> tuple[list, tuple]:
    """(loss-scaled gradients, (loss sum, correct, count)) of one replica's batch.

    The loss is averaged over the global batch times the batches accumulated into
    one update, so summed gradients are those of the mean loss over the effective
    batch (a short last batch or group gives a smaller step: each image weighs
    the same); regularizers count once per update.
    """
    batch = global_batch_size or tf.shape(images)[0] * (
        tf.distribute.get_strategy().num_replicas_in_sync)
    with tf.GradientTape() as tape:
        probabilities = model(images, training=True)
        safe_labels, valid = _readable(labels, probabilities, is_multilabel(model))
        per_example = valid * tf.cast(tf.reshape(loss_fn(safe_labels, probabilities), [-1]),
                                      tf.float32)
        loss = tf.nn.compute_average_loss(per_example,
                                          global_batch_size=batch * accumulate_steps)
        if model.losses:  # regularizers, divided across replicas and accumulated batches
            loss += tf.nn.scale_regularization_loss(
                tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
            ) / accumulate_steps
        scaled = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled, model.trainable_variables)
    correct = tf.reduce_sum(_hits(model, safe_labels, probabilities) * valid)
    return gradients, (tf.reduce_sum(per_example), correct, tf.reduce_sum(valid))


def _hits(model, labels, probabilities):
    """Per example: 1.0 for a right top class; multilabel: the share of classes right at the
    model's threshold (so the accuracy column is the per-label accuracy)."""
    if is_multilabel(model):
        predicted = tf.cast(probabilities >= model.threshold, tf.float32)
        return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.float32)),
                                      tf.float32), axis=-1)
    predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, _class_ids(labels, probabilities)), tf.float32)


def clip_global_norm(gradients: list, clipnorm: float, loss_scale) -> list:
    """This replica's gradients scaled so that their sum over replicas has norm <= clipnorm.

    Our own rather than Keras' ``global_clipnorm``: Keras clips each replica's
    share before its all-reduce, so under a strategy the update differed from one
    device's (observed on two CPU replicas). The norm is taken of the summed
    gradients (one extra all-reduce, only with several replicas) and every
    replica multiplies its share by the same factor, so the optimizer's sum is the
    clipped gradient. ``loss_scale``: float16's scale, which the gradients carry.
    """
    context = tf.distribute.get_replica_context()
    summed = gradients
    if context is not None and context.num_replicas_in_sync > 1:
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    norm = tf.linalg.global_norm(summed)
    clipped, _ = tf.clip_by_global_norm(gradients, clipnorm * loss_scale, use_norm=norm)
    return clipped


def _apply(optimizer, gradients: list, variables: list, clipnorm: float | None) -> None:
    """One update: clip (optional), then the optimizer (all-reduce, loss scale, EMA)."""
    if clipnorm is not None:
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        gradients = clip_global_norm(gradients, clipnorm, scale)
    optimizer.apply_gradients(zip(gradients, variables, strict=True))


def _replica_step(model, optimizer, loss_fn: Callable, global_batch_size: int | None,
                  clipnorm: float | None):
    """One training step on one replica's batch -> (loss sum, correct, count) of that batch."""

    def step(images, labels):
        gradients, sums = _replica_gradients(model, optimizer, loss_fn, images, labels,
                                             global_batch_size, 1)
        _apply(optimizer, gradients, model.trainable_variables, clipnorm)
        return sums

    return step


class _Accumulation:
    """Gradient accumulation: per-replica sums in variables, applied once per group.

    Our own rather than Keras' ``gradient_accumulation_steps``: Keras applies
    inside a ``cond`` in the replica context, which MirroredStrategy refuses
    (merge_call inside a cond: a RuntimeError, observed), and its learning-rate
    schedule counts batches, not updates. Here the group loop runs in the
    cross-replica context and each replica keeps its own sum (ON_READ variables).
    A group always ends inside one compiled call, so the sums are zero between
    calls and no checkpoint needs them.
    """

    def __init__(self, model, optimizer, loss_fn: Callable, strategy, steps: int,
                 global_batch_size: int | None, clipnorm: float | None) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.steps, self.global_batch_size, self.clipnorm = steps, global_batch_size, clipnorm
        self.variables = list(model.trainable_variables)
        with strategy.scope():
            self.sums = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                     synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.SUM)
                         for v in self.variables]

    def add(self, images, labels):
        """Replica function: add this batch's gradients to the sums -> the batch's totals."""
        gradients, totals = _replica_gradients(self.model, self.optimizer, self.loss_fn,
                                               images, labels, self.global_batch_size,
                                               self.steps)
        for total, gradient in zip(self.sums, gradients, strict=True):
            if gradient is not None:
                total.assign_add(gradient)
        return totals

    def apply(self):
        """Replica function: one update from the sums, which then start again at zero."""
        gradients = [tf.identity(total.read_value()) for total in self.sums]
        _apply(self.optimizer, gradients, self.variables, self.clipnorm)
        for total in self.sums:
            total.assign(tf.zeros_like(total.read_value()))


def updates_per_epoch(batches_per_epoch: int, accumulate_steps: int) -> int:
    """Optimizer updates in an epoch: a short last group still makes one."""
    return math.ceil(batches_per_epoch / accumulate_steps)


def make_train_function(
    model,
    optimizer,
    loss_fn: Callable,
    *,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_call: int = 1,
    jit_compile: bool = False,
    global_batch_size: int | None = None,
    accumulate_steps: int = 1,
    clipnorm: float | None = None,
) -> Callable:
    """A compiled function ``train(iterator, batches=None) -> (loss_sum, correct, count)``.

    Each call runs up to ``steps_per_call`` updates, each from ``accumulate_steps``
    of the (images, labels) batches ``iterator`` yields, stopping early when it
    ends or after ``batches`` batches (an int32 tensor: where an epoch ends in an iterator
    over the whole run; a short last group is still applied), and returns float32 scalars
    summed over the batches and replicas; ``count == 0`` means the iterator was
    already exhausted. ``loss_fn(labels, probabilities)`` returns per-example
    losses (labels as ids or one-hot). ``strategy``: the one the model and
    optimizer were made under (default: the current one); the iterator then comes
    from ``strategy.experimental_distribute_dataset``. ``global_batch_size``: one
    batch's size over all replicas (default: the replica batch times the
    replicas); the loss is averaged over it times ``accumulate_steps``. ``loss_fn`` and
    the model are called without AutoGraph: Python ``if``s in them may test Python values
    (shapes, settings), not tensors (use ``tf.cond``/``keras.ops.cond`` for those).
    ``clipnorm``: clip each update's gradient to this global norm. ``jit_compile``
    compiles the per-replica step with XLA (slower than oneDNN on a CPU; turn it
    on for GPUs). Trains the variables trainable when it is made: make a new one
    after freezing or unfreezing layers.
    """
    if steps_per_call < 1 or accumulate_steps < 1:
        raise ValueError(f"`steps_per_call` and `accumulate_steps` must be >= 1. Received: "
                         f"{steps_per_call!r}, {accumulate_steps!r}")
    strategy = strategy or tf.distribute.get_strategy()
    if not optimizer.built:  # slots made here, not lazily inside the traced function
        with strategy.scope():
            optimizer.build(model.trainable_variables)

    def compiled(fn):
        fn = tf.autograph.experimental.do_not_convert(fn)  # see _plain_train
        return tf.function(fn, jit_compile=True, reduce_retracing=True) if jit_compile else fn

    @tf.autograph.experimental.do_not_convert
    def run_step(fn, images, labels):
        sums = strategy.run(fn, args=(images, labels))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    if accumulate_steps == 1:
        step = compiled(_replica_step(model, optimizer, loss_fn, global_batch_size, clipnorm))
        return _plain_train(step, steps_per_call, run_step)
    return _accumulating_train(
        _Accumulation(model, optimizer, loss_fn, strategy, accumulate_steps, global_batch_size,
                      clipnorm), strategy, steps_per_call, compiled, run_step)


def _plain_train(step, steps_per_call: int, run_step) -> Callable:
    """``train(iterator)`` of ``steps_per_call`` steps, one batch and one update each.

    Only this loop goes through autograph (its ``for``/``break`` on tensors); the step
    and everything it calls branch on Python values alone and are marked not to be
    converted: converting them took ~0.7 s of the first step (ResNet on a folder,
    measured with bench/first_step.py), on every new run and every retrace.
    """

    @tf.function
    def train(iterator, batches=None):
        loss_sum, correct, count = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(steps_per_call if batches is None
                          else tf.minimum(steps_per_call, batches)):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            images, labels = batch.get_value()[:2]
            step_loss, step_correct, step_count = run_step(step, images, labels)
            loss_sum += step_loss
            correct += step_correct
            count += step_count
        return loss_sum, correct, count

    return train


def _accumulating_train(acc: _Accumulation, strategy, steps_per_call: int, compiled,
                        run_step) -> Callable:
    """``train(iterator)`` of ``steps_per_call`` updates of ``acc.steps`` batches each."""
    add, apply = compiled(acc.add), compiled(acc.apply)

    @tf.function
    def train(iterator, batches=None):
        loss_sum, correct, count = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        left = tf.constant(steps_per_call * acc.steps) if batches is None else batches
        for _ in tf.range(steps_per_call):
            taken = tf.constant(0)
            for _ in tf.range(tf.minimum(acc.steps, left)):
                batch = iterator.get_next_as_optional()
                if not batch.has_value():
                    break
                images, labels = batch.get_value()[:2]
                step_loss, step_correct, step_count = run_step(add, images, labels)
                loss_sum += step_loss
                correct += step_correct
                count += step_count
                taken += 1
            left -= taken
            if taken > 0:  # in the cross-replica context: MirroredStrategy allows this cond
                strategy.run(apply)
            if taken < acc.steps:
                break
        return loss_sum, correct, count

    return train


def make_eval_step(model, loss_fn: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step(batch) -> (loss_sum, confusion)``, each summed over the replicas.

    ``confusion`` is the batch's int32 [K, K] matrix (rows true, columns predicted),
    made on the device so the caller adds batches up there and reads one matrix per
    evaluation; label -1 (an unreadable image) adds no loss and no count.
    A multilabel model: ``(loss_sum, probabilities [B, K], labels [B, K])``, the batch's
    rows gathered from every replica (mAP needs every score; rows of -1 are unreadable).
    """
    multilabel = is_multilabel(model)

    def replica_step(images, labels):
        probabilities = model(images, training=False)
        safe_labels, valid = _readable(labels, probabilities, multilabel)
        per_example = valid * tf.cast(loss_fn(safe_labels, probabilities), tf.float32)
        if multilabel:
            return tf.reduce_sum(per_example), probabilities, tf.cast(labels, tf.float32)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        confusion = tf.math.confusion_matrix(
            _class_ids(safe_labels, probabilities), predicted,
            num_classes=probabilities.shape[-1], weights=tf.cast(valid, tf.int32),
            dtype=tf.int32)
        return tf.reduce_sum(per_example), confusion

    @tf.function(reduce_retracing=True, autograph=False)  # Python branches only
    def step(batch):
        images, labels = batch
        sums = strategy.run(replica_step, args=(images, labels))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, sums[0], axis=None)
        if multilabel:
            return loss, strategy.gather(sums[1], axis=0), strategy.gather(sums[2], axis=0)
        return loss, strategy.reduce(tf.distribute.ReduceOp.SUM, sums[1], axis=None)

    return step
