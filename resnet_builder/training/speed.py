"""Making training fast: fused batch norm, bfloat16, and a compiled multi-step train function.

What the measurements (``bench/README.md``) found on a 2-core AVX512 CPU,
ResNet-56 bottleneck, batch 128, relative to plain ``model.fit``:

- ``fuse_batch_norm(model)``: 1.7x. Keras 3's BatchNormalization runs as ~10
  separate element-wise ops per direction (55% of the step's op time); the
  fused kernel does each direction in one. Weights and saved files unchanged.
- ``mixed_bfloat16`` on top (CPUs with AVX512_BF16/AMX): 2.8-3.0x in all.
  ``with_dtype_policy`` makes the bf16 (or float16) copy of a float32 model and
  back, so the saved model stays float32 and runs anywhere.
- ``make_train_function``: the step the trainer runs. About as fast as ``fit``
  with the same model (1.0-1.1x); what it adds is control: several steps per
  call (a ``tf.range`` loop in the graph), any ``tf.distribute`` strategy
  (loss averaged over the *global* batch with ``tf.nn.compute_average_loss``,
  gradients all-reduced by the Keras optimizer) and plain sums back,
  ``(loss_sum, correct, count)``, for epoch means.
- XLA (``jit_compile``) is 0.7x on CPU; turn it on for GPUs, with
  ``mixed_float16``. ``recommended_settings()`` says all this in code.

``matmul_gflops`` measures the machine's float32 matrix-multiply rate, the
yardstick for how close to the hardware a step is. ``configure_cpu_threads``
sets TensorFlow's thread pools (TensorFlow's defaults were best here); it must
run before TensorFlow executes its first op.

Typical use in a trainer::

    settings = speed.recommended_settings()
    with strategy.scope():
        model = build_model(...)                      # float32: what gets saved
        net = model if settings["policy"] == "float32" else \
            speed.with_dtype_policy(model, settings["policy"])
        optimizer = keras.optimizers.SGD(lr, momentum=0.9)
        if settings["policy"] == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    if settings["fuse_batch_norm"]:
        speed.fuse_batch_norm(net)
    train = speed.make_train_function(
        net, optimizer, keras.losses.SparseCategoricalCrossentropy(reduction=None),
        strategy=strategy, steps_per_call=settings["steps_per_call"],
        jit_compile=settings["jit_compile"])
    for epoch in ...:
        it = iter(strategy.experimental_distribute_dataset(bundle.train_dataset(epoch, batch)))
        while True:
            loss_sum, correct, count = train(it)
            if count == 0:
                break
            ...                                        # progress: loss_sum / count
    model.set_weights(net.get_weights())               # float32 model for saving
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import tensorflow as tf


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX), read from /proc/cpuinfo.

    Without it oneDNN emulates bfloat16 (or TensorFlow falls back to Eigen),
    and mixed_bfloat16 training is slower than float32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def recommended_settings(device: str | None = None) -> dict:
    """What to train with on this machine: measured on the 2-core CPU in bench/README.md.

    ``device``: "cpu" or "gpu" (default: GPU if TensorFlow sees one). Returns
    ``{"policy", "fuse_batch_norm", "jit_compile", "steps_per_call"}``:

    - CPU: fused batch norm (1.7x ``fit``'s speed alone), no XLA (0.7x on
      CPU), ``mixed_bfloat16`` where the CPU has native bfloat16 (another
      1.6-1.7x), 8 steps per call (Python overhead is small either way here).
    - GPU: ``mixed_float16`` (needs a ``LossScaleOptimizer``) and XLA, which
      fuses the batch-norm arithmetic itself; fused batch norm still helps
      when XLA is off. Not measured here (no GPU): the usual advice.
    """
    if device is None:
        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if device == "gpu":
        return {"policy": "mixed_float16", "fuse_batch_norm": True, "jit_compile": True,
                "steps_per_call": 16}
    return {"policy": "mixed_bfloat16" if cpu_has_bf16() else "float32",
            "fuse_batch_norm": True, "jit_compile": False, "steps_per_call": 8}


def configure_cpu_threads(intra_op: int | None = None, inter_op: int | None = None) -> tuple:
    """Set TensorFlow's intra-op and inter-op thread pools; returns the values in force.

    ``None`` keeps TensorFlow's choice for that pool. Must be called before
    TensorFlow runs its first op; afterwards the pools are fixed, and this
    raises ``RuntimeError`` if asked to change them.
    """
    threading = tf.config.threading
    for value, getter, setter in (
        (intra_op, threading.get_intra_op_parallelism_threads,
         threading.set_intra_op_parallelism_threads),
        (inter_op, threading.get_inter_op_parallelism_threads,
         threading.set_inter_op_parallelism_threads),
    ):
        if value is None or getter() == value:
            continue
        try:
            setter(int(value))
        except RuntimeError as e:
            raise RuntimeError(
                "TensorFlow's thread pools are fixed once it has run an op; call "
                f"configure_cpu_threads before building a model ({e})"
            ) from None
    return (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads())


def matmul_gflops(seconds: float = 3.0, n: int = 2048, dtype: str = "float32") -> float:
    """This machine's matrix-multiply speed in GFLOP/s (2 n^3 FLOPs per n x n product).

    Multiplies two ``n x n`` matrices repeatedly for about ``seconds`` (after
    one warm-up product) on TensorFlow's default device, and returns the
    median rate of the products, so a short burst of other load on the machine
    moves it little.
    """
    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=dtype)
    b = tf.random.stateless_normal((n, n), seed=(3, 4), dtype=dtype)

    @tf.function
    def product(a, b):
        return tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32))

    product(a, b).numpy()  # trace and warm up
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 3:
        start = time.perf_counter()
        product(a, b).numpy()
        rates.append(2.0 * n ** 3 / (time.perf_counter() - start) / 1e9)
    rates.sort()
    return rates[len(rates) // 2]


def _replica_step(model, optimizer, loss_fn, global_batch_size):
    """One training step on one replica's batch -> (loss sum, correct, count) of that batch."""

    def step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = tf.cast(tf.reshape(loss_fn(y, probs), [-1]), tf.float32)
            batch = global_batch_size or tf.shape(per_example)[0] * (
                tf.distribute.get_strategy().num_replicas_in_sync)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
            if model.losses:  # weight decay as regularizers, divided across replicas
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(term, tf.float32) for term in model.losses]))
            scaled = optimizer.scale_loss(loss)  # mixed float16 loss scaling; else unchanged
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        if y.shape.rank == probs.shape.rank:  # one-hot (or smoothed) labels
            labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        else:  # class ids
            labels = tf.reshape(tf.cast(y, tf.int32), [-1])
        predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        count = tf.cast(tf.size(labels), tf.float32)
        return tf.reduce_sum(per_example), correct, count

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

    Each call runs up to ``steps_per_call`` training steps on batches
    ``next(iterator)`` gives ((images, integer labels) pairs), stopping early
    when the iterator ends, and returns float32 scalars summed over the steps
    and replicas: the summed per-example loss, the number of correctly
    classified examples and the number of examples. ``count == 0`` means the
    iterator was already exhausted. Epoch loss is ``loss_sum / count``.

    ``loss_fn(y_true, y_pred)`` must return per-example losses (e.g.
    ``keras.losses.SparseCategoricalCrossentropy(reduction=None)``); the model
    outputs probabilities. ``strategy``: the one the model and optimizer were
    created under (default: the current one); the iterator must then come from
    ``strategy.experimental_distribute_dataset``. ``global_batch_size``: the
    batch size the loss is averaged over (default: the replica's batch times
    the number of replicas, which also handles a smaller last batch). ``jit_compile`` compiles the
    per-replica step with XLA (slower than TensorFlow's oneDNN kernels on CPU;
    on GPU, turn it on). Mixed precision comes from the model's dtype policy,
    set when the model is built; float16 needs a ``LossScaleOptimizer``.
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

    def run_step(x, y):
        sums = strategy.run(step, args=(x, y))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    @tf.function
    def train(iterator):
        loss_sum = tf.constant(0.0)
        correct = tf.constant(0.0)
        count = tf.constant(0.0)
        for _ in tf.range(steps_per_call):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            x, y = batch.get_value()[:2]
            step_loss, step_correct, step_count = run_step(x, y)
            loss_sum += step_loss
            correct += step_correct
            count += step_count
        return loss_sum, correct, count

    return train


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
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization and "call" not in vars(layer):
            layer.call = _fused_bn_call(layer)
            count += 1
    return count


def with_dtype_policy(model, policy: str):
    """A copy of ``model`` whose layers compute under ``policy``, with the same weights.

    For training under ``"mixed_bfloat16"`` (CPUs with AVX512_BF16/AMX) or
    ``"mixed_float16"`` (GPUs) while saving, or predicting on another machine,
    in ``"float32"``: the variables are float32 under every policy, so weights
    move both ways with ``get_weights``/``set_weights``. Needs a model whose
    config carries no per-layer dtypes (``ResNetV2Classifier`` and
    ``ResNetV2Backbone`` qualify); raises ``ValueError`` otherwise.
    """
    import keras

    old = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        copy = type(model).from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy(old)
    wrong = [layer.name for layer in copy._flatten_layers(include_self=False)
             if layer.weights and layer.dtype_policy.name != policy
             and layer.name != "predictions"]  # the classifier keeps float32 probabilities
    if wrong:
        raise ValueError(f"{type(model).__name__}'s config fixes layer dtypes ({wrong[:3]}...); "
                         f"cannot rebuild it under {policy!r}")
    copy.set_weights(model.get_weights())
    return copy
