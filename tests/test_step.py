"""The one training step (several steps per call), fused batch norm, the matmul yardstick."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_builder import build_model, runtime
from resnet_builder.benchmark import machine
from resnet_builder.training import batchnorm, step


def tiny_model(policy: str | None = None, seed: int = 0):
    keras.utils.set_random_seed(seed)
    old = keras.mixed_precision.global_policy().name
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        return build_model(stackwise_filters=[4, 8], stackwise_blocks=[1, 1],
                           stackwise_strides=[1, 2], block_type="bottleneck", num_classes=3,
                           input_shape=(8, 8, 3))
    finally:
        keras.mixed_precision.set_global_policy(old)


def learnable_data(n: int = 48, batch: int = 16, one_hot: bool = False):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=n).astype("int32")
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32") + y[:, None, None, None] * 1.5
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 3) if one_hot else y))
    return ds.batch(batch)


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(reduction=None)


def test_counts_and_early_stop_at_iterator_end():
    model = tiny_model()
    fn = step.make_train_function(model, keras.optimizers.SGD(0.05, momentum=0.9), sparse_ce(),
                                   steps_per_call=2)
    it = iter(learnable_data(n=40, batch=16))  # batches of 16, 16, 8
    loss, correct, count = fn(it)
    assert float(count) == 32 and 0 <= float(correct) <= 32 and float(loss) > 0
    _, _, count = fn(it)
    assert float(count) == 8  # only one batch left: the loop stops, no OutOfRangeError
    _, _, count = fn(it)
    assert float(count) == 0


def test_matches_a_plain_gradient_tape_step():
    """One step of ours == the textbook GradientTape step (mean loss, apply_gradients)."""
    a, b = tiny_model(), tiny_model()
    b.set_weights(a.get_weights())
    x, y = next(iter(learnable_data(n=16, batch=16)))
    opt_a, opt_b = keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.SGD(0.1, momentum=0.9)
    fn = step.make_train_function(a, opt_a, sparse_ce())
    loss_sum, _, count = fn(iter(tf.data.Dataset.from_tensors((x, y))))
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, b(x, training=True))
    grads = tape.gradient(loss, b.trainable_variables)
    opt_b.apply_gradients(zip(grads, b.trainable_variables, strict=True))
    np.testing.assert_allclose(float(loss_sum) / float(count), float(loss), rtol=1e-5)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("one_hot", [False, True])
def test_loss_goes_down(one_hot):
    model = tiny_model()
    loss_fn = (keras.losses.CategoricalCrossentropy(reduction=None) if one_hot else sparse_ce())
    fn = step.make_train_function(model, keras.optimizers.SGD(0.05, momentum=0.9), loss_fn,
                                   steps_per_call=3)
    data = learnable_data(one_hot=one_hot)
    first = last = None
    for _ in range(8):
        loss, correct, count = fn(iter(data))
        last = float(loss) / float(count)
        first = first or last
    assert last < 0.7 * first
    assert float(correct) / float(count) > 0.6


def test_under_a_strategy_and_with_xla():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tiny_model()
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    batchnorm.fuse_batch_norm(model)
    fn = step.make_train_function(model, optimizer, sparse_ce(), strategy=strategy,
                                   steps_per_call=4, jit_compile=True)
    it = iter(strategy.experimental_distribute_dataset(learnable_data()))
    loss, _, count = fn(it)
    assert float(count) == 48 and np.isfinite(float(loss))


def test_mixed_bfloat16_model_trains():
    model = tiny_model("mixed_bfloat16")
    batchnorm.fuse_batch_norm(model)
    fn = step.make_train_function(model, keras.optimizers.SGD(0.05, momentum=0.9), sparse_ce(),
                                   steps_per_call=3)
    loss, _, count = fn(iter(learnable_data()))
    assert float(count) == 48 and np.isfinite(float(loss))
    assert all(v.dtype == "float32" for v in model.trainable_variables)


@pytest.mark.parametrize("axis", [-1, 1])
def test_fused_batch_norm_matches_keras(axis):
    x = tf.random.stateless_normal((8, 5, 6, 4), seed=(1, 2)) * 3 + 1

    def layer():
        bn = keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-3)
        bn.build(x.shape)
        bn.gamma.assign(tf.linspace(0.5, 2.0, x.shape[axis]))
        bn.beta.assign(tf.linspace(-1.0, 1.0, x.shape[axis]))
        return bn

    plain, fused = layer(), layer()
    model = keras.Sequential([fused])
    assert batchnorm.fuse_batch_norm(model) == 1
    assert batchnorm.fuse_batch_norm(model) == 0  # already done
    w = tf.random.stateless_normal(x.shape, seed=(3, 4))
    outs, grads = [], []
    for bn in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * w)
        outs.append(y)
        grads.append(tape.gradient(loss, [x, bn.gamma, bn.beta]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    for g0, g1 in zip(*grads, strict=True):
        np.testing.assert_allclose(g0, g1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain.moving_mean, fused.moving_mean, atol=1e-6)
    np.testing.assert_allclose(plain.moving_variance, fused.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(plain(x, training=False), fused(x, training=False), atol=1e-5)
    assert fused.get_config() == plain.get_config() | {"name": fused.name}


def test_fused_model_saves_as_plain_keras(tmp_path):
    model = tiny_model()
    batchnorm.fuse_batch_norm(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    bns = [layer for layer in loaded._flatten_layers() if "bn" in layer.name]
    assert bns and all(type(b) is keras.layers.BatchNormalization for b in bns)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0),
                               atol=1e-6)


def test_matmul_gflops_and_threads():
    assert machine.matmul_gflops(seconds=0.05, n=128) > 0
    threading = tf.config.threading
    before = (threading.get_intra_op_parallelism_threads(),
              threading.get_inter_op_parallelism_threads())
    assert machine.configure_cpu_threads() == before  # None, None: reads, changes nothing
    tf.constant(1.0) + 1.0  # TensorFlow has run an op: its pools are fixed now
    with pytest.raises(RuntimeError, match="call configure_cpu_threads before"):
        machine.configure_cpu_threads(intra_op=before[0] + 1)
    assert threading.get_intra_op_parallelism_threads() == before[0]
    assert runtime.cpu_count() >= 1


def test_with_dtype_policy_round_trip():
    model = tiny_model()
    bf16 = machine.with_dtype_policy(model, "mixed_bfloat16")
    assert bf16.backbone.layers[1].dtype_policy.name == "mixed_bfloat16"
    assert bf16.layers[-1].compute_dtype == "float32"
    back = machine.with_dtype_policy(bf16, "float32")
    assert {layer.dtype_policy.name for layer in back.backbone.layers} == {"float32"}
    for u, v in zip(model.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), bf16.predict(x, verbose=0),
                               atol=0.05)


def test_fused_inference_and_xla():
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    batchnorm.fuse_batch_norm(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    fn = step.make_train_function(model, keras.optimizers.SGD(0.05), sparse_ce(),
                                   steps_per_call=2, jit_compile=True)
    loss, _, count = fn(iter(learnable_data()))
    assert float(count) == 32 and np.isfinite(float(loss))


def test_recommended_settings():
    cpu = machine.recommended_settings("cpu")
    assert cpu["fuse_batch_norm"] and not cpu["jit_compile"]
    assert cpu["policy"] == ("mixed_bfloat16" if machine.cpu_has_bf16() else "float32")
    gpu = machine.recommended_settings("gpu")
    assert gpu["policy"] == "mixed_float16" and gpu["jit_compile"]


TWO_REPLICAS = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from resnet_builder.benchmark import machine
from resnet_builder.training import batchnorm, step
from tests.test_step import learnable_data, sparse_ce

def train(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(3, activation="softmax")])
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
    fn = step.make_train_function(model, opt, sparse_ce(), strategy=strategy, steps_per_call=3)
    it = iter(strategy.experimental_distribute_dataset(learnable_data(n=48, batch=16)))
    loss, correct, count = fn(it)
    return float(loss), float(count), model.get_weights()

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process: a second
one = train(tf.distribute.OneDeviceStrategy("/cpu:0"))  # one's collectives clash with the first's
two = train(mirrored)
assert two[1] == one[1] == 48, (one[1], two[1])
assert abs(one[0] - two[0]) < 1e-4 * abs(one[0]), (one[0], two[0])
for a, b in zip(one[2], two[2], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

from tests.test_step import tiny_model  # our ResNet with fused BN on two replicas
strategy = mirrored
with strategy.scope():
    model = tiny_model()
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
batchnorm.fuse_batch_norm(model)
fn = step.make_train_function(model, opt, sparse_ce(), strategy=strategy, steps_per_call=3)
loss, _, count = fn(iter(strategy.experimental_distribute_dataset(learnable_data())))
assert float(count) == 48 and np.isfinite(float(loss))
"""


def test_two_replicas_match_one(tmp_path):
    """Loss averaged over the global batch, gradients summed: 2 replicas train as 1.

    (A model without batch norm: BN statistics are per replica by design.)
    Runs in a fresh process, which can still split its CPU into two devices.
    """
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
