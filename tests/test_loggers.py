"""run.loggers: csv, tensorboard, MLflow (a local sqlite store) and W&B (offline mode)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from click.testing import CliRunner

import resnet_builder
from resnet_builder.cli import main
from resnet_builder.config import dump_config, load_config
from resnet_builder.errors import ConfigError, UserError
from resnet_builder.training.loggers import active_loggers
from resnet_builder.training.resume import check_overrides

TINY = [
    "model.depth=8", "model.block_type=basic", "data.source=digits", "data.image_size=8",
    "data.channels=1", "data.batch_size=50", "data.limit=150", "optim.optimizer=adam",
    "optim.lr=0.01", "train.epochs=2", "run.progress=none", "run.plots=true",
    "hardware.seed=0",
]


def tiny(project: Path, *extra: str):
    return load_config(None, [*TINY, f"run.project={project}", *extra])


def test_default_loggers_and_the_older_tensorboard_switch():
    assert active_loggers(load_config(None).run) == ("csv", "tensorboard")
    off = load_config(None, ["run.tensorboard=false"])
    assert active_loggers(off.run) == ("csv",)
    twice = load_config(None, ["run.loggers=[wandb, csv, wandb]"])
    assert active_loggers(twice.run) == ("wandb", "csv")
    check_overrides(["run.loggers=[csv, mlflow]"])  # a resumed run may log elsewhere


def test_a_bad_logger_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 1\nrun:\n  loggers: [csv, tensorbord]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:4: run.loggers[1] must be one of csv, tensorboard, mlflow, wandb" in message
    assert "did you mean 'tensorboard'" in message
    with pytest.raises(ConfigError, match=r"run\.loggers must be a list of strings"):
        load_config(None, ["run.loggers=mlflow"])


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One tiny run with tensorboard, MLflow and W&B on and csv off."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    tmp = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # MLflow's default artifact folder, ./mlruns, lands here
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.delenv("WANDB_PROJECT", raising=False)
        for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                            "WANDB_DIR": tmp / "wandb_dir", "WANDB_CONFIG_DIR": tmp / "wandb_cfg",
                            "WANDB_CACHE_DIR": tmp / "wandb_cache",
                            "WANDB_DATA_DIR": tmp / "wandb_data"}.items():
            mp.setenv(name, str(value))
        cfg = tiny(tmp / "proj", "run.loggers=[tensorboard, mlflow, wandb]")
        return tmp, resnet_builder.train(cfg)


def test_mlflow_gets_params_metrics_per_epoch_and_artifacts(logged):
    import mlflow

    tmp, result = logged
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("proj")  # run.project's last folder
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == result.run_dir.name == "exp"
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "8"
    assert run.data.params["run.loggers"] == "[tensorboard, mlflow, wandb]"
    for key in ("loss", "val_accuracy", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [row["epoch"] for row in result.history]
        assert [m.value for m in history] == pytest.approx([row[key] for row in result.history])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.keras", "last.keras", "config.yaml", "summary.json", "curves.png"} <= artifacts
    assert "results.csv" not in artifacts  # csv is not in run.loggers


def test_wandb_offline_run_is_written_in_the_run_folder(logged):
    _, result = logged
    (record,) = (result.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"proj" in data and b'"loggers":["tensorboard","mlflow","wandb"]' in data
    assert repr(result.history[-1]["val_accuracy"]).encode() in data


def test_tensorboard_gets_the_results_columns_and_csv_can_be_left_out(logged):
    _, result = logged
    assert not (result.run_dir / "results.csv").exists()
    (events,) = (result.run_dir / "tensorboard").glob("events.out.tfevents.*")
    seen = {(value.tag, event.step) for event in tf.compat.v1.train.summary_iterator(str(events))
            for value in event.summary.value}
    assert {("val_accuracy", 2), ("loss", 1), ("lr", 2), ("time", 1)} <= seen


def test_a_server_failing_mid_run_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    """MLflow refusing epoch 2's numbers must not end a run that trains fine: one warning,
    the logger stops, the run finishes and is still closed on the server. Params go in
    batches MLflow accepts (at most 100 each; 10 here, so several)."""
    mlflow = pytest.importorskip("mlflow")
    from resnet_builder.training import loggers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(loggers, "MLFLOW_PARAMS_PER_BATCH", 10)
    real = mlflow.MlflowClient.log_batch
    sizes = []

    def flaky(self, run_id, metrics=(), params=(), **kwargs):
        sizes.append(len(params))
        if metrics and metrics[0].step >= 2:
            raise mlflow.exceptions.MlflowException("503 Service Unavailable")
        return real(self, run_id, metrics=metrics, params=params, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", flaky)
    with pytest.warns(UserWarning, match=r"MLflow logging failed \(epoch 2: MlflowException"):
        result = resnet_builder.train(tiny(tmp_path / "proj", "run.loggers=[csv, mlflow]",
                                           "train.epochs=3"))
    assert result.summary["status"] == "finished" and len(result.history) == 3
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    assert run.info.status == "FINISHED"  # closed at the end all the same
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1]
    assert len(run.data.params) > 10 and max(sizes) == 10  # every param, 10 a batch
    assert sizes.count(0) == 2  # epochs 1 and 2 tried; epoch 3 not, once it had failed
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") is None  # quick tries undone


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_extra_is_named_before_anything_runs(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(UserError) as info:
        resnet_builder.train(tiny(tmp_path / "proj", f"run.loggers=[csv, {name}]"))
    assert f'pip install "resnet-builder[{name}]"' in info.value.hint
    assert info.value.exit_code == 2
    assert not (tmp_path / "proj").exists()  # no run folder, no data read


def test_a_tracking_uri_mlflow_refuses_is_a_user_error_up_front(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://x")
    with pytest.raises(UserError, match="MLflow cannot use the tracking URI 'nosuch://x'"):
        resnet_builder.train(tiny(tmp_path / "proj", "run.loggers=[mlflow]"))
    assert not (tmp_path / "proj").exists()


def test_cli_names_the_missing_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    path = tmp_path / "cfg.yaml"
    dump_config(tiny(tmp_path / "proj"), path)
    result = CliRunner().invoke(main, ["train", str(path), "--set", "run.loggers=[mlflow]"])
    assert result.exit_code == 2, result.output
    assert 'pip install "resnet-builder[mlflow]"' in result.output
    assert "Traceback" not in result.output


def test_importing_the_trainer_imports_neither_extra():
    code = ("import sys, resnet_builder, resnet_builder.training.api\n"
            "print(sorted(m for m in ('mlflow', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_tracking_server_that_does_not_answer_is_named_at_once(tmp_path, monkeypatch):
    """MLflow's own retries kept such a run waiting about 4 minutes, then failed after the
    set-up; one quick try now refuses it before any data is read."""
    import time

    pytest.importorskip("mlflow")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"tracking server http://127.0.0.1:{port} refused or "
                                        "did not answer a first request") as err:
        resnet_builder.train(tiny(tmp_path / "proj", "run.loggers=[csv, mlflow]"))
    assert time.perf_counter() - start < 30 and err.value.exit_code == 2
    assert not (tmp_path / "proj").exists()  # before any run folder
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # its own settings restored
