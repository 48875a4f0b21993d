"""Run folders: numbering that two runs started together cannot share, the layout."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from resnet_builder import runs
from resnet_builder.runs import RunPaths, new_run_dir


def test_numbering(tmp_path: Path) -> None:
    assert [new_run_dir(tmp_path, "exp").name for _ in range(3)] == ["exp", "exp2", "exp3"]
    assert new_run_dir(tmp_path, "exp", exist_ok=True).name == "exp"


def test_a_folder_taken_after_the_listing_moves_to_the_next_number(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The race: another run creates exp between our listing and our mkdir."""
    (tmp_path / "exp").mkdir()
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(()) if self == tmp_path
                        else real_iterdir(self))
    assert new_run_dir(tmp_path, "exp").name == "exp2"


def test_runs_started_together_get_different_folders(tmp_path: Path) -> None:
    made: list[Path] = []
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        made.append(new_run_dir(tmp_path, "exp"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({p.name for p in made}) == 8


def test_run_paths_name_every_file(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert paths.checkpoint == tmp_path / "checkpoint.npz"
    assert paths.best.name == "best.keras" and paths.tensorboard.name == "tensorboard"
    assert runs.TRAIN_PROJECT == runs.DEFAULT_PROJECTS["train"] == "runs/train"


def test_clear_earlier_run_removes_only_what_a_run_writes(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    for file in (paths.best, paths.checkpoint, paths.results, paths.skipped):
        file.write_text("old")
    (paths.tensorboard / "train").mkdir(parents=True)
    (paths.tensorboard / "train" / "events").write_text("old")
    (tmp_path / "wandb").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    assert runs.clear_earlier_run(tmp_path) == ["best.keras", "checkpoint.npz", "results.csv",
                                                "skipped.csv", "tensorboard", "wandb"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert runs.clear_earlier_run(tmp_path) == []


def test_the_latest_run_is_the_one_whose_best_or_last_model_is_newest(tmp_path: Path) -> None:
    older, resumed = RunPaths(tmp_path / "a"), RunPaths(tmp_path / "b")
    for paths, best, last in ((older, 300, 300), (resumed, 100, 400)):
        paths.root.mkdir()
        for model, when in ((paths.best, best), (paths.last, last)):
            model.write_text("m")
            os.utime(model, (when, when))
    assert runs.latest_run(tmp_path) == resumed.root  # by last.keras, though its best is older
    os.utime(older.best, (500, 500))
    assert runs.latest_run(tmp_path) == older.root


def test_a_folder_that_cannot_be_locked_trains_unlocked_with_a_warning(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """NFS without a lock daemon answers ENOLCK: that is not a bug, nor a reason to stop."""
    import errno
    import fcntl

    import pytest

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available"), \
            runs.holding_run(tmp_path):
        pass


def test_the_resume_command_can_be_pasted_when_the_folder_has_a_space():
    import shlex

    from resnet_builder.runs import resume_command

    command = resume_command(Path("my runs") / "exp")
    assert command == "resnet-builder train --resume 'my runs/exp'"
    assert shlex.split(command)[-1] == "my runs/exp"
    assert resume_command("runs/train/exp") == "resnet-builder train --resume runs/train/exp"


def test_a_run_folder_taken_over_loses_what_a_killed_writer_left_half_written(tmp_path):
    """kill -9 while last.keras (or checkpoint.npz) was written leaves its temporary file;
    the next process to hold the folder removes it, and nothing else."""
    for name in (".last.tmp23164-2763a4.keras", ".checkpoint.tmp9-abcdef.npz", "last.keras",
                 "my.tmp-notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with runs.holding_run(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".lock", "last.keras", "my.tmp-notes.txt"]
