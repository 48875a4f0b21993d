"""The trainer: run folders, repeatability, resume (also after SIGKILL), stops, transfer."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from resnet_builder.cli import main
from resnet_builder.config import dump_config, load_config
from resnet_builder.errors import UserError
from resnet_builder.training import api as trainer
from resnet_builder.training import loop
from resnet_builder.training.checkpoint import read_meta
from resnet_builder.training.setup import resolve_precision

TINY = [
    "model.depth=8", "model.block_type=basic", "model.bn_momentum=0.9",
    "data.source=digits", "data.image_size=8", "data.channels=1", "data.batch_size=50",
    "data.limit=300", "augment.random_crop_padding=1",
    "optim.optimizer=adam", "optim.lr=0.01", "schedule.type=cosine",
    "train.epochs=3", "run.progress=line", "hardware.seed=0",
]


def tiny_config(tmp_path: Path, *extra: str, name: str = "exp"):
    return load_config(None, [*TINY, f"run.project={tmp_path / 'runs'}", f"run.name={name}",
                              *extra])


def results(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    return trainer.train(tiny_config(tmp))


def test_run_folder_has_every_file(finished):
    run = finished.run_dir
    for name in ("config.yaml", "results.csv", "last.keras", "best.keras", "checkpoint.npz",
                 "curves.png", "confusion_matrix.png", "summary.json"):
        assert (run / name).stat().st_size > 0, name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    rows = results(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "time", "lr", "loss", "accuracy", "val_loss",
                             "val_accuracy", "val_balanced_accuracy", "val_macro_f1"]
    summary = json.loads((run / "summary.json").read_text())
    for key in ("best_epoch", "best_val_accuracy", "epochs_completed", "wall_seconds",
                "train_images_per_second"):
        assert summary[key] is not None, key
    assert summary["epochs_completed"] == 3 and summary["status"] == "finished"
    best = max(float(r["val_accuracy"]) for r in rows)
    assert summary["best_val_accuracy"] == pytest.approx(best, rel=1e-5)
    saved = load_config(run / "config.yaml")
    assert saved.model.num_classes == 10 and saved.train.epochs == 3


def test_best_model_carries_classes_and_preprocessing(finished):
    model = keras.models.load_model(finished.run_dir / "best.keras")
    assert model.class_names == [str(i) for i in range(10)]
    assert model.mean is not None and model.image_shape == (8, 8, 1)


def test_learns_digits(finished):
    assert finished.summary["best_val_accuracy"] > 0.5  # 3 tiny epochs on 300 images


def test_same_seed_gives_same_results_csv(tmp_path, finished):
    again = trainer.train(tiny_config(tmp_path))
    assert without_time(results(again.run_dir)) == without_time(results(finished.run_dir))


def test_run_names_auto_increment(tmp_path):
    first = trainer.train(tiny_config(tmp_path, "train.epochs=1"))
    second = trainer.train(tiny_config(tmp_path, "train.epochs=1"))
    assert (first.run_dir.name, second.run_dir.name) == ("exp", "exp2")


def test_exist_ok_replaces_the_earlier_runs_files_so_none_is_taken_for_this_run(tmp_path, capsys):
    """The second run keeps no validation split (no best.keras) and is interrupted before any
    checkpoint: the first run's best.keras and checkpoint must not pose as its own."""
    first = trainer.train(tiny_config(tmp_path, "train.epochs=1")).run_dir

    class InterruptAtOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(UserError):
        trainer.train(tiny_config(tmp_path, "run.exist_ok=true", "data.validation_split=0",
                                  "model.stem_filters=8", "train.epochs=1"),
                      callbacks=[InterruptAtOnce()])
    said = capsys.readouterr().out
    assert f"run.exist_ok: {first} held an earlier run; removed its best.keras" in said
    assert not (first / "best.keras").exists() and not (first / "checkpoint.npz").exists()
    assert not (first / "results.csv").exists()
    resumed = trainer.resume(first)  # the second run, from its start: not the first's epoch 1
    assert [r["epoch"] for r in results(first)] == ["1"]
    assert resumed.summary["epochs_completed"] == 1 and not (first / "best.keras").exists()
    assert load_config(first / "config.yaml").model.stem_filters == 8


def test_resume_finished_run_says_so_and_extension_continues(tmp_path, finished, capsys):
    cfg = tiny_config(tmp_path, "train.epochs=2")
    run = trainer.train(cfg).run_dir
    with pytest.raises(UserError, match="already finished its 2 epochs"):
        trainer.resume(run)
    with pytest.raises(UserError, match=r"has trained 2 of its 2 epochs; train\.epochs=1 leaves"):
        trainer.resume(run, ("train.epochs=1",))  # was "already finished", not why
    extended = trainer.resume(run, ("train.epochs=3",))
    assert "schedule is recomputed for 3" in capsys.readouterr().out
    assert [r["epoch"] for r in results(run)] == ["1", "2", "3"]
    assert extended.summary["epochs_completed"] == 3
    assert load_config(run / "config.yaml").train.epochs == 3


def test_resume_without_the_checkpoint_of_a_trained_run_refuses_to_start_it_again(tmp_path):
    run = trainer.train(tiny_config(tmp_path, "train.epochs=1")).run_dir
    (run / "checkpoint.npz").unlink()
    before = (run / "results.csv").read_text()
    with pytest.raises(UserError, match=r"has no checkpoint\.npz, but it has trained") as err:
        trainer.resume(run, ("train.epochs=2",))
    assert "results.csv, last.keras, best.keras" in err.value.message
    assert (run / "results.csv").read_text() == before  # nothing overwritten


def test_a_run_folder_another_process_trains_in_is_refused(tmp_path):
    """Two resumes of one run both trained into it, interleaving best/last.keras and leaving
    config.yaml and results.csv at odds; --exist-ok could clear a folder in use."""
    from resnet_builder import runs

    run = trainer.train(tiny_config(tmp_path, "train.epochs=1")).run_dir
    before = sorted(p.name for p in run.iterdir())
    with runs.holding_run(run):  # as the other process does
        with pytest.raises(UserError, match="is in use: another training process"):
            trainer.resume(run, ("train.epochs=2",))
        with pytest.raises(UserError, match="is in use"):
            trainer.train(tiny_config(tmp_path, "run.exist_ok=true"))
        assert sorted(p.name for p in run.iterdir()) == before  # nothing cleared
    assert trainer.resume(run, ("train.epochs=2",)).summary["epochs_completed"] == 2


def test_resume_of_a_stopped_run_asking_for_fewer_epochs_says_what_it_trained(tmp_path,
                                                                              capsys):
    """1 of 3 epochs trained (as if stopped), resumed with train.epochs=1: not "finished"."""
    run = trainer.train(tiny_config(tmp_path, "train.epochs=1")).run_dir
    dump_config(load_config(run / "config.yaml", ["train.epochs=3"]), run / "config.yaml")
    with pytest.raises(UserError) as err:
        trainer.resume(run, ("train.epochs=1",))
    assert "has trained 1 of its 3 epochs; train.epochs=1 leaves none" in err.value.message
    assert "resume without --set train.epochs" in err.value.hint and err.value.exit_code == 2
    dump_config(load_config(run / "config.yaml", ["train.epochs=4"]), run / "config.yaml")
    trainer.resume(run, ("train.epochs=2",))  # 4 -> 2, above the 1 trained: shortened
    assert "shortening " in capsys.readouterr().out


def test_resume_refuses_a_config_yaml_edited_since_its_checkpoint(tmp_path):
    """--set optim.lr is refused on resume; the same change typed into config.yaml trained
    on without a word (val accuracy fell from 0.91 to 0.40 in the audit)."""
    run = trainer.train(tiny_config(tmp_path, "train.epochs=1")).run_dir
    original = (run / "config.yaml").read_text()
    edited = load_config(run / "config.yaml", ["optim.lr=0.5", "train.epochs=3"])
    dump_config(edited, run / "config.yaml")  # train.epochs may change; optim.lr may not
    with pytest.raises(UserError, match=r"config\.yaml was edited since its checkpoint: "
                                        r"optim\.lr: 0\.5 \(trained with 0\.01\)") as err:
        trainer.resume(run)
    assert err.value.exit_code == 2 and "train.epochs" not in err.value.message
    (run / "config.yaml").write_text(original)
    assert trainer.resume(run, ("train.epochs=2",)).summary["epochs_completed"] == 2


def test_a_run_started_from_a_donor_that_moved_resumes(tmp_path, finished):
    """Its model.weights file is read only by a new run: a resume starts from the checkpoint
    (it failed on the missing donor, and fixing the path was refused as an edit)."""
    donor = tmp_path / "donor.keras"
    shutil.copy(finished.run_dir / "best.keras", donor)
    run = trainer.train(tiny_config(tmp_path, "train.epochs=1",
                                    f"model.weights={donor}")).run_dir
    donor.unlink()
    assert trainer.resume(run, ("train.epochs=2",)).summary["epochs_completed"] == 2
    moved = tmp_path / "moved.keras"
    assert trainer.resume(run, ("train.epochs=3", f"model.weights={moved}")).summary[
        "epochs_completed"] == 3


def test_resume_refuses_model_changes(tmp_path, finished):
    with pytest.raises(UserError, match="cannot change when resuming"):
        trainer.resume(finished.run_dir, ("model.depth=14",))


def test_resume_may_change_how_it_reports_checkpoints_and_caches_not_the_data():
    from resnet_builder.training.resume import check_overrides

    check_overrides(["run.log_every=3", "train.checkpoint_every=5min", "data.cache=disk",
                     "data.path=/moved/here"])
    for key in ("data.limit=100", "data.batch_size=8", "hardware.seed=1"):
        with pytest.raises(UserError, match="cannot change when resuming"):
            check_overrides([key])


def test_a_resume_that_moves_where_crops_are_cut_or_changes_epoch_steps_says_so(
        tmp_path):
    """data.cache may change on resume, but a random resized crop is cut from each file when
    streamed and from the resized image when cached: other pixels, so a note."""
    from PIL import Image

    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data
    from resnet_builder.training.resume import data_change, data_shape

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (12, 10), (40 * i, 9, 9)).save(tmp_path / label / f"{i}.png")

    def shape(cache: bool, crop: dict | None = None) -> dict:
        data = DataConfig(source="folder", path=str(tmp_path), image_size=8, cache=cache)
        bundle = load_data(data, AugmentConfig(random_resized_crop=crop), seed=0)
        return data_shape(bundle, random_crop=bool(crop))

    crop = {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]}
    streamed, cached = shape(False, crop), shape(True, crop)
    assert (streamed["crops_from"], cached["crops_from"]) == ("files", "resized images")
    assert "random resized crops were cut from the files, now from the resized images: " \
           "data.cache decides, with the cache budget" in data_change(streamed, cached)
    assert data_change(streamed, shape(False, crop)) is None
    assert data_change(shape(False), shape(True)) is None  # no crop: the same pixels
    old_checkpoint = {k: v for k, v in streamed.items() if k != "crops_from"}
    assert data_change(old_checkpoint, cached) is None  # recorded before crops_from
    # a packed dataset resumed on another number of workers: other steps per epoch
    before, after = {**streamed, "steps": 16}, {**streamed, "steps": 20}
    assert "steps per epoch 16 -> 20, the learning-rate schedule recomputed for them" \
        in data_change(before, after)
    assert data_change(streamed, after) is None  # recorded before steps


def random_image_folder(root: Path, per_class: int) -> np.random.Generator:
    """Classes a and b of random 8x8 PNGs -> the generator, to draw more images alike."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                root / label / f"{i}.png")
    return rng


def test_a_run_with_a_relative_data_path_resumes_from_another_folder(tmp_path, monkeypatch,
                                                                    capsys):
    """data.path is kept as typed (``images``): resumed from elsewhere, the error says it is
    relative and how to give it in full; given in full, the files skipped so far are the
    same files (skipped.csv lists each once, and the resume does not name them again)."""
    random_image_folder(tmp_path / "images", 8)
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    run = trainer.train(tiny_config(tmp_path, "data.source=folder", "data.path=images",
                                    "data.channels=3", "train.epochs=1")).run_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UserError, match=r"data.path images in .* is relative to the folder "
                                        r"the run was trained from") as refused:
        trainer.resume(run, ("train.epochs=2",))
    assert f"--resume {run} --set data.path=/full/path" in refused.value.hint
    capsys.readouterr()
    trainer.resume(run, ("train.epochs=2", f"data.path={tmp_path / 'images'}"))
    assert "broken.png" not in capsys.readouterr().out  # named in epoch 1 already
    with open(run / "skipped.csv") as f:
        assert [row["path"] for row in csv.DictReader(f)] == [
            str(tmp_path / "images" / "a" / "broken.png")]


def test_resume_from_a_moved_folder_goes_on_and_says_when_the_data_differs(tmp_path, capsys):
    import shutil

    from PIL import Image

    rng = random_image_folder(tmp_path / "images", 10)
    cfg = tiny_config(tmp_path, "data.source=folder", f"data.path={tmp_path / 'images'}",
                      "data.channels=3", "train.epochs=1")
    run = trainer.train(cfg).run_dir
    shutil.move(tmp_path / "images", tmp_path / "moved")
    trainer.resume(run, ("train.epochs=2", f"data.path={tmp_path / 'moved'}"))
    assert "the data differs" not in capsys.readouterr().out
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(tmp_path / "moved/a/new.png")
    trainer.resume(run, ("train.epochs=3",))
    out = capsys.readouterr().out
    assert "note: the data differs from what this run trained on so far (val images 4 -> 5)" \
        in out
    assert [r["epoch"] for r in results(run)] == ["1", "2", "3"]
    # Renamed class folders relabel the images (b's trained as a): refused, and the failed
    # resume leaves config.yaml as it was (it was written before the refusal came)
    shutil.move(tmp_path / "moved" / "a", tmp_path / "moved" / "z")
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(UserError) as err:
        trainer.resume(run, ("train.epochs=4",))
    assert err.value.exit_code == 2
    assert "the data has other classes than this run trained on (gone: a; new: z)" in \
        err.value.message and "data.path" in err.value.hint
    assert (run / "config.yaml").read_text() == config_before


def test_ctrl_c_keeps_completed_epochs_and_prints_resume_command(tmp_path, monkeypatch):
    class InterruptInEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # Keras counts epochs from 0
                raise KeyboardInterrupt

    with pytest.raises(UserError) as err:
        trainer.train(tiny_config(tmp_path), callbacks=[InterruptInEpoch2()])
    assert err.value.exit_code == 130
    run = tmp_path / "runs" / "exp"
    assert f"resnet-builder train --resume {run}" in str(err.value)
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1
    trainer.resume(run)
    assert [r["epoch"] for r in results(run)] == ["1", "2", "3"]


def test_a_callback_failing_as_training_begins_still_ends_the_run_as_failed(tmp_path):
    """Loggers start in on_train_begin (MLflow's run opens there): a failure after that must
    still reach on_train_end, or summary.json and the MLflow run stay "running"."""
    ended = []

    class Ends(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            ended.append(logs["status"])

    class FailsAtBegin(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise RuntimeError("no API key")

    with pytest.raises(RuntimeError, match="no API key"):
        trainer.train(tiny_config(tmp_path), callbacks=[Ends(), FailsAtBegin()])
    assert ended == ["failed"]
    summary = json.loads((tmp_path / "runs" / "exp" / "summary.json").read_text())
    assert summary["status"] == "failed"


def test_nan_loss_stops_with_a_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop.make_train_function

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(iterator, batches):
            calls["n"] += 1
            out = step(iterator, batches)
            return (float("nan"), out[1], out[2]) if calls["n"] > 7 else out

        return wrapped

    monkeypatch.setattr(loop, "make_train_function", poisoned)
    with pytest.raises(UserError, match=r"diverged.*epoch 2.*checkpoint \(epoch 1\)"):
        trainer.train(tiny_config(tmp_path))
    run = tmp_path / "runs" / "exp"
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_nan_loss_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    """It named 'the last good checkpoint (epoch 0)', which did not exist."""
    real = loop.make_train_function

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        return lambda iterator, batches: (float("nan"), *step(iterator, batches)[1:])

    monkeypatch.setattr(loop, "make_train_function", poisoned)
    with pytest.raises(UserError, match=r"diverged.*epoch 1, by step \d+; no checkpoint was "
                                        r"written before it"):
        trainer.train(tiny_config(tmp_path))
    assert not (tmp_path / "runs" / "exp" / "checkpoint.npz").exists()


def test_early_stopping_without_a_validation_split_is_refused(tmp_path):
    """The patience never ran out (the monitored number is never measured): the run trained
    every epoch without a word."""
    with pytest.raises(UserError, match="watches val_accuracy, but the data has no "
                                        "validation split") as err:
        trainer.train(tiny_config(tmp_path, "data.validation_split=0",
                                  "train.early_stopping_patience=1"))
    assert err.value.exit_code == 2 and not (tmp_path / "runs").exists()


def test_weights_made_nan_by_an_epochs_last_update_are_not_saved_as_good(tmp_path,
                                                                         monkeypatch):
    """The last update of epoch 2 makes the weights NaN while its loss (computed before it)
    is finite: nothing but the weights says so, and they must not become the checkpoint."""
    real = loop.make_train_function

    def poisoned(model, *args, **kwargs):
        step = real(model, *args, **kwargs)
        calls = {"n": 0}

        def wrapped(iterator, batches):
            out = step(iterator, batches)
            calls["n"] += 1
            if calls["n"] == 2:  # one call per epoch: epoch 2's last update
                model.trainable_variables[0].assign(
                    np.full(model.trainable_variables[0].shape, np.nan, np.float32))
            return out

        return wrapped

    monkeypatch.setattr(loop, "make_train_function", poisoned)
    with pytest.raises(UserError, match=r"loss or weights became NaN.*at epoch 2, by step 6"):
        trainer.train(tiny_config(tmp_path, "hardware.steps_per_call=6", "run.log_every=100"))
    run = tmp_path / "runs" / "exp"
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1
    with np.load(run / "checkpoint.npz") as saved:
        assert all(np.isfinite(saved[k]).all() for k in saved.files if k.startswith("model_"))


def test_early_stopping_then_extension(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.TrainingLoop, "evaluate",
                        lambda self: loop.Evaluation(1.0, np.eye(10, dtype=int)))
    cfg = tiny_config(tmp_path, "train.epochs=6", "train.early_stopping_patience=2")
    result = trainer.train(cfg)
    assert result.summary["status"] == "stopped_early"
    assert result.summary["epochs_completed"] == 3  # best at 1, then 2 epochs without gain
    with pytest.raises(UserError, match="stopped early after 3 of its 6 epochs") as err:
        trainer.resume(result.run_dir)
    assert "--set train.epochs=N (N > 6" in err.value.hint  # 6 is refused: not an extension
    config = (result.run_dir / "config.yaml").read_text()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(UserError, match=r"run\.loggers has mlflow"):  # fails before any set-up
        trainer.resume(result.run_dir, ("train.epochs=7", "run.loggers=[csv, mlflow]"))
    monkeypatch.delitem(sys.modules, "mlflow")
    assert (result.run_dir / "config.yaml").read_text() == config  # a failed resume keeps it
    extended = trainer.resume(result.run_dir, ("train.epochs=7",))
    assert extended.summary["epochs_completed"] == 5


def test_patience_running_out_with_the_last_epoch_is_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.TrainingLoop, "evaluate",
                        lambda self: loop.Evaluation(1.0, np.eye(10, dtype=int)))
    result = trainer.train(tiny_config(tmp_path, "train.epochs=3",
                                       "train.early_stopping_patience=2"))
    assert result.summary["status"] == "finished"  # epochs 2 and 3 stale, but 3 is the last
    with pytest.raises(UserError, match="already finished its 3 epochs"):
        trainer.resume(result.run_dir)


def test_frozen_backbone_keeps_donor_weights(tmp_path, finished, capsys):
    cfg = tiny_config(tmp_path, "train.epochs=1", "model.freeze_backbone_epochs=3",
                      f"model.weights={finished.run_dir / 'best.keras'}")
    run = trainer.train(cfg).run_dir
    # it named epochs 1-3 of a 1-epoch run
    assert "for epochs 1-1 (all of them: only the head trains)" in capsys.readouterr().out
    donor = keras.models.load_model(finished.run_dir / "best.keras")
    trained = keras.models.load_model(run / "last.keras")
    for a, b in zip(donor.backbone.weights, trained.backbone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # BN statistics included
    head = [not np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(donor.get_layer("predictions").weights,
                            trained.get_layer("predictions").weights, strict=True)]
    assert any(head)


@pytest.mark.parametrize(("switch", "seen"), [
    ("hardware.mixed_precision=bfloat16", ("bfloat16", False)),
    ("hardware.xla=true", ("float32", True)),
])
def test_mixed_precision_and_xla_switches_train(tmp_path, monkeypatch, switch, seen):
    """Each switch reaches the train function the loop compiles: the model computes in
    bfloat16, or the step is compiled with XLA."""
    compiled = []
    make = loop.make_train_function

    def spy(model, *args, **kwargs):
        compiled.append((model.compute_dtype, kwargs["jit_compile"]))
        return make(model, *args, **kwargs)

    monkeypatch.setattr(loop, "make_train_function", spy)
    result = trainer.train(tiny_config(tmp_path, "train.epochs=1", switch))
    assert compiled == [seen]
    rows = results(result.run_dir)
    assert np.isfinite(float(rows[0]["loss"]))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, finished):
    """Kill -9 a training process mid-run, resume it, and get the uninterrupted results."""
    cfg = tiny_config(tmp_path, "train.epochs=3")
    path = tmp_path / "cfg.yaml"
    dump_config(cfg, path)
    run = tmp_path / "runs" / "exp"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_builder", "train", str(path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            ckpt = run / "checkpoint.npz"
            if ckpt.exists() and read_meta(ckpt)["epochs_completed"] >= 1:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint within 240 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = read_meta(run / "checkpoint.npz")["epochs_completed"]
    assert done < 3, "the run finished before the kill; make it longer"
    out = subprocess.run([sys.executable, "-m", "resnet_builder", "train", "--resume", str(run)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert without_time(results(run)) == without_time(results(finished.run_dir))


def test_cli_train_bad_config_is_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 5\n")
    result = CliRunner().invoke(main, ["train", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml:2" in result.output and "did you mean 'epochs'" in result.output
    assert "Traceback" not in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1,\n")
    result = CliRunner().invoke(main, ["train", str(broken)])
    assert result.exit_code == 2 and "broken.yaml:" in result.output


def test_cli_train_line_progress_and_resume_messages(tmp_path):
    path = tmp_path / "cfg.yaml"
    dump_config(tiny_config(tmp_path, "train.epochs=1"), path)
    result = CliRunner().invoke(main, ["train", str(path), "--name", "cli"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    assert sum(line.startswith("epoch 1/1") for line in result.output.splitlines()) == 1
    again = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "runs" / "cli")])
    assert again.exit_code == 2 and "already finished" in again.output
    unknown = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "runs" / "cli"),
                                        "--set", "train.epoch=3"])
    assert unknown.exit_code == 2 and "did you mean 'epochs'" in unknown.output
    missing = CliRunner().invoke(main, ["train", "--resume", str(tmp_path)])
    assert missing.exit_code == 2 and "not a run folder" in missing.output


def test_sigterm_during_the_set_up_is_said_and_one_python_dropped_stops_at_step_one(
        tmp_path, monkeypatch):
    """SIGTERM's default action killed a run being set up without a word (exit 143, no
    summary.json). It is now named; and one lost in a garbage-collector callback, as Ctrl-C
    can be, still stops the loop at its first step, with a checkpoint and the resume line."""
    from resnet_builder import interrupts
    from resnet_builder.data import loading

    path = tmp_path / "cfg.yaml"
    dump_config(tiny_config(tmp_path, "train.epochs=1"), path)
    real = loading.load_data

    def terminated_while_loading(*args, dropped=False, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass
        except interrupts.Terminated:
            if not dropped:
                raise
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "load_data", terminated_while_loading)
    result = CliRunner().invoke(main, ["train", str(path), "--name", "early"])
    assert result.exit_code == 143 and "terminated (SIGTERM)" in result.output
    monkeypatch.setattr(trainer, "load_data",
                        lambda *a, **k: terminated_while_loading(*a, dropped=True, **k))
    result = CliRunner().invoke(main, ["train", str(path), "--name", "dropped"])
    assert result.exit_code == 143, result.output
    assert "stopped by SIGTERM; saved at epoch 1, step 1" in result.output
    assert "resnet-builder train --resume" in result.output
    run = tmp_path / "runs" / "dropped"
    assert read_meta(run / "checkpoint.npz")["epoch_progress"]["batches"] == 1
    assert json.loads((run / "summary.json").read_text())["status"] == "preempted"


def test_auto_precision_is_float16_only_with_a_gpu(monkeypatch):
    import tensorflow as tf

    assert resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert resolve_precision("auto") == "off"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    assert resolve_precision("auto") == "float16"


def test_a_damaged_checkpoint_is_named_not_a_traceback(tmp_path):
    """A copy cut short (BadZipFile) and a damaged array behind an intact meta both say
    which file and what to do, for the meta read and for the restore."""
    from resnet_builder.training.checkpoint import load_checkpoint, save_checkpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    whole = tmp_path / "checkpoint.npz"
    save_checkpoint(whole, model, optimizer, {"epochs_completed": 1})
    data = whole.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.npz cannot be read"):
        read_meta(cut)
    first = data.index(b"model_0.npy")  # the first array's local header; meta stays intact
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:first + 200] + bytes(b ^ 0xFF for b in data[first + 200:first + 210])
                        + data[first + 210:])
    assert read_meta(flipped)["epochs_completed"] == 1
    with pytest.raises(UserError, match=r"flipped\.npz cannot be read"):
        load_checkpoint(flipped, model, optimizer)


def test_a_finished_run_leaves_no_data_behind_in_the_process(tmp_path):
    """TensorFlow keeps every numpy_function's callable for the life of the process; ours
    held the run's data bundle (its images too), so each train() in a notebook kept its
    dataset: ~180 MB a run of 3,000 96x96 images. In memory, resized on demand, streamed
    with a broken file (the redo path) and a random resized crop."""
    import gc

    from PIL import Image

    from resnet_builder.data.bundle import DataBundle

    random_image_folder(tmp_path / "images", 6)
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "b" / "big.png")
    folder = ["data.source=folder", f"data.path={tmp_path / 'images'}", "data.channels=3",
              "data.cache=false", "augment.random_resized_crop={}"]
    for extra in ([], ["data.cache=false"], folder):
        result = trainer.train(tiny_config(tmp_path, *extra, "run.exist_ok=true"))
        assert result.summary["status"] == "finished"
        del result
        gc.collect()
        assert [o for o in gc.get_objects() if isinstance(o, DataBundle)] == []
