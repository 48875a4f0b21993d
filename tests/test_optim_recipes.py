"""optim.ema, optim.clipnorm and optim.accumulate_steps: end to end, on resume, on 2 replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_builder.config import load_config
from resnet_builder.data import load_data
from resnet_builder.errors import ConfigError, UserError
from resnet_builder.training import api, step
from resnet_builder.training.checkpoint import read_meta
from resnet_builder.training.schedules import build_schedule
from tests.test_loop import results
from tests.test_step import learnable_data, sparse_ce

# 140 training images, batch 20: 7 batches an epoch, so accumulate_steps=2 ends each epoch
# with a short group of one batch.
SMALL = [
    "model.depth=8", "model.block_type=basic", "model.bn_momentum=0.9",
    "data.source=digits", "data.image_size=8", "data.channels=1", "data.batch_size=20",
    "data.limit=140", "augment.random_crop_padding=1", "optim.optimizer=adam",
    "optim.lr=0.01", "schedule.type=cosine", "train.epochs=2", "run.progress=none",
    "run.plots=false", "hardware.seed=0", "hardware.steps_per_call=1",
]
RECIPE = ["optim.ema=0.6", "optim.accumulate_steps=2", "optim.clipnorm=0.5"]


def config(tmp_path: Path, *extra: str, name: str = "exp"):
    return load_config(None, [*SMALL, f"run.project={tmp_path / 'runs'}", f"run.name={name}",
                              *extra])


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def checkpoint_arrays(run: Path, prefix: str) -> list[np.ndarray]:
    with np.load(run / "checkpoint.npz") as data:
        count = sum(1 for k in data.files if k.startswith(prefix))
        return [data[f"{prefix}{i}"] for i in range(count)]


class WeightRecorder(keras.callbacks.Callback):
    """The raw weights after every update (run.log_every=1), and what each epoch ends with."""

    def __init__(self) -> None:
        super().__init__()
        self.start: list[np.ndarray] = []
        self.updates: list[list[np.ndarray]] = []  # trainable weights after each update
        self.raw: list[np.ndarray] = []  # all variables after the last update
        self.epoch_end: list[np.ndarray] = []  # all variables as the epoch's callbacks see them

    def on_train_begin(self, logs=None):
        self.start = values(self.model.trainable_variables)

    def on_train_batch_end(self, batch, logs=None):
        self.updates.append(values(self.model.trainable_variables))
        self.raw = values(self.model.variables)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end = values(self.model.variables)


def test_ema_weights_are_evaluated_and_saved_raw_weights_kept(tmp_path):
    recorder = WeightRecorder()
    result = api.train(config(tmp_path, "optim.ema=0.6", "run.log_every=1"),
                       callbacks=[recorder])
    run = result.run_dir
    manual = None  # Keras' EMA: the first update's weights, then decay 0.6 per update
    for weights in recorder.updates:
        manual = weights if manual is None else [0.6 * m + 0.4 * w
                                                 for m, w in zip(manual, weights, strict=True)]
    saved = keras.models.load_model(run / "last.keras", compile=False)
    for got, want in zip(values(saved.trainable_variables), manual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, seen in zip(values(saved.variables), recorder.epoch_end, strict=True):
        np.testing.assert_array_equal(got, seen)  # the epoch's callbacks see the EMA model
    raw = checkpoint_arrays(run, "model_")
    for got, want in zip(raw, recorder.raw, strict=True):
        np.testing.assert_array_equal(got, want)  # the checkpoint keeps the raw weights
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(raw, recorder.epoch_end,
                                                             strict=True)) > 1e-3
    # The val_* the run reports are the EMA model's: evaluate last.keras on the same split.
    cfg = config(tmp_path)
    data = load_data(cfg.data, cfg.augment, cfg.hardware.seed)
    correct = total = 0
    for images, labels in data.val_dataset(50):
        predicted = np.argmax(saved(images, training=False).numpy(), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += len(predicted)
    assert correct / total == pytest.approx(result.history[-1]["val_accuracy"], abs=1e-12)


class InterruptAt(keras.callbacks.Callback):
    """Ctrl-C at the start of epoch ``epoch`` (1-based), or right after a mid-epoch checkpoint."""

    def __init__(self, epoch: int | None = None) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch == epoch + 1:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch is None and logs.get("checkpoint"):  # the writer has saved it
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_with_ema_clipnorm_and_accumulation_is_exact(tmp_path):
    """Stopped at an epoch's end and in the middle of one, the run gives the same results.csv."""
    reference = api.train(config(tmp_path, *RECIPE, name="reference")).run_dir
    cfg = config(tmp_path, *RECIPE, "train.checkpoint_every=3", name="stopped")
    with pytest.raises(UserError):
        api.train(cfg, callbacks=[InterruptAt(epoch=2)])  # after epoch 1's EMA swap
    run = tmp_path / "runs" / "stopped"
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1
    with pytest.raises(UserError):
        api.resume(run, callbacks=[InterruptAt()])
    progress = read_meta(run / "checkpoint.npz")["epoch_progress"]
    assert progress["epoch"] == 2 and progress["batches"] in (2, 4, 6)  # a group's end
    api.resume(run)
    assert results(run) == results(reference)


def test_accumulation_counts_updates_and_applies_the_short_last_group(tmp_path):
    cfg = config(tmp_path, "optim.accumulate_steps=2")
    result = api.train(cfg)
    iterations = checkpoint_arrays(result.run_dir, "opt_")[0]
    assert int(iterations) == 2 * 4  # 7 batches an epoch: 3 pairs and 1 short group
    schedule = build_schedule(cfg.schedule, cfg.optim.lr, cfg.train.epochs, 4)
    assert [row["lr"] for row in result.history] == pytest.approx(
        [schedule.value(4 * epoch - 1) for epoch in (1, 2)])
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_clipnorm_limits_every_update(tmp_path):
    """Plain SGD (no momentum, no weight decay): each update is lr * clipped gradient."""
    recorder = WeightRecorder()
    api.train(config(tmp_path, "optim.optimizer=sgd", "optim.momentum=0", "optim.lr=0.5",
                     "optim.weight_decay=0", "schedule.type=constant", "optim.clipnorm=0.001",
                     "train.epochs=1", "run.log_every=1"), callbacks=[recorder])
    before = recorder.start
    norms = []
    for after in recorder.updates:
        norms.append(float(np.sqrt(sum(np.sum((a - b) ** 2)
                                       for a, b in zip(after, before, strict=True)))))
        before = after
    assert len(norms) == 7
    np.testing.assert_allclose(norms, 0.5 * 0.001, rtol=1e-3)


def no_bn_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("optimizer", [keras.optimizers.SGD, keras.optimizers.Adam])
def test_two_accumulated_batches_equal_one_double_batch(optimizer):
    """Batches 8+8 accumulated == one batch of 16; a short last group (8) == a short last
    batch (8 of 16): the loss is always averaged over the effective batch."""
    trained = []
    for batch, k in ((16, 1), (8, 2)):
        model = no_bn_model()
        fn = step.make_train_function(model, optimizer(0.05), sparse_ce(),
                                      global_batch_size=batch, accumulate_steps=k)
        it = iter(learnable_data(n=24, batch=batch))
        first = fn(it)
        after_first = values(model.trainable_variables)
        rest = fn(it)
        assert float(fn(it)[2]) == 0
        trained.append((first, after_first, rest, values(model.trainable_variables)))
    (one_first, one_after, _, one_end), (acc_first, acc_after, acc_rest, acc_end) = trained
    assert float(one_first[2]) == float(acc_first[2]) == 16 and float(acc_rest[2]) == 8
    np.testing.assert_allclose(float(acc_first[0]), float(one_first[0]), rtol=1e-5)
    for a, b in zip(acc_after + acc_end, one_after + one_end, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_clip_global_norm_scales_to_the_limit_and_leaves_small_gradients():
    big = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
    clipped = step.clip_global_norm(big, 1.0, 1.0)
    assert float(tf.linalg.global_norm(clipped)) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped[0].numpy(), [0.6, 0.0], rtol=1e-6)
    small = step.clip_global_norm(big, 10.0, 1.0)
    np.testing.assert_allclose(small[1].numpy(), [[4.0]])
    scaled = step.clip_global_norm([g * 8.0 for g in big], 1.0, 8.0)  # float16's loss scale
    np.testing.assert_allclose(scaled[0].numpy() / 8.0, [0.6, 0.0], rtol=1e-6)


@pytest.mark.parametrize("line, message", [
    ("ema: 1.0", "optim.ema must be in [0.5, 0.99999], got 1.0"),
    ("ema: 0", "optim.ema must be in [0.5, 0.99999], got 0"),
    ("clipnorm: 0", "optim.clipnorm must be >= 1e-08, got 0"),
    ("accumulate_steps: 0", "optim.accumulate_steps must be in [1, 1024], got 0"),
    ("accumulate_steps: 2.5", "optim.accumulate_steps must be an integer, got 2.5"),
])
def test_bad_values_are_refused_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"optim:\n  lr: 0.1\n  {line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:3" in str(err.value) and message in str(err.value)


TWO_REPLICAS = r"""
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from resnet_builder.config import load_config
from resnet_builder.training import api, step
from tests.test_optim_recipes import no_bn_model
from tests.test_step import learnable_data, sparse_ce

def train(strategy, loss_scaled):
    with strategy.scope():
        model = no_bn_model()
        opt = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.6)
        if loss_scaled:
            opt = keras.optimizers.LossScaleOptimizer(opt)
    fn = step.make_train_function(model, opt, sparse_ce(), strategy=strategy, steps_per_call=2,
                                  global_batch_size=8, accumulate_steps=2, clipnorm=0.05)
    it = iter(strategy.experimental_distribute_dataset(learnable_data(n=48, batch=8)))
    counts = [float(fn(it)[2]) for _ in range(3)]
    inner = getattr(opt, "inner_optimizer", opt)  # the moments, the EMA, the iterations
    return counts, model.get_weights() + [np.array(v.numpy()) for v in inner.variables]

if sys.argv[1] == "step":  # one MirroredStrategy per process: a second one's collectives clash
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), False)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for loss_scaled in (False, True):  # clipped, accumulated, averaged: as on one device
        two = train(mirrored, loss_scaled)
        assert one[0] == two[0] == [32.0, 16.0, 0.0], (one[0], two[0])
        for a, b in zip(one[1], two[1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
else:
    result = api.train(load_config(None, json.loads(sys.argv[1])))
    print("RESULT", json.dumps([result.summary["replicas"], result.history]))
"""


def run_on_two_replicas(arg: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, arg], cwd=root, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_replicas_clip_accumulate_and_average_as_one_device(tmp_path):
    """MirroredStrategy on two CPU devices (a fresh process can still split its CPU): the
    step matches one device's, also loss-scaled, and a run with every recipe on follows the
    one-device run (batch norm over the global batch, as test_distribute compares)."""
    run_on_two_replicas("step")
    recipe = [*RECIPE, "distribute.sync_batchnorm=true"]
    one = api.train(config(tmp_path, *recipe, "distribute.strategy=none", name="one"))
    args = [*SMALL, *recipe, "distribute.strategy=mirrored", f"run.project={tmp_path / 'runs'}",
            "run.name=two"]
    replicas, rows = json.loads(run_on_two_replicas(json.dumps(args)).stdout.split(
        "RESULT ", 1)[1])
    assert replicas == 2 and (tmp_path / "runs" / "two" / "last.keras").exists()
    for key in ("loss", "val_loss", "lr"):  # (an accuracy may differ by one image)
        np.testing.assert_allclose([r[key] for r in rows], [r[key] for r in one.history],
                                   rtol=5e-3, err_msg=key)
