"""Run folders: naming, layout, results.csv and finding a trained model.

This module is the one place that knows where things live inside a run
folder (``RunPaths``) and how runs are named (``exp``, ``exp2``, ... as in
ultralytics). Files are written through ``files.py``: atomically, so a run killed
at any moment leaves each file either old or new, never torn.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shlex
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_builder.errors import UserError
from resnet_builder.files import atomic_write_text, temporary_for

# Where each command puts its output folders by default (ultralytics' runs/<task>/exp layout).
DEFAULT_PROJECTS = {"train": "runs/train", "predict": "runs/predict",
                    "evaluate": "runs/evaluate", "export": "runs/export"}
TRAIN_PROJECT = DEFAULT_PROJECTS["train"]

RESULTS_COLUMNS = ["epoch", "time", "lr", "loss", "accuracy", "val_loss", "val_accuracy",
                   "val_balanced_accuracy", "val_macro_f1"]
# A multilabel run's (model.task): accuracy is the per-label accuracy at the threshold;
# mAP over the classes, micro and macro F1 at the threshold.
MULTILABEL_RESULTS_COLUMNS = ["epoch", "time", "lr", "loss", "accuracy", "val_loss", "val_map",
                              "val_micro_f1", "val_macro_f1"]


def multilabel_rows(rows: Iterable[dict[str, Any]]) -> bool:
    """Whether results.csv rows are a multilabel run's: they carry ``val_map``."""
    return any("val_map" in row for row in rows)


def results_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The results.csv columns of these rows."""
    return MULTILABEL_RESULTS_COLUMNS if multilabel_rows(rows) else RESULTS_COLUMNS


def _member(name: str, doc: str) -> property:
    return property(lambda self: self.root / name, doc=doc)


@dataclass(frozen=True)
class RunPaths:
    """Every file of a training run, by role (the one place that says where each lives)."""

    root: Path

    config = _member("config.yaml", "The config the run trains with (resume reads it).")
    results = _member("results.csv", "One row per completed epoch.")
    summary = _member("summary.json", "Status, best epoch, speed and set-up.")
    last = _member("last.keras", "The model after the latest epoch.")
    best = _member("best.keras", "The model of the best epoch by train.monitor.")
    checkpoint = _member("checkpoint.npz", "Everything resuming needs, in one atomically "
                         "written file (see training/checkpoint.py).")
    curves = _member("curves.png", "Loss, accuracy and learning rate per epoch.")
    confusion_matrix = _member("confusion_matrix.png", "Validation, at the best epoch.")
    tensorboard = _member("tensorboard", "TensorBoard event files.")
    skipped = _member("skipped.csv", "Image files that could not be read, with the reason.")


def skipped_csv_text(rows: Iterable[tuple[str, str]]) -> str:
    """skipped.csv: one (path, reason) row per file left out (train, predict, evaluate, pack)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(rows)
    return buf.getvalue()


def skipped_lines(rows: Sequence[tuple[str, str]], shown: int, *, word: str = "",
                  rest: str = "") -> list[str]:
    """The first ``shown`` (path, reason) rows as indented lines and a count of the others:
    how every command names the files it left out (skipped.csv holds them all)."""
    lines = [f"  {word}{path}: {reason}" for path, reason in rows[:shown]]
    if len(rows) > shown:
        lines.append(f"  ... and {len(rows) - shown} more{rest}")
    return lines


def write_skipped_csv(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    atomic_write_text(path, skipped_csv_text(rows))


def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rewrite results.csv whole (atomically) from the rows so far."""
    rows = list(rows)
    columns = results_columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def is_folder_name(name: str) -> bool:
    """One folder under a project: "a/b" failed when made, "" numbered runs 2, 3, ... and
    "." or ".." put a run (and what --exist-ok clears) in the project or above it."""
    return name.strip() not in ("", ".", "..") and "/" not in name and "\\" not in name


def resume_command(run_dir: str | os.PathLike) -> str:
    """The command that resumes ``run_dir``, quoted so it can be pasted (``my runs/exp``)."""
    return f"resnet-builder train --resume {shlex.quote(str(run_dir))}"


def new_run_dir(project: str | os.PathLike, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or ``name2``, ``name3``... when taken (unless ``exist_ok``).

    The folder is created with ``exist_ok=False`` and the next number is tried
    on a clash, so two runs started at the same moment never share a folder.
    """
    if not is_folder_name(name):
        raise UserError(f"--name {name!r} is not a folder name",
                        hint="give a plain name such as exp; put the folders above it in "
                             "--project", exit_code=2)
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        path = project / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    taken = {p.name for p in project.iterdir()}
    number = 1
    while True:
        candidate = name if number == 1 else f"{name}{number}"
        if candidate not in taken:
            try:
                (project / candidate).mkdir()
                return project / candidate
            except FileExistsError:  # another run took it between the listing and now
                pass
        number += 1


UNSTARTED = {"config.yaml", ".lock"}  # what a new run folder holds before it trains


def remove_unstarted_run(root: Path) -> None:
    """Remove a new run's folder when the run failed before training (a weights file that
    does not fit, say): left behind, it took the name and the next run became ``name2``.
    Anything else in it (a result, a checkpoint, a user's file) keeps it."""
    with contextlib.suppress(OSError):
        if {entry.name for entry in root.iterdir()} <= UNSTARTED:
            for name in UNSTARTED:
                (root / name).unlink(missing_ok=True)
            root.rmdir()


def clear_earlier_run(root: Path) -> list[str]:
    """Remove an earlier run's files from a folder a new run reuses (``run.exist_ok``), so
    its checkpoint is never resumed as this run's, nor its best.keras taken for this run's
    model; returns their names. Only the files a run writes (``RunPaths``, W&B's wandb/)
    are touched."""
    paths = RunPaths(root)
    members = [getattr(paths, name) for name, value in vars(RunPaths).items()
               if isinstance(value, property)]
    return sorted(remove_entries([*members, root / "wandb"]))  # W&B's files of that run too


def remove_entries(paths: Iterable[Path]) -> list[str]:
    """Delete each file or folder that exists (a link itself, not what it points to);
    returns the names of those removed, in order."""
    removed = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


@contextlib.contextmanager
def holding_run(root: Path) -> Iterator[None]:
    """One training process per run folder: an advisory lock (``flock``) on ``<run>/.lock``,
    released by the system when the process ends, even by kill -9 (no stale lock to clear).
    Two ``--resume`` of one run both trained into it, interleaving its files. Where there
    is no ``fcntl`` (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".lock", "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{root} is in use: another training process is writing it",
                            hint="let it finish (or stop it), or train a new run (another "
                                 "--name)", exit_code=2) from None
        except OSError as exc:  # NFS without a lock daemon (ENOLCK), some FUSE mounts
            warnings.warn(f"cannot lock {root} ({exc.strerror}): nothing stops a second "
                          "process from training into it", UserWarning, stacklevel=3)
        else:  # the folder is ours alone: what a killed writer left half-written goes
            for entry in root.iterdir():
                if temporary_for(entry.name) and entry.is_file():
                    entry.unlink(missing_ok=True)
        yield


def output_folder(output: str | os.PathLike | None, project: str | os.PathLike, name: str,
                  exist_ok: bool = False) -> Path:
    """``output`` as given (created if needed), else a new run folder under ``project``."""
    if output is None:
        return new_run_dir(project, name, exist_ok)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def latest_run(project: str | os.PathLike = TRAIN_PROJECT) -> Path:
    """The run folder under ``project`` whose model (best or last) was written most recently:
    a resumed run that did not improve rewrote only last.keras, and is still the newest."""
    project = Path(project)
    models = {p: _run_model(p) for p in project.glob("*") if p.is_dir()} if project.exists() else {}
    runs = [p for p, model in models.items() if model is not None]
    if not runs:
        raise UserError(f"no trained run with a model was found under {project}",
                        hint="train one first (resnet-builder train configs/digits.yaml) or "
                             "pass --model PATH")
    return max(runs, key=_newest_model_time)


def _newest_model_time(run: Path) -> float:
    paths = RunPaths(run)
    return max(model.stat().st_mtime for model in (paths.best, paths.last) if model.exists())


def _run_model(run: Path) -> Path | None:
    """A run folder's best model, else its last one, else None."""
    paths = RunPaths(run)
    return next((model for model in (paths.best, paths.last) if model.exists()), None)


def model_path(source: str | os.PathLike) -> Path:
    """A ``.keras`` file as given, or a run folder's best (else last) model."""
    source = Path(source)
    if source.is_dir():
        model = _run_model(source)
        if model is not None:
            return model
        raise UserError(f"run folder {source} has no best.keras or last.keras",
                        hint="train it first, or pass a .keras file")
    if not source.exists():
        raise UserError(f"model {source} does not exist",
                        hint="pass a .keras file or a run folder (runs/train/exp)")
    return source
