"""The Python API: resnet_builder.train / resume with Keras callbacks as the seam."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

import resnet_builder
from resnet_builder.config import dump_config, load_config
from resnet_builder.errors import UserError
from resnet_builder.runs import RESULTS_COLUMNS
from resnet_builder.training.checkpoint import read_meta

TINY = [
    "model.depth=8", "model.block_type=basic", "data.source=digits", "data.image_size=8",
    "data.channels=1", "data.batch_size=50", "data.limit=200", "optim.optimizer=adam",
    "optim.lr=0.01", "train.epochs=2", "run.progress=none", "run.plots=false",
    "run.tensorboard=false", "hardware.seed=0",
]


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    dump_config(load_config(None, TINY), path)
    return path


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.epoch_logs: list[dict] = []
        self.batches = 0

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        assert {"loss", "accuracy"} <= set(logs)
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")
        self.epoch_logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.events.append(f"train_end {logs['status']}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    recorder = Recorder()
    csv_file = tmp / "keras_csv_logger.csv"
    lambdas: list[int] = []
    result = resnet_builder.train(
        config_file(tmp), overrides=[f"run.project={tmp / 'runs'}", "run.name=api",
                                     "run.log_every=1"],
        callbacks=[recorder, keras.callbacks.CSVLogger(str(csv_file)),
                   keras.callbacks.TerminateOnNaN(),
                   keras.callbacks.ModelCheckpoint(str(tmp / "keras_checkpoint.keras")),
                   keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: lambdas.append(e))])
    return result, recorder, csv_file, lambdas


def test_train_returns_the_run_and_its_history(trained):
    result, *_ = trained
    assert result.run_dir.name == "api" and (result.run_dir / "best.keras").exists()
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.best_epoch in (1, 2)
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in result.history)
    on_disk = rows(result.run_dir / "results.csv")
    assert [float(r["loss"]) for r in on_disk] == pytest.approx(
        [r["loss"] for r in result.history], rel=1e-5)


def test_callbacks_see_every_event_and_every_results_column(trained):
    result, recorder, _, lambdas = trained
    assert recorder.events == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1",
                               "epoch_end 1", "train_end finished"]
    assert recorder.batches == 2 * 4  # 200 images, batch 50, 2 epochs, read every step
    for logs in recorder.epoch_logs:  # epoch is the callback's argument, as in fit
        assert set(RESULTS_COLUMNS) - {"epoch"} <= set(logs) and "epoch" not in logs
    assert recorder.epoch_logs[-1]["val_accuracy"] == result.history[-1]["val_accuracy"]
    assert lambdas == [0, 1]
    assert isinstance(recorder.model, resnet_builder.ResNetV2Classifier)


def test_keras_csv_logger_and_model_checkpoint_work(trained):
    result, _, csv_file, _ = trained
    saved = keras.models.load_model(csv_file.parent / "keras_checkpoint.keras")
    assert saved.count_params() == keras.models.load_model(
        result.run_dir / "last.keras").count_params()
    logged = rows(csv_file)
    assert len(logged) == 2 and set(RESULTS_COLUMNS) <= set(logged[0])
    assert [row["epoch"] for row in logged] == ["0", "1"]  # Keras counts from 0
    assert [float(r["val_accuracy"]) for r in logged] == pytest.approx(
        [r["val_accuracy"] for r in result.history])


def test_a_callback_can_stop_the_run_and_it_resumes(tmp_path):
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    path = config_file(tmp_path)
    project = f"run.project={tmp_path / 'runs'}"
    stopped = resnet_builder.train(str(path), [project], callbacks=[StopAfterFirstEpoch()])
    assert stopped.summary["status"] == "stopped" and len(stopped.history) == 1
    recorder = Recorder()
    resumed = resnet_builder.resume(stopped.run_dir, callbacks=[recorder])
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert recorder.events[:2] == ["train_begin", "epoch_begin 1"]  # epoch 2, 0-based


def test_keras_early_stopping_works_in_the_loop(tmp_path):
    cfg = load_config(None, [*TINY, "train.epochs=6", f"run.project={tmp_path / 'runs'}"])
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=100.0)
    result = resnet_builder.train(cfg, callbacks=[stopper])  # no epoch improves by 100
    assert len(result.history) == 2 and result.summary["status"] == "stopped"


@pytest.mark.parametrize("callback", [keras.callbacks.BackupAndRestore("/tmp/x"),
                                      keras.callbacks.TensorBoard(),
                                      keras.callbacks.ReduceLROnPlateau()])
def test_callbacks_that_need_a_compiled_model_are_refused_with_the_alternative(tmp_path,
                                                                               callback):
    with pytest.raises(UserError, match="needs a compiled model") as err:
        resnet_builder.train(config_file(tmp_path), callbacks=[callback])
    assert err.value.hint and err.value.exit_code == 2


def test_precision_may_change_on_resume_and_auto_is_kept(tmp_path):
    """A float16 run (loss scaling, a GPU habit) resumes in float32, and back."""
    project = f"run.project={tmp_path / 'runs'}"
    first = resnet_builder.train(config_file(tmp_path),
                                 [project, "train.epochs=1", "hardware.mixed_precision=float16"])
    assert first.summary["mixed_precision"] == "float16"
    resumed = resnet_builder.resume(first.run_dir, ["train.epochs=2",
                                                    "hardware.mixed_precision=off"])
    assert resumed.summary["mixed_precision"] == "off"
    assert np.isfinite(resumed.history[-1]["loss"]) and len(resumed.history) == 2
    saved = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert saved["hardware"]["mixed_precision"] == "off"  # how the run goes on now
    auto = resnet_builder.train(config_file(tmp_path), [project, "train.epochs=1"])
    saved = yaml.safe_load((auto.run_dir / "config.yaml").read_text())
    assert saved["hardware"]["mixed_precision"] == "auto"  # re-resolved by whoever resumes
    assert auto.summary["mixed_precision"] == "off"  # what auto meant on this CPU
    with pytest.raises(UserError, match="cannot change when resuming"):
        resnet_builder.resume(auto.run_dir, ["hardware.seed=1"])


def test_confusion_matrix_comes_from_the_evaluated_labels(trained):
    result, *_ = trained
    meta = read_meta(result.run_dir / "checkpoint.npz")
    matrix = np.asarray(meta["best_confusion"])
    assert matrix.shape == (10, 10)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result.best_val_accuracy)


def test_keras_callbacks_monitoring_an_accuracy_work_without_a_compiled_model(tmp_path):
    """In mode auto Keras looks the direction up in a compiled model's metrics: the run
    failed after its first epoch with EarlyStopping(monitor="val_accuracy")."""
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), save_best_only=True,
                                           monitor="val_balanced_accuracy")
    loss = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)

    class Mine(keras.callbacks.Callback):  # its own mode and monitor: left alone
        monitor, mode = "val_loss", "auto"

    mine = Mine()
    result = resnet_builder.train(config_file(tmp_path), [f"run.project={tmp_path / 'runs'}"],
                                  callbacks=[stopper, best, loss, mine])
    assert result.summary["status"] == "finished" and (tmp_path / "best.keras").exists()
    assert (stopper.mode, best.mode, loss.mode, mine.mode) == ("max", "max", "min", "auto")


def test_a_run_leaves_the_dtype_policy_op_determinism_and_seeds_as_it_found_them(tmp_path):
    """hardware.seed seeded Python, NumPy, TensorFlow and Keras for the rest of the process:
    a random search drew the same point for every trial after the first."""
    import random

    import numpy as np
    import tensorflow as tf
    from keras.src.backend.common import global_state
    from tensorflow.python.framework import config as tf_config

    project = f"run.project={tmp_path / 'runs'}"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the user's own
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.uniform())
    random.seed(7)
    np.random.seed(7)
    tf.random.set_seed(11)
    draws = [float(tf.random.uniform([]))]
    keras_seed = global_state.get_global_attribute("global_random_seed")
    try:
        resnet_builder.train(config_file(tmp_path), [project, "train.epochs=1",
                                                     "hardware.deterministic=true"])
        draws.append(float(tf.random.uniform([])))  # TensorFlow's sequence goes on
        tf.random.set_seed(11)
        assert draws == [float(tf.random.uniform([])) for _ in range(2)]
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert not tf_config.is_op_determinism_enabled()
        assert (random.random(), np.random.uniform()) == expected  # the user's own streams
        assert global_state.get_global_attribute("global_random_seed") == keras_seed
        keras.mixed_precision.set_global_policy("float32")
        with pytest.raises(UserError):  # fails while it sets up, after the policy was set
            resnet_builder.train(config_file(tmp_path), [
                project, "hardware.mixed_precision=bfloat16",
                f"model.weights={tmp_path / 'missing.keras'}"])
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
        tf.random.set_seed(None)


def test_arguments_are_taken_as_fit_takes_them_or_named(tmp_path):
    project = f"run.project={tmp_path / 'runs'}"
    first = resnet_builder.train(config_file(tmp_path), [project, "train.epochs=1"],
                                 callbacks=None)
    again = resnet_builder.resume(first.run_dir, "train.epochs=2",  # one string: one override
                                  callbacks=keras.callbacks.TerminateOnNaN())
    assert len(again.history) == 2
    with pytest.raises(TypeError, match=r"overrides must be .section\.key=value. strings"):
        resnet_builder.train(config_file(tmp_path), 5)


def test_resume_refuses_a_folder_that_only_holds_a_users_config(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("# my notes\ntrain:\n  epochs: 1\n")
    with pytest.raises(UserError, match=r"is not a run folder: it has a config\.yaml") as err:
        resnet_builder.resume(folder)
    assert err.value.exit_code == 2
    assert (folder / "config.yaml").read_text().startswith("# my notes")


def test_threads_that_cannot_take_effect_any_more_are_named(tmp_path):
    """Thread pools are set once per process: a second run asking for other threads ran
    with the first's, silently."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has run an op in this process: its pools are set
    now = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.warns(UserWarning, match=rf"hardware.threads={now + 3} is not in force"):
        resnet_builder.train(config_file(tmp_path), [f"run.project={tmp_path / 'runs'}",
                                                     "train.epochs=1",
                                                     f"hardware.threads={now + 3}"])
