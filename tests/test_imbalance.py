"""Class imbalance: data.class_weight, data.sampler: balanced, train.monitor, and the
balanced accuracy / macro F1 that results.csv and evaluate report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from resnet_builder import scores
from resnet_builder.cli import main
from resnet_builder.config import dump_config, load_config
from resnet_builder.data import load_data
from resnet_builder.data.balance import class_weight_vector
from resnet_builder.errors import UserError
from resnet_builder.training import api as trainer
from resnet_builder.training.state import RunState
from resnet_builder.training.step import make_eval_step, make_loss, make_train_function

TINY = [
    "model.depth=8", "model.block_type=basic", "model.bn_momentum=0.9",
    "data.source=digits", "data.image_size=8", "data.channels=1", "data.batch_size=50",
    "data.limit=300", "optim.optimizer=adam", "optim.lr=0.01", "schedule.type=cosine",
    "train.epochs=3", "run.progress=line", "hardware.seed=0",
]
LABELS = np.array([0] * 42 + [1] * 15 + [2] * 5)  # 62 training images, imbalanced


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def coded_npz(tmp_path: Path) -> Path:
    """Training images whose first pixel is their index, so batches tell which were read."""
    x = np.zeros((len(LABELS), 8, 8), np.uint8)
    x[:, 0, 0] = np.arange(len(LABELS))
    path = tmp_path / "coded.npz"
    np.savez(path, x_train=x, y_train=LABELS, x_val=x[[0, 42, 57]], y_val=np.array([0, 1, 2]),
             class_names=np.array(["cat", "dog", "eel"]))
    return path


def coded_bundle(path: Path, *extra: str, seed: int = 0):
    cfg = load_config(None, ["data.source=npz", f"data.path={path}", "data.image_size=8",
                             "data.channels=1", *extra])
    return load_data(cfg.data, cfg.augment, seed)


def read_ids(dataset) -> np.ndarray:
    """The training indices of an epoch's batches, in order (first pixel of each image)."""
    ids = [images[:, 0, 0, 0].numpy().astype(np.int64) for images, _ in dataset]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- class weights


def test_class_weight_vectors_balanced_and_mapping(tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    counts = np.bincount(LABELS)
    balanced = class_weight_vector("balanced", ["cat", "dog", "eel"], counts)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=LABELS)
    assert balanced.dtype == np.float32 and balanced == pytest.approx(expected, rel=1e-6)
    assert float(np.mean(balanced[LABELS])) == pytest.approx(1.0)  # loss keeps its scale
    assert class_weight_vector({"dog": 3.0}, ["cat", "dog", "eel"], None).tolist() == [1, 3, 1]
    assert class_weight_vector(None, ["cat", "dog"], counts) is None
    # a class without training images is never weighted (it keeps 1), and the others are
    # scikit-learn's weights over the classes present, so the loss still keeps its scale
    labels = np.array([0] * 6 + [2] * 2)
    present = class_weight_vector("balanced", ["a", "b", "c"], np.bincount(labels, minlength=3))
    assert present[[0, 2]] == pytest.approx(
        compute_class_weight("balanced", classes=np.array([0, 2]), y=labels), rel=1e-6)
    assert present[1] == 1.0 and float(np.mean(present[labels])) == pytest.approx(1.0)
    bundle = coded_bundle(coded_npz(tmp_path), "data.class_weight={eel: 0.5, cat: 2}")
    assert bundle.class_weights.tolist() == [2.0, 1.0, 0.5]
    with pytest.raises(UserError, match="zebra") as err:
        coded_bundle(coded_npz(tmp_path), "data.class_weight={zebra: 2, cat: 1}")
    assert err.value.exit_code == 2 and "cat, dog, eel" in err.value.hint


def test_unknown_class_name_is_refused_before_training(tmp_path):
    config = tmp_path / "cfg.yaml"
    dump_config(load_config(None, [*TINY, f"run.project={tmp_path / 'runs'}"]), config)
    result = CliRunner().invoke(main, ["train", str(config), "--set",
                                       "data.class_weight={3: 2.0, zebra: 1, cat: 4}"])
    assert result.exit_code == 2, result.output
    assert "zebra, cat" in result.output and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in result.output
    assert not (tmp_path / "runs" / "exp").exists()  # refused before the run folder is made


def test_weighted_loss_equals_a_hand_computation():
    weights = np.array([1.0, 2.5, 0.5], np.float32)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]],
                     np.float32)
    labels = np.array([0, 1, 2, 1])
    hand = -weights[labels] * np.log(probs[np.arange(4), labels])
    loss = make_loss(3, 0.0, weights)
    assert loss(tf.constant(labels), tf.constant(probs)).numpy() == pytest.approx(hand, rel=1e-5)
    soft = np.array([[0.6, 0.4, 0.0], [0, 1, 0], [0, 0, 1], [0.5, 0, 0.5]], np.float32)
    hand_soft = (soft @ weights) * -(soft * np.log(probs)).sum(axis=1)
    assert loss(tf.constant(soft), tf.constant(probs)).numpy() == pytest.approx(hand_soft,
                                                                                 rel=1e-5)
    # In the train step: summed over the readable images, divided by the batch size as
    # Keras' sample_weight does; label -1 (an unreadable image) stays out.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 1, -1], np.int32)
    p = model(x).numpy()
    train = make_train_function(model, keras.optimizers.SGD(0.0), loss)
    loss_sum, _, count = train(iter(tf.data.Dataset.from_tensors((x, y))))
    readable = y >= 0
    by_hand = -(weights[y[readable]] * np.log(p[readable, y[readable]])).sum()
    assert count.numpy() == 4 and loss_sum.numpy() == pytest.approx(by_hand, rel=1e-5)
    keras_mean = keras.losses.SparseCategoricalCrossentropy()(
        y[readable], p[readable], sample_weight=weights[y[readable]])
    assert loss_sum.numpy() / 4 == pytest.approx(float(keras_mean), rel=1e-5)


def test_eval_step_confusion_matrix_on_the_device_leaves_out_label_minus_one():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, -1, 1, 0], np.int32)
    step = make_eval_step(model, make_loss(3, 0.0), tf.distribute.get_strategy())
    loss_sum, confusion = step((tf.constant(x), tf.constant(y)))
    predicted = model(x).numpy().argmax(axis=1)
    expected = np.zeros((3, 3), np.int64)
    for t, q in zip(y, predicted, strict=True):
        if t >= 0:
            expected[t, q] += 1
    assert confusion.numpy().tolist() == expected.tolist()
    p = model(x).numpy()
    assert float(loss_sum) == pytest.approx(-sum(np.log(p[i, y[i]]) for i in range(6)
                                                 if y[i] >= 0), rel=1e-5)


# ----------------------------------------------------------------------------- the sampler


def test_balanced_sampler_equal_class_counts_seeded_by_seed_and_epoch(tmp_path):
    path = coded_npz(tmp_path)
    bundle = coded_bundle(path, "data.sampler=balanced")
    orders = {epoch: read_ids(bundle.train_dataset(epoch, 8)) for epoch in (0, 1)}
    for epoch, ids in orders.items():
        assert len(ids) == len(LABELS) == bundle.num_train  # the epoch keeps its length
        assert ids.tolist() == bundle.epoch_order(epoch).tolist()
        counts = np.bincount(LABELS[ids], minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == 62, counts
        times = np.bincount(ids, minlength=62)  # eel's 5 images fill ~21 places: 4 or 5 each
        assert times[57:].min() >= 4 and times[57:].max() - times[57:].min() <= 1
    assert orders[0].tolist() != orders[1].tolist()
    again = coded_bundle(path, "data.sampler=balanced")
    assert again.epoch_order(1).tolist() == orders[1].tolist()  # (seed, epoch) alone
    other_seed = coded_bundle(path, "data.sampler=balanced", seed=1)
    assert other_seed.epoch_order(1).tolist() != orders[1].tolist()
    uniform = coded_bundle(path)
    assert sorted(uniform.epoch_order(0).tolist()) == list(range(62))  # a permutation


def test_balanced_shards_cover_the_picks_once_and_resume_mid_epoch(tmp_path):
    bundle = coded_bundle(coded_npz(tmp_path), "data.sampler=balanced")
    whole = read_ids(bundle.train_dataset(2, 8))
    shards = [[images[:, 0, 0, 0].numpy().astype(np.int64) for images, _ in
               bundle.train_dataset(2, 8, shard=k, num_shards=2)] for k in range(2)]
    rebuilt = np.concatenate([np.concatenate(pair) for pair in zip(*shards, strict=True)])
    assert rebuilt.tolist() == whole.tolist()  # every place once, in the global batches
    assert read_ids(bundle.train_dataset(2, 8, first_batch=3)).tolist() == whole[24:].tolist()


# ----------------------------------------------------------------------------- monitor


def test_monitor_lower_is_better_for_val_loss_and_old_checkpoints():
    state = RunState()
    for epoch, (loss, acc) in enumerate([(1.0, 0.5), (0.6, 0.4), (0.8, 0.9)], start=1):
        state.record({"epoch": epoch, "val_loss": loss, "val_accuracy": acc}, None, last=False,
                     monitor="val_loss")
    assert (state.best_epoch, state.best_value, state.stale_epochs) == (2, 0.6, 1)
    assert state.best_val_accuracy == 0.4  # val_accuracy of the epoch val_loss chose
    old = RunState.from_meta({"history": state.history, "best_val_accuracy": 0.9,
                              "best_epoch": 3})  # a checkpoint from before train.monitor
    assert old.best_value == 0.9
    old.record({"epoch": 4, "val_accuracy": 0.95}, None, last=True)
    assert old.best_epoch == 4


class WeightsByEpoch(keras.callbacks.Callback):
    """The model's weights at each epoch's end (after the run folder is written)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [w.copy() for w in self.model.get_weights()]


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imbalance")
    cfg = load_config(None, [*TINY, f"run.project={tmp / 'runs'}", "data.class_weight=balanced",
                             "data.sampler=balanced", "train.monitor=val_loss"])
    recorder = WeightsByEpoch()
    return trainer.train(cfg, callbacks=[recorder]), recorder, cfg


def test_monitor_val_loss_picks_best_keras_and_the_summary(weighted_run):
    result, recorder, _ = weighted_run
    table = rows(result.run_dir / "results.csv")
    losses = [float(r["val_loss"]) for r in table]
    best = int(np.argmin(losses)) + 1
    assert result.best_epoch == best and result.summary["monitor"] == "val_loss"
    assert result.summary["best_value"] == pytest.approx(min(losses), rel=1e-5)
    saved = keras.models.load_model(result.run_dir / "best.keras").get_weights()
    for stored, at_best in zip(saved, recorder.weights[best], strict=True):
        np.testing.assert_array_equal(stored, at_best)


def test_results_csv_has_balanced_accuracy_and_macro_f1_as_sklearn(weighted_run):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    result, _, cfg = weighted_run
    last = rows(result.run_dir / "results.csv")[-1]
    assert list(last)[-2:] == ["val_balanced_accuracy", "val_macro_f1"]
    model = keras.models.load_model(result.run_dir / "last.keras")
    bundle = load_data(cfg.data, cfg.augment, cfg.hardware.seed)
    truth, predicted = [], []
    for images, labels in bundle.val_dataset(100):
        truth.append(labels.numpy())
        predicted.append(model(images, training=False).numpy().argmax(axis=1))
    y, p = np.concatenate(truth), np.concatenate(predicted)
    assert float(last["val_accuracy"]) == pytest.approx(accuracy_score(y, p), abs=1e-5)
    assert float(last["val_balanced_accuracy"]) == pytest.approx(
        balanced_accuracy_score(y, p), abs=1e-5)
    assert float(last["val_macro_f1"]) == pytest.approx(f1_score(y, p, average="macro"),
                                                        abs=1e-5)
    cm = np.zeros((10, 10), np.int64)
    np.add.at(cm, (y, p), 1)
    assert scores.macro_f1(cm) == pytest.approx(f1_score(y, p, average="macro"))


def test_evaluate_prints_balanced_accuracy_and_macro_f1(weighted_run, tmp_path):
    result, _, _ = weighted_run
    out = tmp_path / "eval"
    cli = CliRunner().invoke(main, ["evaluate", str(result.run_dir), "--output", str(out)])
    assert cli.exit_code == 0, cli.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"balanced accuracy {metrics['balanced_accuracy']:.3f}" in cli.output
    assert f"macro F1 {metrics['macro_f1']:.3f}" in cli.output
    best = rows(result.run_dir / "results.csv")[result.best_epoch - 1]  # best.keras's epoch
    assert metrics["balanced_accuracy"] == pytest.approx(float(best["val_balanced_accuracy"]),
                                                         abs=1e-5)
    assert metrics["macro_f1"] == pytest.approx(float(best["val_macro_f1"]), abs=1e-5)


# ----------------------------------------------------------------------------- end to end


def _make_old(run: Path) -> None:
    """Turn a run folder into one written before these columns and train.monitor existed."""
    config = run / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.strip().startswith("monitor:")))
    checkpoint = run / "checkpoint.npz"
    with np.load(checkpoint) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    new = ("val_balanced_accuracy", "val_macro_f1")
    meta["history"] = [{k: v for k, v in row.items() if k not in new}
                       for row in meta["history"]]
    meta.pop("best_value")
    meta.pop("config")  # old checkpoints did not record their config
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(checkpoint, **arrays)
    table = rows(run / "results.csv")
    with open(run / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [k for k in table[0] if k not in new], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)


def test_cli_class_weight_mapping_and_monitor_f1_then_an_older_run_resumes(tmp_path):
    config = tmp_path / "cfg.yaml"
    dump_config(load_config(None, [*TINY, f"run.project={tmp_path / 'runs'}", "train.epochs=1",
                                   "data.class_weight={7: 3.0, 1: 0.5}",
                                   "train.monitor=val_macro_f1"]), config)
    first = CliRunner().invoke(main, ["train", str(config)])
    assert first.exit_code == 0, first.output
    run = tmp_path / "runs" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["monitor"] == "val_macro_f1" and "best val_macro_f1" in first.output
    assert summary["best_value"] == pytest.approx(float(rows(run / "results.csv")[0]
                                                        ["val_macro_f1"]), rel=1e-5)
    _make_old(run)
    again = CliRunner().invoke(main, ["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert again.exit_code == 0, again.output
    table = rows(run / "results.csv")
    assert table[0]["val_macro_f1"] == "" and float(table[1]["val_macro_f1"]) > 0
    assert "best val_accuracy" in again.output  # the old run's monitor
