"""Loggers (``run.loggers``): where each epoch's results.csv numbers go, as Keras callbacks.

csv (the run folder's results.csv) and tensorboard need nothing extra; mlflow
and wandb are optional extras, imported only when a config asks for them and
checked before anything trains (``check_loggers``), so a missing package is one
clear message rather than a failure after the first epoch. Only the chief
worker logs; other workers may set ``run.loggers: []`` (a per-worker key).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import tensorflow as tf

from resnet_builder.config import Config, RunConfig, config_to_dict
from resnet_builder.config.messages import yaml_text
from resnet_builder.errors import UserError
from resnet_builder.runs import RunPaths, results_columns, write_results
from resnet_builder.training.state import RunState

# Loggers that live in an optional extra: logger -> the module it imports.
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}
# RunState.status values of a run that ended as asked, and of one the user or machine stopped
# (MLflow: KILLED); any other end (diverged, worker_lost, data_damaged, failed) is a failure.
ENDED_WELL = ("finished", "stopped_early", "stopped")
STOPPED_FROM_OUTSIDE = ("interrupted", "preempted")
MLFLOW_PARAMS_PER_BATCH = 100  # MLflow refuses a log_batch with more params than this


def active_loggers(run: RunConfig) -> tuple[str, ...]:
    """The loggers a run uses: run.loggers without repeats, less tensorboard when the older
    key run.tensorboard is false (configs written before run.loggers existed)."""
    return tuple(name for name in dict.fromkeys(run.loggers)
                 if run.tensorboard or name != "tensorboard")


def require(name: str) -> ModuleType:
    """The optional package behind a logger, or a UserError naming the extra to install."""
    try:
        return importlib.import_module(EXTRAS[name])
    except ImportError as exc:
        raise UserError(f"run.loggers has {name}, but {EXTRAS[name]} cannot be imported ({exc})",
                        hint=f'pip install "resnet-builder[{name}]", or take {name} out of '
                             "run.loggers", exit_code=2) from None


def check_loggers(run: RunConfig) -> None:
    """Import every optional logger's package now, before any data is read or trained on, and
    open MLflow's store (a tracking URI it refuses fails here, not after the set-up)."""
    for name in active_loggers(run):
        if name in EXTRAS:
            require(name)
    if "mlflow" in active_loggers(run):
        _answering(mlflow_client())


# MLflow's own retries (7, backing off) kept a run waiting ~4 minutes on a server that was
# down; one quick try says so at once. Its settings hold only for this try.
_ONE_QUICK_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _answering(client: Any) -> None:
    """A tracking server (http/https) must answer before anything trains."""
    mlflow = require("mlflow")
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return  # a file or database store: opening the client checked it
    try:
        with one_quick_try():
            client.search_experiments(max_results=1)
    except Exception as exc:  # connection refused, timeout, HTTP error: MLflow's own types
        reason = str(exc).splitlines()[0][:300]
        raise UserError(f"MLflow's tracking server {uri} refused or did not answer a first "
                        f"request ({reason})", hint="start the server, fix "
                        "MLFLOW_TRACKING_URI or its credentials, or take mlflow out of "
                        "run.loggers", exit_code=2) from None


@contextlib.contextmanager
def one_quick_try() -> Iterator[None]:
    """MLflow's HTTP requests without retries, for 10 s at most, inside the block."""
    saved = {key: os.environ.get(key) for key in _ONE_QUICK_TRY}
    os.environ.update(_ONE_QUICK_TRY)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mlflow_client() -> Any:
    """An ``MlflowClient`` on MLflow's own tracking URI, or a UserError saying why not."""
    mlflow = require("mlflow")
    try:
        return mlflow.MlflowClient()
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(f"MLflow cannot use the tracking URI {mlflow.get_tracking_uri()!r}: "
                        f"{exc.message}", hint="set MLFLOW_TRACKING_URI to a server or a "
                        "database such as sqlite:///mlflow.db", exit_code=2) from None


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one results.csv row, without the epoch (loggers take it as the step)."""
    return {key: float(row[key]) for key in results_columns([row]) if key != "epoch"
            and isinstance(row.get(key), numbers.Real) and not isinstance(row[key], bool)}


def project_name(paths: RunPaths) -> str:
    """The last folder of run.project (``train`` for runs/train): experiment / W&B project."""
    return paths.root.resolve().parent.name or "resnet-builder"


class CsvLogger(keras.callbacks.Callback):
    """results.csv, rewritten whole from the run's history each epoch (a resumed run's too)."""

    def __init__(self, paths: RunPaths, state: RunState) -> None:
        super().__init__()
        self.paths, self.state = paths, state

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        write_results(self.paths.results, self.state.history)


class TensorBoardLogger(keras.callbacks.Callback):
    """Epoch scalars (the results.csv columns) for TensorBoard.

    Keras' own ``TensorBoard`` callback reads ``model.optimizer``, which only a
    compiled model has; our models stay uncompiled so their ``.keras`` files hold
    no optimizer state, hence this small writer over ``tf.summary``.
    """

    def __init__(self, folder: Path, state: RunState) -> None:
        super().__init__()
        self.folder, self.state, self.writer = folder, state, None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.writer = tf.summary.create_file_writer(str(self.folder))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with self.writer.as_default(step=epoch + 1):
            for key, value in epoch_metrics(self.state.history[-1]).items():
                tf.summary.scalar(key, value)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.writer is not None:
            self.writer.close()


class RemoteLogger(keras.callbacks.Callback):
    """A logger to a server (MLflow, W&B) that may fail mid-run: the failure is one warning
    and the logger stops for the rest of the run; training goes on (the run folder keeps
    every number). Starting the run stays an error, before anything trains."""

    label = ""
    broken = False

    def _guard(self, what: str, call: Callable[[], None], *, always: bool = False) -> None:
        if self.broken and not always:
            return
        try:
            call()
        except Exception as exc:  # a network or server error of any library's own type
            if not self.broken:
                warnings.warn(f"{self.label} logging failed ({what}: {type(exc).__name__}: "
                              f"{exc}); training goes on without it, and the run folder keeps "
                              "every number", UserWarning, stacklevel=2)
            self.broken = True


class MLflowLogger(RemoteLogger):
    """One MLflow run per train/resume call: the flat config as params, each epoch's numbers
    (step = epoch), and at the end the run folder's models, tables and plots as artifacts.

    Uses ``MlflowClient`` rather than ``mlflow.start_run``, so it neither needs nor
    disturbs a run the caller has active; the tracking URI is MLflow's own choice
    (MLFLOW_TRACKING_URI, ``mlflow.set_tracking_uri``, else its default store).
    """

    label = "MLflow"

    def __init__(self, cfg: Config, paths: RunPaths, state: RunState) -> None:
        super().__init__()
        self.cfg, self.paths, self.state = cfg, paths, state
        self.mlflow, self.client, self.run_id = None, None, None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.mlflow = mlflow = require("mlflow")
        self.client = mlflow_client()
        try:
            self._start_run()
        except mlflow.exceptions.MlflowException as exc:
            raise UserError(f"MLflow could not start a run at {mlflow.get_tracking_uri()!r}: "
                            f"{exc.message}", hint="check MLFLOW_TRACKING_URI and the server, "
                            "or take mlflow out of run.loggers") from None

    def _start_run(self) -> None:
        """The experiment (made when new), a run named after the run folder, its params."""
        mlflow = self.mlflow
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or project_name(self.paths)
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        tags = {"resnet_builder.run_dir": str(self.paths.root.resolve()),
                "resnet_builder.first_epoch": str(self.state.epochs_completed + 1)}
        run = self.client.create_run(experiment, run_name=self.paths.root.name, tags=tags)
        self.run_id = run.info.run_id
        params = [mlflow.entities.Param(f"{section}.{key}", yaml_text(value))
                  for section, keys in config_to_dict(self.cfg).items()
                  for key, value in keys.items()]
        for start in range(0, len(params), MLFLOW_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id,
                                  params=params[start:start + MLFLOW_PARAMS_PER_BATCH])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        millis = int(time.time() * 1000)
        metrics = [self.mlflow.entities.Metric(key, value, millis, epoch + 1)
                   for key, value in epoch_metrics(self.state.history[-1]).items()
                   if math.isfinite(value)]
        self._guard(f"epoch {epoch + 1}",
                    lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.run_id is not None:  # the server may be back: close the run if it can,
            # with one quick try if it failed before (its retries took ~4 minutes)
            with one_quick_try() if self.broken else contextlib.nullcontext():
                self._guard("the run's artifacts", self._upload, always=True)
                self._guard("the run's end", self._close, always=True)
        self.run_id = None

    def _upload(self) -> None:
        p = self.paths
        for path in (p.best, p.last, p.results, p.config, p.summary, p.curves,
                     p.confusion_matrix, p.skipped):
            if path.exists():
                self.client.log_artifact(self.run_id, str(path))

    def _close(self) -> None:
        status = self.state.status
        self.client.set_terminated(self.run_id, "FINISHED" if status in ENDED_WELL else
                                   "KILLED" if status in STOPPED_FROM_OUTSIDE else "FAILED")


class WandbLogger(RemoteLogger):
    """One W&B run per train/resume call, named after the run folder, its files in
    <run>/wandb; the config as W&B's config, each epoch's numbers at step = epoch.

    WANDB_MODE (offline, disabled), WANDB_PROJECT and the rest of W&B's variables
    apply as usual; ``reinit="create_new"`` leaves a run the caller has open alone.
    """

    label = "W&B"

    def __init__(self, cfg: Config, paths: RunPaths, state: RunState) -> None:
        super().__init__()
        self.cfg, self.paths, self.state = cfg, paths, state
        self.run = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        wandb = require("wandb")
        project = os.environ.get("WANDB_PROJECT") or project_name(self.paths)
        try:
            self.run = wandb.init(project=project, name=self.paths.root.name,
                                  config=config_to_dict(self.cfg), dir=str(self.paths.root),
                                  reinit="create_new")
        except wandb.errors.Error as exc:
            raise UserError(f"W&B could not start a run: {exc}",
                            hint="run `wandb login`, set WANDB_MODE=offline to sync later, or "
                                 "take wandb out of run.loggers") from None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {**epoch_metrics(self.state.history[-1]), "epoch": epoch + 1}
        self._guard(f"epoch {epoch + 1}", lambda: self.run.log(values, step=epoch + 1))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.run is not None:
            code = 0 if self.state.status in ENDED_WELL else 1
            self._guard("the run's end", lambda: self.run.finish(exit_code=code), always=True)
            self.run = None


def make_loggers(cfg: Config, paths: RunPaths, state: RunState
                 ) -> tuple[list[keras.callbacks.Callback], list[keras.callbacks.Callback]]:
    """(loggers that go before the run-folder writer, loggers that go after the plots).

    results.csv is written before checkpoint.npz, the epoch's commit point, as it
    was by the writer; MLflow and W&B come after the plots so the end can upload them.
    """
    names = active_loggers(cfg.run)
    before = [CsvLogger(paths, state)] if "csv" in names else []
    makers = {"tensorboard": lambda: TensorBoardLogger(paths.tensorboard, state),
              "mlflow": lambda: MLflowLogger(cfg, paths, state),
              "wandb": lambda: WandbLogger(cfg, paths, state)}
    return before, [makers[name]() for name in names if name in makers]
