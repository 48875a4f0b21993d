"""Grad-CAM (Selvaraju et al. 2017) of a resnet-builder classifier's top class.

The classifier nests its backbone, so the last feature map is reached by applying
the layers before it (normalisation), the backbone, then the head. The class
score is the last Dense layer's pre-softmax logit: the score before the softmax,
as the paper uses, whose gradient does not vanish when p is near 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resnet_builder.errors import UserError


def split_classifier(model: Any) -> tuple[list, Any, list]:
    """(layers before the backbone, the backbone, layers after it) of a ResNetV2Classifier."""
    backbone = getattr(model, "backbone", None)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if backbone is None or backbone not in layers:
        raise UserError("Grad-CAM needs a resnet-builder classifier (a model with a backbone)",
                        hint="run without --cam for other models")
    at = layers.index(backbone)
    return layers[:at], backbone, layers[at + 1:]


def _is_softmax_dense(layer: Any) -> bool:
    return (hasattr(layer, "kernel") and getattr(layer, "activation", None) is not None
            and getattr(layer.activation, "__name__", "") == "softmax")


def _probabilities_and_scores(last: Any, h: Any) -> tuple[Any, Any]:
    """(probabilities, per-class scores to differentiate) of the last head layer on ``h``."""
    import tensorflow as tf

    if not _is_softmax_dense(last):
        probs = tf.cast(last(h, training=False), tf.float32)
        return probs, probs
    logits = tf.matmul(tf.cast(h, tf.float32), tf.cast(last.kernel, tf.float32))
    if last.bias is not None:
        logits += tf.cast(last.bias, tf.float32)
    return tf.nn.softmax(logits), logits


def gradcam_function(model: Any, input_spec: Any) -> Callable:
    """A tf.function: raw images -> (probabilities, Grad-CAM heatmaps of the top class).

    Heatmaps are the backbone's last feature map weighted by the pooled gradients,
    rectified and scaled to a peak of 1 per image.
    """
    import tensorflow as tf

    before, backbone, head = split_classifier(model)

    @tf.function(input_signature=[input_spec])
    def cam(images):
        x = images
        for layer in before:
            x = layer(x, training=False)
        with tf.GradientTape() as tape:
            features = backbone(x, training=False)
            tape.watch(features)
            h = features
            for layer in head[:-1]:
                h = layer(h, training=False)
            probs, scores = _probabilities_and_scores(head[-1], h)
            top = tf.argmax(probs, axis=-1, output_type=tf.int32)
            score = tf.reduce_sum(tf.gather(scores, top, batch_dims=1))
        features = tf.cast(features, tf.float32)
        grads = tf.cast(tape.gradient(score, features), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        heat = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
        peak = tf.reduce_max(heat, axis=(1, 2), keepdims=True)
        return probs, tf.math.divide_no_nan(heat, peak)

    return cam
