"""Resuming a run folder that lost or broke a file, or was stopped while writing one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from resnet_builder.cli import main
from resnet_builder.config import load_config
from resnet_builder.errors import UserError
from resnet_builder.training import api as trainer
from resnet_builder.training import callbacks
from resnet_builder.training.checkpoint import read_meta

TINY = ["model.depth=8", "model.block_type=basic", "data.source=digits", "data.image_size=8",
        "data.channels=1", "data.batch_size=50", "data.limit=150", "train.epochs=2",
        "run.progress=none", "run.plots=false", "run.loggers=[csv]", "hardware.seed=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    return trainer.train(load_config(None, [*TINY, f"run.project={root}"])).run_dir


def copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))


def test_a_lost_config_yaml_is_written_again_from_the_checkpoint(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    kept = (run / "config.yaml").read_text()
    (run / "config.yaml").unlink()
    result = trainer.resume(run, ("train.epochs=3",))
    assert "config.yaml was missing; written again" in capsys.readouterr().out
    assert result.summary["epochs_completed"] == 3
    assert (run / "config.yaml").read_text() == kept.replace("epochs: 2", "epochs: 3")


def test_a_folder_without_config_or_checkpoint_is_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="is not a run folder") as err:
        trainer.resume(tmp_path)
    assert err.value.exit_code == 2


def test_a_checkpoint_that_is_no_archive_is_called_damaged_without_numpys_pickle_advice(
        trained, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "checkpoint.npz").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError) as err:
        trainer.resume(run, ("train.epochs=3",))
    assert err.value.exit_code == 2
    assert "cannot be read (not a checkpoint archive)" in err.value.message
    assert "pickle" not in str(err.value)


def test_ctrl_c_while_an_epochs_files_are_written_reports_what_the_checkpoint_holds(
        tmp_path, monkeypatch):
    """Epoch 2's results.csv row was written, its checkpoint not yet: the run is resumable
    from epoch 1, and said 2 epochs were saved."""
    writes = []

    def interrupted_second_save(path, save):
        writes.append(path)
        if Path(path).name == "last.keras" and len(writes) > 1:
            raise KeyboardInterrupt
        return original(path, save)

    original = callbacks.atomic_save
    monkeypatch.setattr(callbacks, "atomic_save", interrupted_second_save)
    with pytest.raises(UserError) as err:
        trainer.train(load_config(None, [*TINY, f"run.project={tmp_path}"]))
    run = tmp_path / "exp"
    assert err.value.exit_code == 130 and "interrupted; 1 completed epoch(s) are saved" in \
        err.value.message
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["epochs_completed"], summary["best_epoch"]) == (1, 1)


def test_a_restarted_run_that_fails_to_set_up_leaves_its_config_yaml(trained, tmp_path):
    """A run killed in its first epoch (config.yaml and .lock) started again with other
    weights that do not fit: its config.yaml was rewritten before the model was made."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((trained / "config.yaml").read_text())
    (run / ".lock").touch()
    (tmp_path / "junk.weights.h5").write_text("not hdf5")
    before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match="does not fit this model"):
        trainer.resume(run, (f"model.weights={tmp_path / 'junk.weights.h5'}",))
    assert (run / "config.yaml").read_text() == before


def test_resume_given_the_checkpoint_file_names_its_folder(trained):
    result = CliRunner().invoke(main, ["train", "--resume", str(trained / "checkpoint.npz")])
    assert result.exit_code == 2
    assert f"is a file: give the run folder it is in, e.g. --resume {trained}" in result.output


def test_a_checkpoint_write_that_fails_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Disk full (or a kill) while checkpoint.npz is written: the last complete one stays,
    whole and readable, and no half-written file is left beside it."""
    import keras

    from resnet_builder import files
    from resnet_builder.training.checkpoint import save_checkpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optimizer, {"epochs_completed": 1})

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model, optimizer, {"epochs_completed": 2})
    assert read_meta(path)["epochs_completed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]
