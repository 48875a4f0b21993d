"""evaluate.py and `resnet-builder evaluate`: metrics against a manual computation."""

from __future__ import annotations

import json
import shutil
from unittest.mock import ANY

import numpy as np
import pytest
from click.testing import CliRunner
from inference_helpers import save_as, trained, write_images
from PIL import Image

from resnet_builder.cli import main
from resnet_builder.inference.evaluate import format_metrics
from resnet_builder.inference.metrics import Tally


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("digits"))


def _manual(labels: np.ndarray, probs: np.ndarray, k: int = 5) -> dict:
    """Accuracy, top-k and per-class P/R/F1 the long way (scikit-learn)."""
    from sklearn.metrics import precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    top = np.argsort(-probs, axis=1)[:, :k]
    present = np.unique(labels)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=present, zero_division=0)
    return {"accuracy": float(np.mean(pred == labels)),
            "topk": float(np.mean([y in t for y, t in zip(labels, top, strict=True)])),
            "per_class": {str(c): (p[i], r[i], f[i], s[i]) for i, c in enumerate(present)},
            "macro_f1": float(np.mean(f))}


def test_tally_definitions():
    """Three classes; class 2 has no support but is predicted once, class 1 never predicted."""
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 0, 1])
    tally = Tally(3, top_k=2)
    tally.add(labels[:2], probs[:2])
    tally.add(labels[2:], probs[2:])
    m = tally.metrics(["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 0, 1], [2, 0, 0], [0, 0, 0]]
    assert m["accuracy"] == 0.25 and m["top_k"] == 2
    assert m["top2_accuracy"] == 0.75  # image 2's true class 0 is third: 0.7, 0.2, 0.1
    assert m["per_class"]["a"] == {"precision": round(1 / 3, 6), "recall": 0.5,
                                   "f1": 0.4, "support": 2, "predicted": 3}
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2,
                                   "predicted": 0}
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0,
                                   "predicted": 1}
    assert m["macro_f1"] == 0.2  # over the classes with support
    assert m["macro_precision"] == round(1 / 6, 6)  # c, predicted with no support, left out
    assert "accuracy 0.2500" in format_metrics({**m, "skipped": 0})


@pytest.mark.slow
def test_cli_evaluate_run_folder_matches_manual_computation(digits, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", str(digits.run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    import keras

    model = keras.models.load_model(digits.model_file, compile=False)
    probs = model.predict(digits.val_images.astype(np.float32), verbose=0)
    manual = _manual(digits.val_labels, probs)
    assert metrics["images"] == len(digits.val_labels) == 360
    assert metrics["accuracy"] == pytest.approx(manual["accuracy"], abs=1e-6)
    assert metrics["top5_accuracy"] == pytest.approx(manual["topk"], abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(manual["macro_f1"], abs=1e-5)
    assert metrics["accuracy"] > 0.9
    for name, (p, r, f, s) in manual["per_class"].items():
        got = metrics["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f), abs=1e-5)
        assert got["support"] == s
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 360 and np.trace(cm) == round(metrics["accuracy"] * 360)
    with Image.open(out / "confusion_matrix.png") as png:
        assert png.format == "PNG" and png.width > 100
    assert "accuracy" in result.output and "precision" in result.output


@pytest.mark.slow
def test_cli_evaluate_class_folder_by_name(digits, tmp_path):
    flat = tmp_path / "flat"
    truth = write_images(digits, flat, count=24)
    data = tmp_path / "data"
    for rel, label in truth.items():  # data/<label>/<a|b>_<name>
        dest = data / str(label) / rel.replace("/", "_")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / rel, dest)
    shutil.copy(flat / "a" / "corrupt.png", data / str(truth["a/000.png"]) / "corrupt.png")
    (data / "loose.txt").write_text("x")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--model",
                                       str(digits.model_file), "--project",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "exp" / "metrics.json").read_text())
    assert metrics["images"] == len(truth) and metrics["skipped"] == 2
    positional = CliRunner().invoke(main, ["evaluate", str(digits.model_file), "--data",
                                           str(data), "--output", str(tmp_path / "p")])
    assert positional.exit_code == 0, positional.output  # a model file where a run goes
    assert json.loads((tmp_path / "p" / "metrics.json").read_text()) == {
        **metrics, "seconds": ANY, "images_per_second": ANY}
    both = CliRunner().invoke(main, ["evaluate", str(digits.model_file), "--model",
                                     str(digits.model_file), "--data", str(data)])
    assert both.exit_code == 2 and "give a run folder here" in both.output
    assert metrics["accuracy"] >= 0.95
    present = {str(v) for v in truth.values()}
    for name, c in metrics["per_class"].items():  # classes with no folder have no support
        assert (c["support"] > 0) == (name in present)
        assert (c["recall"] is None) == (name not in present)
    # a class the model does not know is an error, not a silent mislabelling
    (data / "zebra").mkdir()
    shutil.copy(flat / "a" / "000.png", data / "zebra" / "z.png")
    bad = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--model",
                                    str(digits.model_file), "--output", str(tmp_path / "o")])
    assert bad.exit_code != 0
    assert "classes the model does not know: zebra" in bad.output
    assert "Traceback" not in bad.output


def test_evaluate_names_what_it_cannot_evaluate_on(digits, tmp_path):
    """An image given as --data (it was read as a CSV), a folder of unreadable files (their
    reasons were not shown), a pack without val shards (it blamed data.validation_split)."""
    from resnet_builder.data.pack import pack_folder

    model = ["--model", str(digits.model_file), "--output", str(tmp_path / "o")]
    write_images(digits, tmp_path / "imgs", count=2)
    image = next((tmp_path / "imgs").rglob("*.png"))
    result = CliRunner().invoke(main, ["evaluate", "--data", str(image), *model])
    assert result.exit_code == 1 and "is an image: evaluation needs labels" in result.output
    (tmp_path / "bad" / "3").mkdir(parents=True)
    (tmp_path / "bad" / "3" / "a.png").write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "bad"), *model])
    assert result.exit_code == 1 and "no image could be evaluated" in result.output
    assert "a.png: " in result.output  # the reason, not only a count
    packed = tmp_path / "packed"
    pack_folder(tmp_path / "imgs", str(packed), shards=1, validation_split=0.0)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{source: tfrecord, path: {packed}, image_size: 16, "
                      "channels: 1}\n")
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), *model])
    assert result.exit_code == 1 and f"its packed folder {packed} has no val shards" \
        in result.output


def test_evaluate_a_csv_with_a_split_column_scores_its_val_rows(digits, tmp_path):
    """Its training rows were scored too, inflating the numbers, and the header counted the
    model's 10 classes for a CSV of 2."""
    truth = write_images(digits, tmp_path / "imgs", count=12)
    rows = sorted(truth.items())
    lines = ["path,label,split"] + [f"{tmp_path / 'imgs' / rel},{label},"
                                    f"{'val' if k < 4 else 'train'}"
                                    for k, (rel, label) in enumerate(rows)]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    model = ["--model", str(digits.model_file)]
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "l.csv"), *model,
                                       "--output", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"] == 4
    text = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "l.csv"), *model,
                                     "--output", str(tmp_path / "o")]).output
    classes = len({label for _, label in rows[:4]})
    assert f"its 4 val rows of {len(rows)}, 4 images, {classes} classes" in text
    (tmp_path / "t.csv").write_text("\n".join(lines).replace(",val", ",train") + "\n")
    none = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "t.csv"), *model])
    assert none.exit_code == 1 and "has a split column but no val rows" in none.output


def test_evaluate_into_a_used_folder_leaves_none_of_the_earlier_files(digits, tmp_path):
    """skipped.csv of an earlier evaluate stayed beside a metrics.json saying 0 skipped."""
    for i in range(6):
        save_as(digits.val_images[i], tmp_path / "imgs" / str(digits.val_labels[i]) / f"{i}.png",
                "L")
    (tmp_path / "imgs" / "3").mkdir(exist_ok=True)
    (tmp_path / "imgs" / "3" / "bad.png").write_bytes(b"not a png")
    out = ["--model", str(digits.model_file), "--output", str(tmp_path / "o")]
    assert CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "imgs"),
                                     *out]).exit_code == 0
    assert (tmp_path / "o" / "skipped.csv").exists()
    (tmp_path / "imgs" / "3" / "bad.png").unlink()
    assert CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "imgs"),
                                     *out]).exit_code == 0
    assert not (tmp_path / "o" / "skipped.csv").exists()


def test_a_runs_relative_data_path_is_explained_from_another_folder(digits, tmp_path,
                                                                    monkeypatch):
    """From another folder it was 'data.path not found: held', with no word of why."""
    from resnet_builder.config import dump_config, load_config

    run = tmp_path / "run"
    shutil.copytree(digits.run, run)
    cfg = load_config(run / "config.yaml", ["data.source=folder", "data.path=held"])
    dump_config(cfg, run / "config.yaml")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = CliRunner().invoke(main, ["evaluate", str(run)])
    assert result.exit_code == 1
    assert "data.path held in" in result.output and "relative to the folder" in result.output


def test_an_exported_saved_model_folder_is_taken_where_a_run_folder_goes(tmp_path):
    from resnet_builder.inference.evaluate import resolve

    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"")
    model, cfg, _ = resolve(tmp_path / "saved_model", None, tmp_path, None)
    assert model == tmp_path / "saved_model" and cfg is None


def test_cli_evaluate_needs_something_to_evaluate_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["evaluate"])
    assert result.exit_code != 0 and "nothing to evaluate on" in result.output


def test_one_confusion_figure_for_few_and_many_classes(tmp_path):
    """One figure for training and evaluate: counts for few classes, thinned ticks for many."""
    from resnet_builder.plots import plot_confusion_matrix
    from resnet_builder.scores import confusion_matrix

    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    for n, classes in ((3, matrix), (60, np.eye(60, dtype=np.int64))):
        path = tmp_path / f"cm{n}.png"
        plot_confusion_matrix(classes, [f"class{i}" for i in range(n)], path, title="t")
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm3.png", "cm60.png"]  # no temp files


def test_output_folder_is_the_given_folder_or_a_new_run_folder(tmp_path):
    from resnet_builder.runs import output_folder

    given = output_folder(tmp_path / "given" / "deep", tmp_path / "runs", "exp")
    assert given == tmp_path / "given" / "deep" and given.is_dir()
    assert output_folder(given, tmp_path / "runs", "exp") == given  # may exist already
    first = output_folder(None, tmp_path / "runs", "exp")
    second = output_folder(None, tmp_path / "runs", "exp")
    assert (first.name, second.name) == ("exp", "exp2")
    assert output_folder(None, tmp_path / "runs", "exp", exist_ok=True) == first


@pytest.mark.slow
def test_python_api_evaluate_through_the_package(digits, tmp_path):
    import keras

    import resnet_builder

    on_run = resnet_builder.evaluate(run=str(digits.run))
    assert on_run.metrics["images"] == 360 and on_run.metrics["accuracy"] > 0.9
    assert on_run.folder is None  # the Python API writes nothing
    # the run folder as the first argument, as on the command line
    assert resnet_builder.evaluate(str(digits.run)).metrics == {
        **on_run.metrics, "seconds": ANY, "images_per_second": ANY}
    data = tmp_path / "data"
    for i in range(20):
        save_as(digits.val_images[i], data / str(digits.val_labels[i]) / f"{i}.png", "L")
    model = keras.models.load_model(digits.model_file, compile=False)
    result = resnet_builder.evaluate(model, data=data, top_k=3)
    assert result.metrics["images"] == 20 and result.metrics["top_k"] == 3
    assert result.metrics["accuracy"] >= 0.9 and result.skipped == []
    assert result.data.startswith(f"folder {data} (20 images")


def test_api_arguments_are_checked_before_anything_loads(tmp_path):
    import resnet_builder
    from resnet_builder.errors import UserError

    with pytest.raises(UserError, match="does not exist"):  # was "a model alone has nothing"
        resnet_builder.evaluate(tmp_path / "runs" / "typo")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        resnet_builder.evaluate(tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        resnet_builder.evaluate(tmp_path, top_k=0)
    with pytest.raises(TypeError, match="top_k must be an integer >= 1, got '3'"):
        resnet_builder.predict(tmp_path, "examples/digits", top_k="3")
    assert {"train", "predict", "evaluate", "ResNetV2Backbone"} <= set(dir(resnet_builder))


def test_predict_refuses_a_keras_model_that_gives_no_class_probabilities(tmp_path):
    import keras

    import resnet_builder
    from resnet_builder.errors import UserError

    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
    inputs = keras.Input((8, 8, 3))
    grid = keras.Model(inputs, keras.layers.Dense(3)(inputs))  # (batch, 8, 8, 3)
    with pytest.raises(UserError, match=r"outputs of shape \(None, 8, 8, 3\)"):
        resnet_builder.predict(grid, tmp_path / "images")
    logits = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    logits.layers[-1].set_weights([np.full((192, 3), 0.5, np.float32), np.zeros(3, np.float32)])
    with pytest.raises(UserError, match=r"not probabilities \(0\.\.1\)"):
        resnet_builder.predict(logits, tmp_path / "images")
    softmax = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(inputs)))
    assert len(resnet_builder.predict(softmax, tmp_path / "images")) == 2


def test_predict_in_a_loop_traces_the_model_once(tmp_path):
    """Each predict() traced a tf.function of its own around the model (0.4-0.7 s a call for
    a ResNet-20, and TensorFlow's retracing warning from the fifth call): one traced
    forward pass per model serves every call."""
    import keras

    import resnet_builder

    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(inputs)))
    first = resnet_builder.predict(model, tmp_path / "images")
    for _ in range(5):
        again = resnet_builder.predict(model, tmp_path / "images")
    from resnet_builder.inference.loading import _FORWARD

    (traced,) = _FORWARD[model].values()
    assert traced.experimental_get_tracing_count() == 1
    assert [r.top_k for r in again] == [r.top_k for r in first]
