"""The loop at scale: steps per call, reads every log_every steps, mid-epoch checkpoints,
SIGTERM and kill -9 in the middle of an epoch, NaN within one read interval."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resnet_builder.config import dump_config, load_config
from resnet_builder.data import DataBundle
from resnet_builder.errors import UserError
from resnet_builder.training import api, loop, preemption
from resnet_builder.training.checkpoint import read_meta
from resnet_builder.training.preemption import (
    PREEMPTED_EXIT_CODE,
    CheckpointClock,
    StopFlag,
    StopPoints,
)
from resnet_builder.training.run_inputs import RunBatches

# 400 images, batch 20: 20 steps per epoch, so there is a middle to stop in.
SMALL = [
    "model.depth=8", "model.block_type=basic", "model.bn_momentum=0.9",
    "data.source=digits", "data.image_size=8", "data.channels=1", "data.batch_size=20",
    "data.limit=400", "augment.random_crop_padding=1", "optim.optimizer=adam",
    "optim.lr=0.01", "schedule.type=cosine", "train.epochs=2", "run.progress=line",
    "run.plots=false", "run.tensorboard=false", "hardware.seed=0",
]


def config(tmp_path: Path, *extra: str, name: str = "exp"):
    return load_config(None, [*SMALL, f"run.project={tmp_path / 'runs'}", f"run.name={name}",
                              *extra])


def results(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every variant must reproduce (apart from the time column)."""
    return api.train(config(tmp_path_factory.mktemp("reference"))).run_dir


def test_clock_counts_steps_and_minutes(monkeypatch):
    clock = CheckpointClock(5)
    assert not clock.due(4) and clock.due(5)
    clock.written(5)
    assert not clock.due(9) and clock.due(10)
    assert not CheckpointClock(None).due(10**6)
    now = [1000.0]
    monkeypatch.setattr("resnet_builder.training.preemption.time.monotonic", lambda: now[0])
    timed = CheckpointClock("2min")
    now[0] += 119
    assert not timed.due(1)
    now[0] += 2
    assert timed.due(1)
    for every, seconds in (("30s", 30), ("1.5h", 5400), ("10 MIN", 600), ("0.5min", 30)):
        clock = CheckpointClock(every)
        now[0] += seconds - 1
        assert not clock.due(1)
        now[0] += 2
        assert clock.due(1)


class _Workers:
    """A stand-in ``StrategyInfo`` of ``workers`` workers."""

    def __init__(self, workers: int) -> None:
        self.workers = workers


def test_one_worker_reads_at_once_for_sigterm_or_a_due_checkpoint():
    stop = StopFlag()
    points = StopPoints(CheckpointClock(3), stop, _Workers(1), log_every=10)
    assert points.after_call(1, 1, False) == (False, False, False)
    assert points.after_call(3, 3, False) == (True, True, False)  # checkpoint due
    stop.requested = True
    assert points.after_call(4, 1, False) == (True, True, True)
    assert points.stop_agreed() and points.stop_in_evaluation(0)


def test_several_workers_stop_and_save_only_where_every_worker_reads(monkeypatch):
    """A worker's own SIGTERM or timed checkpoint waits for the next read every worker
    makes (log_every steps, the epoch's end, a checkpoint every N steps); there the
    workers agree, so a peer's SIGTERM stops this one too."""
    asked: list[list[bool]] = []
    peer = [False, False]  # what the other worker says: [checkpoint due, SIGTERM]

    def any_worker(dist, flags):
        asked.append(list(flags))
        return [mine or theirs for mine, theirs in zip(flags, peer[-len(flags):],
                                                           strict=True)]

    monkeypatch.setattr(preemption, "any_worker", any_worker)
    now = [0.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: now[0])
    stop = StopFlag()
    timed = StopPoints(CheckpointClock("1min"), stop, _Workers(2), log_every=4)
    stop.requested = True
    now[0] = 120.0  # a timed checkpoint is due here, and SIGTERM arrived here
    assert timed.after_call(1, 1, False) == (False, False, False) and asked == []
    assert timed.after_call(4, 4, False) == (True, True, True) and asked == [[True, True]]
    stop.requested, peer[:] = False, [False, True]  # now only the peer got SIGTERM
    assert timed.after_call(5, 1, True) == (True, True, True)  # the epoch's end: agreed
    assert timed.stop_agreed()
    stepped = StopPoints(CheckpointClock(3), stop, _Workers(2), log_every=10)
    peer[:] = [False, False]
    assert stepped.after_call(3, 3, False) == (True, True, False)  # every worker counts steps
    # evaluation: agreed every log_every batches, never before the first
    asked.clear()
    peer[:] = [False, True]
    assert [stepped.stop_in_evaluation(b) for b in (0, 5, 10)] == [False, False, True]
    assert len(asked) == 1


def test_the_run_s_iterator_is_reused_where_it_stands():
    made = []

    def make(epoch: int, batch: int):
        made.append((epoch, batch))
        return iter([(epoch, batch)])

    inputs = RunBatches(make)
    first = inputs.at(1, 0)
    inputs.moved_to(1, 5)
    assert inputs.at(1, 5) is first  # where the loop left it: no new iterator
    inputs.moved_to(2, 0)
    assert inputs.at(2, 0) is first
    assert inputs.at(4, 3) is not first  # elsewhere (a resume, bench's timed epochs): new
    inputs.close()  # the run ended: its iterator is let go
    inputs.at(4, 3)
    assert made == [(1, 0), (4, 3), (4, 3)]


def test_a_run_reads_every_epoch_through_one_iterator(tmp_path, reference, monkeypatch):
    """One ``train_batches`` over both epochs, made before the first step; validation's
    pipeline is made on the background thread after the first step. The same results as
    one pipeline per epoch (the loop before), which the second run rebuilds."""
    made = []
    train_batches, val_dataset = DataBundle.train_batches, DataBundle.val_dataset

    def recorded_train(self, epochs, *args, **kwargs):
        made.append((f"train {list(epochs)} from {kwargs['first_batch']}",
                     threading.current_thread().name))
        return train_batches(self, epochs, *args, **kwargs)

    def recorded_val(self, *args, **kwargs):
        made.append(("val", threading.current_thread().name))
        return val_dataset(self, *args, **kwargs)

    train_function = loop.TrainingLoop.train_function

    def recorded_calls(self, frozen):
        train = train_function(self, frozen)

        def call(iterator, batches):
            totals = train(iterator, batches)
            made.append(("call", threading.current_thread().name))
            return totals
        return call

    monkeypatch.setattr(DataBundle, "train_batches", recorded_train)
    monkeypatch.setattr(DataBundle, "val_dataset", recorded_val)
    monkeypatch.setattr(loop.TrainingLoop, "train_function", recorded_calls)
    api.train(config(tmp_path, name="one_iterator"))
    here = threading.current_thread().name
    assert made[:2] == [("train [0, 1] from 0", here), ("call", here)]
    others = [(what, thread) for what, thread in made if what != "call"]
    assert [what for what, _ in others] == ["train [0, 1] from 0", "val"]
    assert others[1][1].startswith("inputs")
    assert len(made) == 2 + 2 * 20  # 20 calls an epoch

    def epoch_by_epoch(self, epoch: int, first_batch: int):  # a new pipeline each epoch
        return iter(self.data.train_dataset(epoch - 1, self.cfg.data.batch_size,
                                            first_batch=first_batch))

    made.clear()
    monkeypatch.setattr(loop.TrainingLoop, "_run_iterator", epoch_by_epoch)
    monkeypatch.setattr(RunBatches, "moved_to", lambda self, epoch, batch: None)
    run = api.train(config(tmp_path, name="per_epoch")).run_dir
    assert [what for what, _ in made if what != "call"] == ["train [0] from 0", "val",
                                                            "train [1] from 0"]
    assert results(run) == results(reference)


def test_evaluations_read_the_split_once_each_from_one_iterator(tmp_path, monkeypatch):
    """Validation is one iterator over the split repeated: every evaluation reads exactly
    the split (a short last batch included), so two in a row agree."""
    evaluate, made, seen = loop.TrainingLoop.evaluate, [], []
    repeated_init = loop.RepeatedBatches.__init__

    def twice(self):
        first, second = evaluate(self), evaluate(self)
        seen.append((self.data.num_val, first, second))
        return first

    def recorded_init(self, iterator, count):
        made.append(count)
        repeated_init(self, iterator, count)

    monkeypatch.setattr(loop.TrainingLoop, "evaluate", twice)
    monkeypatch.setattr(loop.RepeatedBatches, "__init__", recorded_init)
    api.train(config(tmp_path, "train.eval_batch_size=15"))
    assert len(seen) == 2  # one an epoch
    for num_val, first, second in seen:
        assert first.confusion.sum() == second.confusion.sum() == num_val
        assert (first.confusion == second.confusion).all() and first.loss == second.loss
    assert made == [-(-seen[0][0] // 15)]  # one iterator, num_val / 15 batches an evaluation


def test_the_evaluation_step_is_traced_before_the_first_evaluation_and_only_then(
        tmp_path, monkeypatch):
    """Validation's batches are made on the background thread while epoch 1 trains, and
    the evaluation step is traced there for their spec: every evaluation (a short last
    batch included) reuses that one trace."""
    evaluate, traces = loop.TrainingLoop.evaluate, []

    def counted(self):
        begun = self._val_batches is not None  # made, or being made, while epoch 1 trained
        self.val_batches  # noqa: B018 - waits for that thread (on a busy machine it may lag)
        traces.append(("before", begun, self.eval_step.experimental_get_tracing_count()))
        result = evaluate(self)
        traces.append(("after", self.eval_step.experimental_get_tracing_count()))
        return result

    monkeypatch.setattr(loop.TrainingLoop, "evaluate", counted)
    api.train(config(tmp_path, "train.eval_batch_size=15"))
    assert traces == [("before", True, 1), ("after", 1)] * 2


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["hardware.steps_per_call=3", "run.log_every=1",
                                     "train.checkpoint_every=7"])
def test_results_do_not_depend_on_how_the_loop_reads_or_saves(tmp_path, reference, setting):
    run = api.train(config(tmp_path, setting)).run_dir
    assert results(run) == results(reference)


def test_nan_stops_within_one_read_interval(tmp_path, monkeypatch):
    real = loop.make_train_function

    def poisoned(*args, **kwargs):
        train = real(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(iterator, batches):
            calls["n"] += 1
            out = train(iterator, batches)
            return (float("nan"), out[1], out[2]) if calls["n"] == 25 else out

        return wrapped

    monkeypatch.setattr(loop, "make_train_function", poisoned)
    with pytest.raises(UserError, match=r"diverged.*epoch 2, by step (5|6|7|8)\b"):
        api.train(config(tmp_path, "run.log_every=4"))
    run = tmp_path / "runs" / "exp"
    assert read_meta(run / "checkpoint.npz")["epochs_completed"] == 1


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    path = tmp_path / "cfg.yaml"
    dump_config(config(tmp_path, *extra), path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_builder", "train", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, tmp_path / "runs" / "exp"


def _wait_for_mid_epoch_checkpoint(proc: subprocess.Popen, run: Path) -> dict:
    deadline = time.time() + 240
    while time.time() < deadline:
        ckpt = run / "checkpoint.npz"
        if ckpt.exists():
            try:
                meta = read_meta(ckpt)
            except UserError:  # being replaced right now
                continue
            if meta.get("epoch_progress"):
                return meta
        assert proc.poll() is None, "training ended before it could be stopped"
        time.sleep(0.02)
    pytest.fail("no mid-epoch checkpoint within 240 s")


def _resume(run: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "resnet_builder", "train", "--resume", str(run)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_exits_143_and_resumes_exactly(tmp_path, reference):
    proc, run = _start(tmp_path, "train.checkpoint_every=3")
    try:
        _wait_for_mid_epoch_checkpoint(proc, run)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, output[-2000:]
    assert f"resnet-builder train --resume {run}" in output and "Traceback" not in output
    assert json.loads((run / "summary.json").read_text())["status"] == "preempted"
    meta = read_meta(run / "checkpoint.npz")
    assert meta["epochs_completed"] < 2
    resumed = _resume(run)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert results(run) == results(reference)


@pytest.mark.slow
def test_kill_9_mid_epoch_loses_at_most_checkpoint_every_steps(tmp_path, reference):
    proc, run = _start(tmp_path, "train.checkpoint_every=2")
    try:
        meta = _wait_for_mid_epoch_checkpoint(proc, run)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    meta = read_meta(run / "checkpoint.npz")
    assert meta["epochs_completed"] < 2
    # The kill may land on any step; what it can lose is bounded by checkpoints falling every
    # 2 steps (this run's epochs have an even number of steps, so within an epoch too).
    progress = meta["epoch_progress"]
    assert progress["batches"] > 0 and progress["batches"] % 2 == 0, progress
    resumed = _resume(run)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming {run}" in resumed.stdout
    assert f"(epoch {progress['epoch']} from step {progress['batches']})" in resumed.stdout
    assert results(run) == results(reference)


def test_streaming_with_corrupt_files_names_them_and_finishes(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = (tmp_path / "images" / "b" / "0.png").read_bytes()
    (tmp_path / "images" / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    cfg = load_config(None, [
        "model.depth=8", "model.block_type=basic", "data.source=folder",
        f"data.path={tmp_path / 'images'}", "data.image_size=16", "data.batch_size=10",
        "data.cache=false", "data.validation_split=0.25", "train.epochs=2",
        # mid-epoch checkpoints hand the skips found so far over early, while the pipelines
        # decode ahead: a file must still be named once
        "train.checkpoint_every=1", "run.log_every=1",
        "run.progress=line", "run.plots=false", "run.tensorboard=false",
        f"run.project={tmp_path / 'runs'}"])
    result = api.train(cfg)
    assert result.summary["status"] == "finished"
    with open(result.run_dir / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == ["broken.png", "cut.png"]
    assert all(r["reason"] for r in rows)
    out = capsys.readouterr().out
    assert "skipped 2 unreadable file(s)" in out and "broken.png" in out
    assert out.count("broken.png") == 1  # named once, not every epoch


def _corrupt_folder(root: Path) -> Path:
    """3 classes x 12 PNGs, and 2 broken files in each class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for label in ("a", "b", "c"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
        for k in range(2):
            (root / label / f"bad{k}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def test_files_skipped_before_a_mid_epoch_stop_are_named_after_resume(tmp_path, monkeypatch):
    """The skip list of the epoch so far travels in the mid-epoch checkpoint: a resumed
    epoch names every unreadable file, as an uninterrupted one does."""
    images = _corrupt_folder(tmp_path / "images")
    settings = ["model.depth=8", "model.block_type=basic", "data.source=folder",
                f"data.path={images}", "data.image_size=8", "data.batch_size=6",
                "data.cache=false", "data.validation_split=0", "train.epochs=1",
                "run.log_every=1", "run.progress=none", "run.plots=false",
                "run.tensorboard=false", f"run.project={tmp_path / 'runs'}"]
    whole = api.train(load_config(None, [*settings, "run.name=whole"]))
    with open(whole.run_dir / "skipped.csv") as f:
        named = sorted(Path(row["path"]).name for row in csv.DictReader(f))
    assert len(named) == 6

    report = loop.TrainingLoop._report

    def stop_at_step_4(self, epoch, step, *args):
        # as a SIGTERM during step 3's read would: the loop stops at step 4, 3 of 7 batches
        # before the end
        self.stop.requested = step >= 3
        return report(self, epoch, step, *args)

    monkeypatch.setattr(loop.TrainingLoop, "_report", stop_at_step_4)
    with pytest.raises(UserError, match="stopped by SIGTERM; saved at epoch 1, step 4") as stop:
        api.train(load_config(None, [*settings, "run.name=cut"]))
    assert stop.value.exit_code == PREEMPTED_EXIT_CODE
    monkeypatch.undo()
    run = tmp_path / "runs" / "cut"
    assert read_meta(run / "checkpoint.npz")["epoch_progress"]["skipped"]  # some before the stop
    api.resume(run)
    with open(run / "skipped.csv") as f:
        assert sorted(Path(row["path"]).name for row in csv.DictReader(f)) == named
    assert results(run) == results(whole.run_dir)


def test_a_run_with_seed_null_keeps_the_seed_it_drew_so_a_resume_repeats_it(tmp_path,
                                                                             monkeypatch):
    """hardware.seed: null draws a seed once and writes it to config.yaml: a resumed run
    keeps its validation split and data order (it used to draw another one, so its training
    split could hold images validated on before), and the drawn seed repeats the run."""
    report = loop.TrainingLoop._report

    def stop_at_step_5(self, epoch, step, *args):
        self.stop.requested = epoch == 2 and step >= 5
        return report(self, epoch, step, *args)

    monkeypatch.setattr(loop.TrainingLoop, "_report", stop_at_step_5)
    with pytest.raises(UserError, match="stopped by SIGTERM"):
        api.train(config(tmp_path, "hardware.seed=null", "run.log_every=5", name="drawn"))
    monkeypatch.undo()
    run = tmp_path / "runs" / "drawn"
    seed = load_config(run / "config.yaml").hardware.seed
    assert isinstance(seed, int)
    assert api.resume(run).summary["status"] == "finished"
    assert load_config(run / "config.yaml").hardware.seed == seed
    again = api.train(config(tmp_path, f"hardware.seed={seed}", name="again"))
    assert results(run) == results(again.run_dir)
    # the end line's time is summary.json's (it was taken again after the plots)
    written = json.loads((again.run_dir / "summary.json").read_text())
    assert again.summary["wall_seconds"] == written["wall_seconds"]


def test_an_unexpected_error_still_ends_the_run_as_failed(tmp_path):
    """A callback's own error (or a full disk) reaches the caller unchanged, and the run
    still ends: summary.json says failed (it said running) and the loggers are closed."""
    import keras

    class Broken(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("my callback broke")

    ended = []

    class Ended(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            ended.append(logs["status"])

    with pytest.raises(RuntimeError, match="my callback broke"):
        api.train(config(tmp_path, "train.epochs=1"), callbacks=[Ended(), Broken()])
    summary = json.loads((tmp_path / "runs" / "exp" / "summary.json").read_text())
    assert summary["status"] == "failed" and ended == ["failed"]


def test_sigterm_in_an_evaluation_leaves_at_once_and_the_resumed_run_matches(
        tmp_path, reference, monkeypatch):
    """SIGTERM during an evaluation does not wait for it to end: the epoch's training is
    saved (its last step), the run exits 143, and the resumed run evaluates that epoch and
    gives the uninterrupted results.csv."""
    evaluate, batches = loop.TrainingLoop.evaluate, []

    def signalled(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler turns it into the flag
        return evaluate(self)

    eval_step = loop.TrainingLoop._stop_if_asked

    def counted(self, batch):
        batches.append(self.stop.requested)
        return eval_step(self, batch)

    monkeypatch.setattr(loop.TrainingLoop, "evaluate", signalled)
    monkeypatch.setattr(loop.TrainingLoop, "_stop_if_asked", counted)
    with pytest.raises(UserError, match="stopped by SIGTERM; saved at epoch 1, step 20") as stop:
        api.train(config(tmp_path))
    assert stop.value.exit_code == PREEMPTED_EXIT_CODE
    assert batches == [True]  # left before the first validation batch
    monkeypatch.undo()
    run = tmp_path / "runs" / "exp"
    meta = read_meta(run / "checkpoint.npz")
    assert (meta["epochs_completed"], meta["epoch_progress"]["batches"]) == (0, 20)
    api.resume(run)
    assert results(run) == results(reference)


def test_sigterm_after_the_last_epoch_is_recorded_lets_the_run_finish(tmp_path, capsys):
    """Once the last epoch is recorded there is nothing to resume: a SIGTERM during the
    final writes (here from a callback's on_train_end) is held, not the default kill, and
    the run finishes (exit 0) and says so."""
    import keras

    class SignalAtEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            os.kill(os.getpid(), signal.SIGTERM)

    result = api.train(config(tmp_path, "train.epochs=1"), callbacks=[SignalAtEnd()])
    assert result.summary["status"] == "finished"
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "finished"
    assert "SIGTERM arrived as the run ended: it finished, nothing to resume" in (
        capsys.readouterr().out)


def test_a_resumed_run_counts_checkpoint_every_from_where_it_resumed(tmp_path, monkeypatch):
    """Saved at step 4 with train.checkpoint_every=5: the resumed run's next mid-epoch
    checkpoints come at steps 9, 14, 19, not at once at its first read (the clock counted
    from step 0)."""
    settings = ["train.epochs=1", "train.checkpoint_every=5", "run.log_every=1",
                "hardware.steps_per_call=1", "run.progress=none"]
    report = loop.TrainingLoop._report

    def stop_at_step_4(self, epoch, step, *args):
        self.stop.requested = step >= 3
        return report(self, epoch, step, *args)

    monkeypatch.setattr(loop.TrainingLoop, "_report", stop_at_step_4)
    with pytest.raises(UserError, match="saved at epoch 1, step 4"):
        api.train(config(tmp_path, *settings))
    monkeypatch.undo()
    written: list[int] = []
    tell = loop.TrainingLoop._tell_progress

    def record(self, step, checkpoint):
        if checkpoint:
            written.append(step)
        return tell(self, step, checkpoint)

    monkeypatch.setattr(loop.TrainingLoop, "_tell_progress", record)
    api.resume(tmp_path / "runs" / "exp")
    assert written == [9, 14, 19]


def test_a_ctrl_c_lost_during_start_up_stops_the_run_at_its_first_step(tmp_path, monkeypatch):
    """As if Python dropped the KeyboardInterrupt (inside a garbage-collector callback) while
    the model was built: `train` stops at its first step, exit 130, status interrupted."""
    from click.testing import CliRunner

    from resnet_builder import interrupts
    from resnet_builder.cli import main

    make_model = api.make_model

    def dropped_ctrl_c(*args, **kwargs):
        interrupts._Interrupts.pending = True
        return make_model(*args, **kwargs)

    monkeypatch.setattr(api, "make_model", dropped_ctrl_c)
    cfg = config(tmp_path)
    dump_config(cfg, tmp_path / "c.yaml")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml")])
    assert result.exit_code == 130, result.output
    assert "interrupted; 0 completed epoch(s)" in result.output
    summary = json.loads((tmp_path / "runs" / "exp" / "summary.json").read_text())
    assert summary["status"] == "interrupted"


def test_the_bar_of_a_resumed_epoch_starts_where_it_stood_with_its_rate(capsys):
    """Resumed at step 6 of 10: the bar shows 6/10 with the epoch's loss, accuracy and
    images/s so far (it showed 0 img/s until the next read)."""
    from resnet_builder.training.callbacks import ProgressCallback
    from resnet_builder.training.state import RunState

    state = RunState(epoch_progress={"epoch": 2, "batches": 6, "loss_sum": 30.0,
                                     "correct": 45.0, "count": 60.0, "seconds": 2.0})
    callback = ProgressCallback("bar", epochs=3, steps_per_epoch=10, state=state)
    callback.on_epoch_begin(1)
    callback.bar.bar.refresh()
    shown = capsys.readouterr().out.replace("\r", "\n").strip().splitlines()[-1]
    assert "epoch 2/3" in shown and "6/10" in shown
    assert "acc=0.7500" in shown and "loss=0.5000" in shown and "img_s=30" in shown
