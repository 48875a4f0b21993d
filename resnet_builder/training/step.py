"""The one compiled training step (trainer and ``bench`` alike) and the evaluation step.

Our own step rather than ``model.fit``: Keras 3's ``fit`` breaks under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), and a compiled step
is where the speed is. Each replica averages its loss over the *global*
batch (``tf.nn.compute_average_loss``), so gradients summed across replicas
equal the single-device gradient. One loss-scaling path: ``optimizer.scale_loss``
(a ``LossScaleOptimizer`` scales under float16; every other optimizer returns the
loss unchanged).

``make_train_function`` runs up to ``steps_per_call`` steps in one call (a
``tf.range`` loop in the graph), reading batches from an iterator, and returns
plain sums ``(loss_sum, correct, count)`` for epoch means.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def make_loss(num_classes: int, label_smoothing: float) -> Callable:
    """Per-example cross-entropy on probabilities and integer labels, optional smoothing."""
    crossentropy = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                        reduction=None)

    def loss(labels, probabilities):
        return crossentropy(tf.one_hot(labels, num_classes), probabilities)

    return loss


def _class_ids(labels, probabilities):
    """Integer labels, whether given as ids or as one-hot (or smoothed) rows."""
    if labels.shape.rank == probabilities.shape.rank:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(labels, tf.int32), [-1])


def _readable(labels, probabilities):
    """(labels safe to feed the loss, float mask): label -1 marks an image that could not be
    decoded (the data room keeps its place in the batch so batches stay aligned); it counts
    in no loss, accuracy or image count."""
    if labels.shape.rank == probabilities.shape.rank:  # one-hot rows: always readable
        return labels, tf.ones(tf.shape(labels)[:1], tf.float32)
    valid = tf.reshape(labels, [-1]) >= 0
    return tf.maximum(labels, 0), tf.cast(valid, tf.float32)


def _replica_step(model, optimizer, loss_fn: Callable, global_batch_size: int | None):
    """One training step on one replica's batch -> (loss sum, correct, count) of that batch."""

    def step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            safe_labels, valid = _readable(labels, probabilities)
            per_example = valid * tf.cast(tf.reshape(loss_fn(safe_labels, probabilities), [-1]),
                                          tf.float32)
            batch = global_batch_size or tf.shape(per_example)[0] * (
                tf.distribute.get_strategy().num_replicas_in_sync)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
            if model.losses:  # regularizers, divided across replicas
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(term, tf.float32) for term in model.losses]))
            scaled = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        truth = _class_ids(safe_labels, probabilities)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, truth), tf.float32) * valid)
        return tf.reduce_sum(per_example), correct, tf.reduce_sum(valid)

    return step


def make_train_function(
    model,
    optimizer,
    loss_fn: Callable,
    *,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_call: int = 1,
    jit_compile: bool = False,
    global_batch_size: int | None = None,
) -> Callable:
    """A compiled function ``train(iterator) -> (loss_sum, correct, count)``.

    Each call runs up to ``steps_per_call`` steps on the (images, labels) batches
    ``iterator`` yields, stopping early when it ends, and returns float32 scalars
    summed over the steps and replicas; ``count == 0`` means the iterator was
    already exhausted. ``loss_fn(labels, probabilities)`` returns per-example
    losses (labels as ids or one-hot). ``strategy``: the one the model and
    optimizer were made under (default: the current one); the iterator then comes
    from ``strategy.experimental_distribute_dataset``. ``global_batch_size``: what
    the loss is averaged over (default: the replica batch times the replicas).
    ``jit_compile`` compiles the per-replica step with XLA (slower than oneDNN on a
    CPU; turn it on for GPUs). Trains the variables trainable when it is made:
    make a new one after freezing or unfreezing layers.
    """
    if steps_per_call < 1:
        raise ValueError(f"`steps_per_call` must be >= 1. Received: {steps_per_call!r}")
    strategy = strategy or tf.distribute.get_strategy()
    if not optimizer.built:  # slots made here, not lazily inside the traced function
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    step = _replica_step(model, optimizer, loss_fn, global_batch_size)
    if jit_compile:
        step = tf.function(step, jit_compile=True, reduce_retracing=True)

    def run_step(images, labels):
        sums = strategy.run(step, args=(images, labels))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    @tf.function
    def train(iterator):
        loss_sum, correct, count = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(steps_per_call):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            images, labels = batch.get_value()[:2]
            step_loss, step_correct, step_count = run_step(images, labels)
            loss_sum += step_loss
            correct += step_correct
            count += step_count
        return loss_sum, correct, count

    return train


def make_eval_step(model, loss_fn: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step(batch) -> (loss_sum, predictions, labels)``, both gathered from the replicas.

    Predictions and labels come back in the same order, so a confusion matrix
    pairs them correctly under any strategy; label -1 (an unreadable image) adds no
    loss, and the caller leaves it out of the counts.
    """

    def replica_step(images, labels):
        probabilities = model(images, training=False)
        safe_labels, valid = _readable(labels, probabilities)
        per_example = valid * tf.cast(loss_fn(safe_labels, probabilities), tf.float32)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return tf.reduce_sum(per_example), predicted, labels

    @tf.function(reduce_retracing=True)
    def step(batch):
        images, labels = batch
        loss, predicted, truth = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.gather(predicted, axis=0), strategy.gather(truth, axis=0))

    return step
