"""The compiled training and evaluation steps, run through a ``tf.distribute`` strategy.

Our own step rather than ``model.fit``: Keras 3's ``fit`` breaks under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), and a compiled step
is where the speed is. Each replica averages its loss over the *global*
batch (``tf.nn.compute_average_loss``) so gradients summed across replicas
equal the single-device gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def make_loss(num_classes: int, label_smoothing: float) -> Callable:
    """Per-example cross-entropy on probabilities, with optional label smoothing."""
    crossentropy = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                        reduction=None)

    def loss(labels, probabilities):
        return crossentropy(tf.one_hot(labels, num_classes), probabilities)

    return loss


def _reduce_sum(strategy: tf.distribute.Strategy, values):
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]


def make_train_step(model, optimizer, loss_fn: Callable, strategy: tf.distribute.Strategy,
                    global_batch_size: int, *, jit_compile: bool = False) -> Callable:
    """``step(batch) -> (loss_sum, correct, count)`` summed over replicas.

    Trains only the variables trainable when it is made; make a new step
    after freezing or unfreezing layers.
    """
    variables = model.trainable_variables
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = loss_fn(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.reduce_sum(per_example), correct, count

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(batch):
        images, labels = batch
        return _reduce_sum(strategy, strategy.run(replica_step, args=(images, labels)))

    return step


def make_eval_step(model, loss_fn: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step(batch) -> (loss_sum, predictions, labels)``, predictions gathered from replicas."""

    def replica_step(images, labels):
        probabilities = model(images, training=False)
        per_example = loss_fn(labels, probabilities)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return tf.reduce_sum(per_example), predicted, labels

    @tf.function(reduce_retracing=True)
    def step(batch):
        images, labels = batch
        loss, predicted, truth = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.gather(predicted, axis=0), strategy.gather(truth, axis=0))

    return step


def batchnorm_layers(layer):
    """Every ``BatchNormalization`` layer inside ``layer`` (nested models included)."""
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            yield sub
        else:
            yield from batchnorm_layers(sub)


def make_moving_stats_sync(model, strategy: tf.distribute.Strategy) -> Callable[[], None]:
    """``sync()`` averages the batch-norm moving statistics over all replicas.

    Keras 3 creates them without an aggregation, so under a strategy each
    replica (on several machines: each worker) tracks its own from its share
    of the batches, and the workers' models drift apart. The moving average
    is linear, so averaging the replicas' copies once per epoch gives exactly
    the statistics of averaging every step (what tf.keras 2 did), at the cost
    of one all-reduce per epoch. A no-op on one replica.
    """
    variables = [v for layer in batchnorm_layers(model)
                 for v in (layer.moving_mean, layer.moving_variance)]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return lambda: None

    def replica_step():
        ctx = tf.distribute.get_replica_context()
        means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value)
                                                              for v in variables])
        for var, mean in zip(variables, means, strict=True):
            var.assign(mean)  # no aggregation: each replica sets its own copy

    @tf.function
    def sync():
        strategy.run(replica_step)

    return sync
