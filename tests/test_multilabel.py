"""model.task multilabel and data.source csv: the CSV source, sigmoid head, binary
cross-entropy, mAP / F1 in results.csv, predict / evaluate / export of a multilabel model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from resnet_builder.cli import main
from resnet_builder.config import load_config
from resnet_builder.data import load_data
from resnet_builder.errors import UserError
from resnet_builder.scores import average_precision, label_scores
from resnet_builder.training import api

NAMES = ["left", "middle", "right"]  # a bright vertical band per label
SIZE = 12


def band_images(folder: Path, count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``count`` PNGs in folder/img with random subsets of the three bands, and their labels."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        on = rng.random(3) < 0.5
        image = rng.integers(20, 60, (SIZE, SIZE, 3)).astype(np.uint8)
        for k in np.flatnonzero(on):
            image[:, 4 * k:4 * k + 4] = 230
        Image.fromarray(image).save(folder / "img" / f"{i}.png")
        rows.append((f"img/{i}.png", [NAMES[k] for k in np.flatnonzero(on)]))
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labels_csv(folder: Path, count: int = 96) -> Path:
    rows = band_images(folder, count)
    return write_csv(folder / "labels.csv", ["path", "labels"],
                     [[p, ";".join(labels)] for p, labels in rows])


SMALL = ["model.depth=8", "model.block_type=basic", "model.bn_momentum=0.9",
         "model.task=multilabel", "data.source=csv", f"data.image_size={SIZE}",
         "data.batch_size=16", "optim.optimizer=adam", "optim.lr=0.01", "train.epochs=4",
         "train.monitor=val_map", "run.progress=none", "run.plots=false",
         "run.tensorboard=false", "hardware.seed=0"]


def config(folder: Path, csv_path: Path, *extra: str, name: str = "exp"):
    return load_config(None, [*SMALL, f"data.path={csv_path}",
                              f"run.project={folder / 'runs'}", f"run.name={name}", *extra])


def results(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One multilabel run on the band images (4 epochs, a few seconds)."""
    folder = tmp_path_factory.mktemp("bands")
    csv_path = labels_csv(folder)
    return folder, csv_path, api.train(config(folder, csv_path))


# ---------------------------------------------------------------------------- source


def test_csv_source_reads_both_formats_for_both_tasks(tmp_path):
    rows = band_images(tmp_path, 20)
    semicolons = write_csv(tmp_path / "a.csv", ["Path", "labels"],
                           [[p, ";".join(names)] for p, names in rows])
    zero_one = write_csv(tmp_path / "b.csv", ["image", *NAMES],
                         [[str(tmp_path / p), *(str(int(n in names)) for n in NAMES)]
                          for p, names in rows])
    for path, order in ((semicolons, sorted(NAMES)), (zero_one, NAMES)):
        cfg = load_config(None, ["data.source=csv", f"data.path={path}", "data.image_size=8",
                                 "data.validation_split=0.25"])
        bundle = load_data(cfg.data, None, 0, "multilabel")
        assert bundle.class_names == order and bundle.task == "multilabel"
        assert (bundle.num_train, bundle.num_val) == (15, 5)
        images, labels = next(bundle.val_dataset(5).as_numpy_iterator())
        assert images.shape == (5, 8, 8, 3) and labels.shape == (5, 3)
        assert labels.dtype == np.float32 and set(np.unique(labels)) <= {0.0, 1.0}
    single = write_csv(tmp_path / "c.csv", ["file", "label", "split"],
                       [[f"img/{i}.png", NAMES[i % 3], "val" if i < 6 else "train"]
                        for i in range(18)])
    cfg = load_config(None, ["data.source=csv", f"data.path={single}", "data.image_size=8"])
    bundle = load_data(cfg.data, None, 0)
    assert (bundle.num_train, bundle.num_val) == (12, 6)
    images, labels = next(bundle.val_dataset(6).as_numpy_iterator())
    assert labels.dtype == np.int32 and list(labels) == [0, 1, 2, 0, 1, 2]  # sorted names
    only_val = write_csv(tmp_path / "d.csv", ["file", "label", "split"],  # no training NAMES[2]
                         [[f"img/{i}.png", NAMES[i % 3], "val" if i % 3 == 2 else "train"]
                          for i in range(18)])
    cfg = load_config(None, ["data.source=csv", f"data.path={only_val}", "data.image_size=8"])
    with pytest.raises(UserError, match=f"no training rows for class\\(es\\) {NAMES[2]}"):
        load_data(cfg.data, None, 0)


def test_unreadable_image_is_skipped_not_fatal(tmp_path):
    rows = band_images(tmp_path, 8)
    (tmp_path / "img" / "0.png").write_bytes(b"not a png")
    path = write_csv(tmp_path / "l.csv", ["path", "labels"],
                     [[p, ";".join(names)] for p, names in rows])
    cfg = load_config(None, ["data.source=csv", f"data.path={path}", "data.image_size=8",
                             "data.validation_split=0"])
    bundle = load_data(cfg.data, None, 0, "multilabel")
    labels = np.concatenate([lab for _, lab in bundle.train_dataset(0, 4).as_numpy_iterator()])
    assert (labels.min(axis=1) < 0).sum() == 1 and (labels == -1).all(axis=1).sum() == 1
    assert [Path(p).name for p, _ in bundle.take_skipped()] == ["0.png"]
    verified = load_config(None, ["data.source=csv", f"data.path={path}",
                                  "data.image_size=8", "data.verify=true"])
    with pytest.warns(UserWarning, match="^data.verify applies to the folder source"):
        load_data(verified.data, None, 0, "multilabel")


def test_streamed_rows_of_pillow_files_keep_their_labels_every_epoch(tmp_path):
    """Streamed (cache off): a GIF goes to Pillow; from the second epoch on the fast path
    leaves its place for Pillow (``stream.pillow_places``), which must fill the whole label
    row, and a broken file's row stays all -1."""
    rows = band_images(tmp_path, 8)
    gif = tmp_path / "img" / "3.gif"
    Image.open(tmp_path / "img" / "3.png").save(gif)
    rows[3] = ("img/3.gif", rows[3][1])
    (tmp_path / "img" / "5.png").write_bytes(b"not a png")
    path = write_csv(tmp_path / "l.csv", ["path", "labels"],
                     [[p, ";".join(names)] for p, names in rows])
    cfg = load_config(None, ["data.source=csv", f"data.path={path}", "data.image_size=8",
                             "data.validation_split=0", "data.cache=false"])
    bundle = load_data(cfg.data, None, 0, "multilabel")
    want = np.array([[float(n in names) for n in sorted(NAMES)] for _, names in rows])
    for epoch in range(3):
        images, labels = (np.concatenate(part) for part in zip(
            *bundle.train_dataset(epoch, 4).as_numpy_iterator(), strict=True))
        names = [Path(bundle._train.files[key]).name for key in bundle.epoch_order(epoch)]
        gif, broken = names.index("3.gif"), names.index("5.png")
        np.testing.assert_array_equal(labels[gif], want[3])
        assert images[gif].any() and (labels[broken] == -1).all()
        assert (labels[np.arange(8) != broken] >= 0).all()
        assert [Path(p).name for p, _ in bundle.take_skipped()] == ["5.png"]


@pytest.mark.parametrize(("header", "row", "message"), [
    (["name", "labels"], ["img/0.png", "left"], "no path column"),
    (["path", "labels"], ["img/nope.png", "left"], "l.csv:2: image file not found"),
    (["path", "labels"], ["img/0.png", "left;right"], "l.csv:2: a multiclass row needs "
                                                      "exactly one label"),
    (["path", *NAMES], ["img/0.png", "1", "2", "0"], "l.csv:2: class columns hold 0 or 1"),
    (["path", "labels"], None, "no rows below its header"),
    (["path", "labels"], [["img/0.png", "left"], ["./img//0.png", "right"]],
     "l.csv:3: ./img//0.png is listed again (first at line 2)"),
    (["path", NAMES[0], NAMES[0], NAMES[1]], ["img/0.png", "1", "0", "0"],
     f"l.csv:1: the header names class column(s) '{NAMES[0]}' more than once"),
])
def test_bad_csv_is_a_user_error_with_file_and_line(tmp_path, header, row, message):
    band_images(tmp_path, 1)
    rows = [] if row is None else row if isinstance(row[0], list) else [row]
    path = write_csv(tmp_path / "l.csv", header, rows)
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"data: {{source: csv, path: {path}, image_size: 8}}\n"
                    f"run: {{project: {tmp_path / 'runs'}}}\n")
    result = CliRunner().invoke(main, ["train", str(yaml)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("extra", "message"), [
    (["train.monitor=val_accuracy"], "train.monitor val_accuracy is a multiclass score"),
    (["train.monitor=val_map", "data.source=digits"], "model.task multilabel needs labels"),
    (["train.monitor=val_map", "augment.mixup=0.2"], "augment.mixup works with one class"),
    (["train.monitor=val_map", "data.sampler=balanced"], "data.sampler works with one class"),
])
def test_config_rules_refuse_what_multilabel_cannot_do(tmp_path, extra, message):
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"model: {{task: multilabel}}\ndata: {{source: csv, path: {tmp_path}}}\n")
    result = CliRunner().invoke(main, ["config", str(yaml),
                                       *(a for s in extra for a in ("--set", s))])
    assert result.exit_code == 2 and message in result.output, result.output


# ---------------------------------------------------------------------------- scores


def test_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth = (rng.random((60, 5)) < 0.3).astype(int)
    truth[:, 4] = 0  # a class without positives: AP undefined, left out of the means
    probs = np.round(rng.random((60, 5)), 1)  # ties, as sigmoid outputs have
    s = label_scores(truth, probs, 0.5)
    for k in range(4):
        assert s.ap[k] == pytest.approx(metrics.average_precision_score(truth[:, k], probs[:, k]))
    assert np.isnan(s.ap[4]) and np.isnan(average_precision(truth[:, 4], probs[:, 4]))
    assert s.mean_ap == pytest.approx(np.mean(s.ap[:4]))
    guess = probs >= 0.5
    assert s.micro_f1 == pytest.approx(metrics.f1_score(truth, guess, average="micro"))
    assert s.macro_f1 == pytest.approx(metrics.f1_score(truth, guess, average="macro",
                                                        labels=[0, 1, 2, 3]))


# ---------------------------------------------------------------------------- training


def test_multilabel_run_learns_and_writes_its_columns(trained):
    _, _, result = trained
    rows = results(result.run_dir)
    assert list(rows[0]) == ["epoch", "lr", "loss", "accuracy", "val_loss", "val_map",
                             "val_micro_f1", "val_macro_f1"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert max(float(r["val_map"]) for r in rows) >= 0.75  # chance is about 0.5
    assert result.summary["monitor"] == "val_map"
    model = keras.models.load_model(result.run_dir / "best.keras", compile=False)
    assert model.task == "multilabel" and model.threshold == 0.5
    assert model.layers[-1].get_config()["activation"] == "sigmoid"


def test_multilabel_resume_is_exact(trained, tmp_path):
    _, csv_path, reference = trained

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    stopped = api.train(config(tmp_path, csv_path), callbacks=[StopAfterTwo()])
    assert len(results(stopped.run_dir)) == 2
    api.resume(stopped.run_dir)
    assert results(stopped.run_dir) == results(reference.run_dir)


# ---------------------------------------------------------------------------- inference


def _predictions(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv") as f:
        return list(csv.DictReader(f))


def test_predict_writes_every_label_above_the_threshold(trained, tmp_path):
    folder, _, result = trained
    runner = CliRunner()
    last = str(result.run_dir / "last.keras")  # best.keras is epoch 1: mAP 1.0 already
    out = runner.invoke(main, ["predict", str(folder / "img"), "-m", last,
                               "--top-k", "3", "--project", str(tmp_path), "--name", "p"])
    assert out.exit_code == 0, out.output
    rows = _predictions(tmp_path / "p")
    assert list(rows[0])[:5] == ["path", "labels", "probabilities", "label", "probability"]
    right = 0
    for row in rows:
        top = {row[f"top{i}_label"]: float(row[f"top{i}_probability"]) for i in (1, 2, 3)}
        labels = row["labels"].split(";") if row["labels"] else []
        assert labels == [name for name, p in top.items() if p >= 0.5]
        truth = [n for n, k in zip(NAMES, range(3), strict=True)
                 if Image.open(folder / "img" / Path(row["path"]).name).getpixel((4 * k, 0))[0]
                 == 230]
        right += sorted(labels) == sorted(truth)
    assert right >= 0.7 * len(rows)
    every = runner.invoke(main, ["predict", str(folder / "img" / "1.png"), "-m",
                                 str(result.run_dir), "--threshold", "0", "--format", "json",
                                 "--project", str(tmp_path), "--name", "q"])
    assert every.exit_code == 0, every.output
    record = json.loads((tmp_path / "q" / "predictions.json").read_text())[0]
    assert sorted(r["label"] for r in record["labels"]) == sorted(NAMES)


def test_evaluate_on_a_csv_prints_map_ap_and_f1(trained, tmp_path):
    _, csv_path, result = trained
    out = CliRunner().invoke(main, ["evaluate", "-m", str(result.run_dir), "--data",
                                    str(csv_path), "--output", str(tmp_path / "e")])
    assert out.exit_code == 0, out.output
    assert "mAP" in out.output and "micro F1" in out.output and "AP" in out.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["images"] == 96 and set(metrics["per_class"]) == set(NAMES)
    assert 0.5 < metrics["map"] <= 1.0 and metrics["threshold"] == 0.5
    assert not (tmp_path / "e" / "confusion_matrix.png").exists()


def test_export_keeps_sigmoid_outputs_and_predicts_the_same_labels(trained, tmp_path):
    folder, _, result = trained
    runner = CliRunner()
    out = runner.invoke(main, ["export", str(result.run_dir), "-f", "tflite", "--samples", "16",
                               "--output", str(tmp_path / "x")])
    assert out.exit_code == 0, out.output
    assert "label-set agreement 100.0% on 16 images" in out.output  # not an argmax's
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    assert info["task"] == "multilabel" and info["threshold"] == 0.5
    assert info["exports"]["tflite"]["label_agreement"] == 1.0
    for name, model in (("k", str(result.run_dir)), ("t", str(tmp_path / "x" / "model.tflite"))):
        got = runner.invoke(main, ["predict", str(folder / "img"), "-m", model, "--top-k", "3",
                                   "--project", str(tmp_path), "--name", name])
        assert got.exit_code == 0, got.output
    keras_rows, tflite_rows = _predictions(tmp_path / "k"), _predictions(tmp_path / "t")
    assert [r["labels"] for r in keras_rows] == [r["labels"] for r in tflite_rows]
    sums = [sum(float(r[f"top{i}_probability"]) for i in (1, 2, 3)) for r in tflite_rows]
    assert max(abs(s - 1.0) for s in sums) > 0.05  # independent sigmoids, not a softmax


def test_multilabel_without_csv_is_refused_by_load_data():
    cfg = load_config(None, ["data.source=synthetic", "data.image_size=8"])
    with pytest.raises(UserError, match=r"needs data\.source csv"):
        load_data(cfg.data, None, 0, "multilabel")


def test_curves_of_a_multilabel_run_show_its_map_and_f1(tmp_path, monkeypatch):
    """A multilabel run has no val_accuracy: its accuracy panel showed training alone."""
    from resnet_builder import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    rows = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "lr": 0.1, "val_loss": 0.9,
             "val_map": 0.3 * e, "val_micro_f1": 0.2, "val_macro_f1": 0.25} for e in (1, 2)]
    plots.plot_curves(rows, tmp_path / "c.png")
    panel = figures[0].axes[1]
    assert [line.get_label() for line in panel.lines] == ["train", "val mAP", "val macro F1"]
    np.testing.assert_allclose(panel.lines[1].get_ydata(), [0.3, 0.6])
    for row in rows:  # a multiclass run keeps train and val accuracy
        row.pop("val_map"), row.update(val_accuracy=0.7)
    plots.plot_curves(rows, tmp_path / "c.png")
    assert [line.get_label() for line in figures[1].axes[1].lines] == ["train", "val"]


def test_the_export_check_compares_label_sets_for_multilabel():
    from resnet_builder.inference.export import compare

    reference = np.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.8]])
    got = np.array([[0.9, 0.4, 0.1], [0.2, 0.7, 0.8]])  # the same argmax, a label lost
    assert compare(reference, got)["top1_agreement"] == 1.0
    assert compare(reference, got, threshold=0.5)["label_agreement"] == 0.5


def test_a_multilabel_savedmodel_gives_its_labels_at_the_threshold(trained, tmp_path):
    import tensorflow as tf

    from resnet_builder.inference.export_formats import export_savedmodel
    from resnet_builder.inference.loading import load_inference_model

    _, _, result = trained
    im = load_inference_model(result.run_dir)
    info = export_savedmodel(im, tmp_path / "saved_model")
    assert info["outputs"] == ["probabilities", "positive"]
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    images = np.random.default_rng(0).integers(0, 256, (4, im.image_size, im.image_size,
                                                        im.channels)).astype(np.float32)
    out = serve(images=tf.constant(images))
    np.testing.assert_array_equal(out["positive"].numpy(),
                                  out["probabilities"].numpy() >= im.threshold)
