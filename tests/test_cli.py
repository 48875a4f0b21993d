"""The command line as a whole: error classes and exit codes, start-up cost, flag spellings."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from resnet_builder import cli
from resnet_builder.cli import main
from resnet_builder.errors import ArgumentError, UserError


def run_with(monkeypatch, error: Exception) -> click.testing.Result:
    """``resnet-builder presets`` with its table lookup raising ``error``."""

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("resnet_builder.model.presets.PRESETS", _Raising(broken))
    return CliRunner().invoke(main, ["presets"])


class _Raising(dict):
    def __init__(self, raise_it) -> None:
        super().__init__()
        self.raise_it = raise_it

    def items(self):
        self.raise_it()


def test_a_bug_is_not_reported_as_a_usage_error(monkeypatch):
    monkeypatch.delenv("RESNET_BUILDER_DEBUG", raising=False)
    result = run_with(monkeypatch, ValueError("boom"))
    assert result.exit_code == 1
    assert "ValueError: boom" in result.output and "bug" in result.output
    assert "RESNET_BUILDER_DEBUG=1" in result.output and "Traceback" not in result.output


def test_user_and_argument_errors_keep_their_exit_codes(monkeypatch):
    monkeypatch.delenv("RESNET_BUILDER_DEBUG", raising=False)
    result = run_with(monkeypatch, ArgumentError("depth must be 6n+2"))
    assert result.exit_code == 2 and "depth must be 6n+2" in result.output
    assert "bug" not in result.output
    result = run_with(monkeypatch, UserError("no such file", hint="give another", exit_code=1))
    assert result.exit_code == 1 and "hint: give another" in result.output


def test_debug_shows_the_real_exception(monkeypatch):
    monkeypatch.setenv("RESNET_BUILDER_DEBUG", "1")
    result = run_with(monkeypatch, ValueError("boom"))
    assert isinstance(result.exception, ValueError)


def test_bad_depth_is_a_usage_error_with_exit_2():
    result = CliRunner().invoke(main, ["build", "--depth", "57"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "depth 57 is not a valid ResNet depth" in result.output
    assert "nearest: 56 and 65" in result.output and "nearest: 56 and 62" in result.output


def test_no_deprecated_click_api_is_used():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = CliRunner().invoke(main, ["depths", "--max", "20"])
    assert result.exit_code == 0, result.output


def imports_of(*args: str, cwd: Path | None = None) -> tuple[int, set[str]]:
    """(exit code, modules imported) of ``python -m resnet_builder ARGS``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "resnet_builder", *args],
                         capture_output=True, text=True, timeout=120, cwd=cwd,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                              "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "resnet_builder.cli" in imported, out.stderr[-2000:]
    return out.returncode, imported


@pytest.mark.parametrize("argv", [["--help"], ["depths", "--max", "20"], ["train", "--help"],
                                  ["predict", "--help"]])
def test_python_dash_m_does_not_import_tensorflow(argv):
    code, imported = imports_of(*argv)
    assert code == 0 and not {"tensorflow", "keras"} & imported


def test_train_checks_its_config_and_predict_its_paths_before_tensorflow_starts(tmp_path):
    """TensorFlow takes ~10 s to start here: a typo or a wrong path is answered first."""
    (tmp_path / "bad.yaml").write_text("train:\n  epoch: 5\n")
    (tmp_path / "small.yaml").write_text("model:\n  preset: resnet50_v2\n"
                                         "data:\n  image_size: 16\n")
    for args in (["train", "bad.yaml"], ["train", "small.yaml"],
                 ["predict", "x", "--model", "no_such.keras"],
                 ["train", "bad.yaml", "--name", ".."]):
        code, imported = imports_of(*args, cwd=tmp_path)
        assert code == 2 and not {"tensorflow", "keras"} & imported, args


def test_train_accepts_config_as_an_option(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epoch: 5\n")  # a typo: the check runs, so the file was read
    for args in (["train", str(path)], ["train", "--config", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "did you mean 'epochs'" in result.output, args
    other = tmp_path / "other.yaml"
    other.write_text("")
    both = CliRunner().invoke(main, ["train", str(path), "--config", str(other)])
    assert both.exit_code == 2 and "give the config once" in both.output


def test_flag_choices_come_from_the_config_schema():
    from resnet_builder.config import key_specs

    options = {p.name: p for p in cli.train.params}
    assert tuple(options["progress"].type.choices) == tuple(key_specs()["run"]["progress"].choices)
    assert tuple(options["strategy"].type.choices) == tuple(
        key_specs()["distribute"]["strategy"].choices)


def test_ctrl_c_exits_130_with_one_line_not_clicks_aborted(monkeypatch):
    result = run_with(monkeypatch, KeyboardInterrupt())
    assert result.exit_code == 130 and "interrupted (Ctrl-C)" in result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output


def test_a_ctrl_c_python_dropped_is_remembered_until_the_command_ends():
    """Raised inside a garbage-collector callback, a KeyboardInterrupt is lost; the flag
    keeps it for the training loop's next step. The handler is the caller's again after."""
    import signal

    from resnet_builder.interrupts import interrupt_pending, remembering_interrupts

    before = signal.getsignal(signal.SIGINT)
    with remembering_interrupts():
        assert not interrupt_pending()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass
        except KeyboardInterrupt:
            pass  # as the garbage collector would swallow it
        assert interrupt_pending()
    assert not interrupt_pending() and signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(("error", "said", "hint"), [
    (OSError(30, "Read-only file system", "/mnt/ro/runs"),
     "cannot use /mnt/ro/runs: Read-only file system", "write somewhere you may"),
    (PermissionError(13, "Permission denied", "out/m.keras"),
     "cannot use out/m.keras: Permission denied", "write somewhere you may"),
    (FileNotFoundError(2, "No such file or directory", "gone/x.csv"),
     "cannot use gone/x.csv: No such file or directory", "check that the path and its folders"),
    (OSError(28, "No space left on device", "runs/train/3"),
     "cannot use runs/train/3: No space left on device", "free some space on that disk"),
    (MemoryError("Unable to allocate 10.1 GiB"), "out of memory (Unable to allocate 10.1 GiB)",
     "ask for a smaller model, batch or image size"),
])
def test_what_the_machine_refuses_is_named_not_called_a_bug(monkeypatch, error, said, hint):
    monkeypatch.delenv("RESNET_BUILDER_DEBUG", raising=False)
    result = run_with(monkeypatch, error)
    assert result.exit_code == 1 and said in result.output
    assert f"hint: {hint}" in result.output
    assert "bug" not in result.output and "Traceback" not in result.output
    nameless = run_with(monkeypatch, OSError("something inside"))  # no file: still a bug
    assert "this is a bug" in nameless.output


def test_the_atomic_writer_names_the_target_not_its_temporary_file(tmp_path):
    from resnet_builder.files import atomic_write_text

    target = tmp_path / "missing" / "summary.json"
    with pytest.raises(FileNotFoundError) as err:
        atomic_write_text(target, "{}")
    assert err.value.filename == str(target)
    assert not list(tmp_path.rglob(".summary*"))


@pytest.mark.parametrize("flag", [["--name", "b"], ["--project", "p"], ["--exist-ok"]])
def test_resume_refuses_the_flags_of_a_new_run_by_their_name(tmp_path, flag):
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path), *flag])
    assert result.exit_code == 2
    assert f"{flag[0]} is for a new run; --resume RUN goes on in RUN's own folder" in result.output


def test_train_name_and_project_flags_are_taken_as_typed():
    from resnet_builder.config import load_config

    for text in ("null", "lr0.1 #2", "it's", "~x", "0801"):
        cfg = load_config(None, [f"run.name={cli._quoted(text)}",
                                 f"run.project={cli._quoted('p ' + text)}"])
        assert (cfg.run.name, cfg.run.project) == (text, "p " + text)
