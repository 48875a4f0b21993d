"""What the benchmarks measure the machine with, and the settings they compare.

Only ``bench`` and the scripts in ``bench/`` use these; the trainer does not.
``matmul_gflops`` is the yardstick (how close to the hardware a step is);
``recommended_settings`` sums up what bench/README.md measured; ``with_dtype_policy``
makes a bfloat16 / float16 copy of a float32 model for the training variants.
"""

from __future__ import annotations

import time

import tensorflow as tf


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
    wrong = [layer.name for layer in _all_layers(copy)
             if layer.weights and layer.dtype_policy.name != policy
             and layer.name != "predictions"]  # the classifier keeps float32 probabilities
    if wrong:
        raise ValueError(f"{type(model).__name__}'s config fixes layer dtypes ({wrong[:3]}...); "
                         f"cannot rebuild it under {policy!r}")
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(layer):
    """Every layer inside ``layer``, nested models included (public ``layers`` only)."""
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _all_layers(sub)
