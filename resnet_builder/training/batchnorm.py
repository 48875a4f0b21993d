"""Batch norm in training: the fused kernel, replica-averaged statistics, synchronized BN.

Measured on a 2-core AVX512 CPU (bench/README.md), ResNet-56 bottleneck, batch
128: Keras 3's BatchNormalization runs as ~10 element-wise ops per direction
(55% of the step's op time); ``fuse_batch_norm`` routes training through
TensorFlow's ``FusedBatchNormV3`` and makes the step 1.6-1.8x faster, with the
same weights and saved files. The other helpers keep the batch-norm moving
statistics equal on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import tensorflow as tf


def batchnorm_layers(layer) -> Iterator[keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` layer inside ``layer`` (nested models included)."""
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            yield sub
        else:
            yield from batchnorm_layers(sub)


def _fused_bn_call(layer):
    """``layer.call`` through TensorFlow's fused batch-norm kernel.

    Keras 3's BatchNormalization computes ``tf.nn.moments`` and
    ``tf.nn.batch_normalization`` as separate element-wise ops (about ten
    passes over the activations, forward and backward, plus casts to float32
    under mixed precision); ``FusedBatchNormV3`` does each direction in one
    kernel, and Grappler fuses it with a following ReLU. Same weights, same
    moving-average rule (the kernel's unbiased batch variance is turned back
    into the biased one Keras keeps). Masks, renorm, synchronized BN and
    anything but 4-D inputs normalised over axis 1 or 3 keep Keras' own code.
    """
    keras_call = type(layer).call.__get__(layer)
    axis = layer.axis if isinstance(layer.axis, int) else None

    def call(inputs, training=None, mask=None):
        if (mask is not None or layer.renorm or layer.synchronized or len(inputs.shape) != 4
                or axis not in (1, 3, -1)):
            return keras_call(inputs, training=training, mask=mask)
        x = inputs
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        channels = x.shape[axis]
        gamma = (tf.cast(layer.gamma, tf.float32) if layer.scale
                 else tf.ones([channels], tf.float32))
        beta = (tf.cast(layer.beta, tf.float32) if layer.center
                else tf.zeros([channels], tf.float32))
        data_format = "NCHW" if axis == 1 else "NHWC"
        if not (training and layer.trainable):  # inference: normalise with the moving statistics
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(layer.moving_mean, tf.float32),
                variance=tf.cast(layer.moving_variance, tf.float32), epsilon=layer.epsilon,
                is_training=False, data_format=data_format)
            return tf.cast(y, layer.compute_dtype)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=layer.epsilon, is_training=True, data_format=data_format)
        n = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
        variance = variance * ((n - 1.0) / tf.maximum(n, 2.0))  # unbiased -> biased (Keras)
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + tf.cast(mean, layer.moving_mean.dtype)
                                 * (1.0 - m))
        layer.moving_variance.assign(layer.moving_variance * m
                                     + tf.cast(variance, layer.moving_variance.dtype) * (1.0 - m))
        return tf.cast(y, layer.compute_dtype)

    return call


def fuse_batch_norm(model) -> int:
    """Make every BatchNormalization in ``model`` use the fused kernel; returns how many.

    Only the layers' ``call`` changes (an attribute on each layer object):
    weights, config and saved files stay exactly Keras' BatchNormalization.
    Run it once, before the train function is traced.
    """
    count = 0
    for layer in batchnorm_layers(model):
        if type(layer) is keras.layers.BatchNormalization and "call" not in vars(layer):
            layer.call = _fused_bn_call(layer)
            count += 1
    return count


def synchronize_batchnorm(model) -> None:
    """Switch every BatchNormalization layer to global-batch statistics (Keras' own option)."""
    for layer in batchnorm_layers(model):
        layer.synchronized = True


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
