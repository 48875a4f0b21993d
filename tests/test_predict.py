"""predict and `resnet-builder predict`: sources, pipeline, outputs, skips, Grad-CAM."""

from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from inference_helpers import KINDS, save_as, trained, write_images
from PIL import Image

from resnet_builder.cli import main
from resnet_builder.data.resizing import Resize
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.loading import load_inference_model
from resnet_builder.inference.predict import csv_columns
from resnet_builder.inference.sources import ImageSource, Skipped, collect_images


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def images(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, write_images(digits, folder)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------- sources (no TF)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_collect_folder_paths_are_relative_and_distinct(tmp_path):
    for rel in ["a/x.png", "b/x.png", "b/deep/y.JPG", "notes.txt", ".hidden.png"]:
        _touch(tmp_path / "src" / rel)
    found, skipped = collect_images([tmp_path / "src"])
    assert [s.path for s in found] == ["a/x.png", "b/deep/y.JPG", "b/x.png"]
    assert skipped == [Skipped("notes.txt", "not an image file (extension '.txt')")]


def test_collect_skips_a_name_that_is_not_utf8_by_folder_glob_and_file(tmp_path, monkeypatch):
    """Such a name cannot enter a TensorFlow string or predictions.csv: skipped, shown as
    \\xe9, never a crash."""
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "src" / "ok.png")
    odd = _touch(tmp_path / "src" / os.fsdecode(b"caf\xe9.png"))
    said = Skipped("caf\\xe9.png", "its name is not valid UTF-8 (rename the file)")
    for source in ["src", "src/*.png"]:
        found, skipped = collect_images(source)
        assert [s.path for s in found] == ["ok.png"] and skipped == [said]
    found, skipped = collect_images(str(odd))
    assert found == [] and skipped[0].reason == said.reason and "\\xe9" in skipped[0].path


def test_collect_single_file_is_absolute_and_tried_whatever_its_extension(tmp_path):
    file = _touch(tmp_path / "photo.webp")
    found, skipped = collect_images(str(file))
    assert found == [ImageSource(file, str(file.resolve()))] and skipped == []


def test_collect_globs_missing_sources_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ["imgs/a/x.png", "imgs/b/x.png", "imgs/b/z.gif", "imgs/top.png"]:
        _touch(tmp_path / rel)
    found, skipped = collect_images(["imgs/**/x.png", "imgs/a", "imgs/*.png", "nope.png",
                                     "none/*.jpg"])
    # the glob's fixed part (imgs/) is the base; imgs/a/x.png is not listed twice
    assert [s.path for s in found] == ["a/x.png", "b/x.png", "top.png"]
    assert skipped == [Skipped("nope.png", "file or folder not found"),
                       Skipped("none/*.jpg", "no file matches this pattern")]


def test_collect_a_home_glob_is_relative_to_its_expanded_base(tmp_path, monkeypatch):
    """~/imgs/*.png: the base is expanded with the matches (it used to give ../../..)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _touch(tmp_path / "home" / "imgs" / "a.png")
    found, skipped = collect_images("~/imgs/*.png")
    assert [s.path for s in found] == ["a.png"] and skipped == []
    assert collect_images("~/none/*.png")[1] == [Skipped("~/none/*.png",
                                                         "no file matches this pattern")]


def test_collect_same_name_from_two_sources_stays_distinct(tmp_path, monkeypatch):
    """Two globs (or folders) that each give x.png: paths become relative to their common
    parent instead of colliding; a named file stays absolute."""
    monkeypatch.chdir(tmp_path)
    for rel in ["pred/x.png", "pred/y.png", "pred/sub/x.png", "other/X.png", "one.png"]:
        _touch(tmp_path / rel)
    found, _ = collect_images(["pred/*.png", "pred/sub/*.png"])
    assert [s.path for s in found] == ["x.png", "y.png", "sub/x.png"]
    found, _ = collect_images(["pred/sub", "other", "one.png"])  # X.png vs x.png: cam/ too
    assert [s.path for s in found] == ["pred/sub/x.png", "other/X.png",
                                       str((tmp_path / "one.png").resolve())]


def test_csv_columns():
    assert csv_columns(2) == ["path", "label", "probability", "top1_label", "top1_probability",
                              "top2_label", "top2_probability"]


# ------------------------------------------------------------------ with the model


def test_every_image_kind_gives_the_training_pixels(digits, tmp_path):
    """Gray, RGBA, 16-bit, RGB and palette PNGs all decode to the validation pixels."""
    pixels = digits.val_images[0]
    for kind in KINDS:
        path = tmp_path / f"{kind}.png"
        save_as(pixels, path, kind)
        _, images, bad = next(decoded_batches([path], Resize(16), 1, 1))
        assert bad == [], kind
        got = images[0]
        if kind == "L32":  # resized down from 32x32: close, not identical
            assert np.abs(got.astype(int) - pixels).mean() < 12
        else:
            np.testing.assert_array_equal(got, pixels, err_msg=kind)


@pytest.mark.slow
def test_cli_predict_folder_with_grid_and_cam(digits, images, tmp_path):
    folder, truth = images
    project = tmp_path / "runs" / "predict"
    result = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                       "--grid", "--cam", "--project", str(project)])
    assert result.exit_code == 0, result.output
    out = project / "exp"
    rows = _rows(out / "predictions.csv")
    assert list(rows[0]) == csv_columns(5)
    assert {r["path"] for r in rows} == set(truth)  # a/000.png and b/000.png both
    right = sum(r["label"] == str(truth[r["path"]]) for r in rows)
    assert right >= 0.95 * len(truth), f"{right}/{len(truth)} right"
    for r in rows:
        probs = [float(r[f"top{i}_probability"]) for i in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and r["label"] == r["top1_label"]
        assert float(r["probability"]) == probs[0] and 0 < probs[0] <= 1
    skipped = _rows(out / "skipped.csv")
    assert {s["path"] for s in skipped} == {"a/corrupt.png", "b/readme.txt"}
    assert all(s["reason"] for s in skipped)
    assert "a/corrupt.png" in result.output and "b/readme.txt" in result.output
    assert f"predicted {len(truth)} image(s), skipped 2" in result.output
    assert "images/s" in result.output
    with Image.open(out / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > 100 and grid.height > 100
    for rel in truth:  # cam/ mirrors the sub-folders: a/000.png and b/000.png both exist
        with Image.open(out / "cam" / rel) as cam:
            cam.load()
            assert cam.mode == "RGB" and cam.width > 0 and cam.height > 0
    assert len(list((out / "cam").rglob("*.png"))) == len(truth)


@pytest.mark.slow
def test_cli_nothing_predictable_exits_non_zero(digits, images, tmp_path):
    folder, _ = images
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(folder / "a" / "corrupt.png", bad)
    shutil.copy(folder / "b" / "readme.txt", bad)
    project = tmp_path / "runs"
    result = CliRunner().invoke(main, ["predict", str(bad), "--model", str(digits.model_file),
                                       "--project", str(project)])
    assert result.exit_code != 0
    assert "nothing could be predicted" in result.output
    assert "corrupt.png" in result.output and "readme.txt" in result.output
    assert "Traceback" not in result.output
    assert len(_rows(project / "exp" / "skipped.csv")) == 2


@pytest.mark.slow
def test_cli_default_model_is_newest_run_and_json(digits, images, tmp_path, monkeypatch):
    folder, truth = images
    monkeypatch.chdir(tmp_path)
    shutil.copytree(digits.run, tmp_path / "runs" / "train" / "exp")
    result = CliRunner().invoke(main, ["predict", str(folder / "a" / "001.png"), "--format",
                                       "json", "--top-k", "50", "--name", "one"])
    assert result.exit_code == 0, result.output
    expected = os.path.join("runs", "train", "exp", "best.keras")
    assert f"model: {expected} (newest run under runs/train)" in result.output
    records = json.loads((tmp_path / "runs" / "predict" / "one" / "predictions.json").read_text())
    assert len(records) == 1
    assert records[0]["path"] == str((folder / "a" / "001.png").resolve())  # a single file
    assert len(records[0]["top_k"]) == 10  # capped at the number of classes
    assert records[0]["label"] == str(truth["a/001.png"])


@pytest.mark.slow
def test_python_api(digits, images):
    import keras

    import resnet_builder

    folder, truth = images
    model = keras.models.load_model(digits.model_file, compile=False)
    result = resnet_builder.predict(model, [folder / "a", folder / "b" / "000.png"], top_k=3,
                                    batch_size=5)
    assert len(result) == len([p for p in truth if p.startswith("a/")]) + 1
    assert [s.path for s in result.skipped] == ["corrupt.png"]
    first = result[0]
    assert first.path == "000.png" and first.label == str(truth["a/000.png"])
    assert len(first.top_k) == 3 and first.top_k[0] == (first.label, first.probability)
    assert first.as_dict()["top_k"][0] == {"label": first.label,
                                           "probability": first.probability}
    assert result[-1].path == str((folder / "b" / "000.png").resolve())
    # a path works as well as a model object, and batch size does not change results
    again = resnet_builder.predict(str(digits.run), [folder / "a"], top_k=3, batch_size=64)
    assert [(p.path, p.label) for p in again] == [(p.path, p.label) for p in result[:-1]]
    np.testing.assert_allclose([p.probability for p in again],
                               [p.probability for p in result[:-1]], rtol=1e-5)


@pytest.mark.slow
def test_gradcam_heatmaps(digits):
    im = load_inference_model(digits.model_file)
    probs, heat = im.gradcam(digits.val_images[:8])
    np.testing.assert_allclose(probs, im.probabilities(digits.val_images[:8]), atol=1e-5)
    assert heat.shape == (8, 4, 4)  # the backbone's last feature map for 16x16 inputs
    assert heat.min() >= 0 and np.allclose(heat.max(axis=(1, 2)), 1.0)


@pytest.mark.slow
def test_cli_two_globs_with_the_same_file_name(digits, tmp_path):
    """pred/x.png and pred/sub/x.png through two globs: two rows, each with its own cam."""
    pred = tmp_path / "pred"
    save_as(digits.val_images[0], pred / "x.png", "L")
    save_as(digits.val_images[1], pred / "sub" / "x.png", "L")
    project = tmp_path / "runs"
    result = CliRunner().invoke(main, ["predict", str(pred / "*.png"), str(pred / "sub" / "*.png"),
                                       "-m", str(digits.model_file), "--cam",
                                       "--project", str(project)])
    assert result.exit_code == 0, result.output
    out = project / "exp"
    rows = _rows(out / "predictions.csv")
    assert [r["path"] for r in rows] == ["x.png", "sub/x.png"]
    cams = sorted(p.relative_to(out / "cam").as_posix() for p in (out / "cam").rglob("*.png"))
    assert cams == sorted(r["path"] for r in rows)  # cam/x.png, cam/sub/x.png: no x~2.png


def test_cli_model_file_that_is_not_a_keras_archive(tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model")
    empty_zip = tmp_path / "zip.keras"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    for model, reason in [(fake, "not a zip archive"), (empty_zip, "without the config.json")]:
        result = CliRunner().invoke(main, ["predict", str(tmp_path), "-m", str(model),
                                           "--project", str(tmp_path / "runs")])
        assert result.exit_code != 0
        assert f"{model} is not a Keras model file (.keras): " in result.output
        assert reason in result.output and "best.keras or last.keras" in result.output
        assert "File not found" not in result.output and "Traceback" not in result.output


def test_cli_exist_ok_replaces_an_earlier_predicts_files(digits, images, tmp_path):
    """predictions.csv of an earlier run stayed beside the new predictions.json."""
    folder, _ = images
    args = ["predict", str(folder), "--model", str(digits.model_file), "--project",
            str(tmp_path), "--name", "odd", "--exist-ok"]
    assert CliRunner().invoke(main, [*args, "--grid"]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "removed the earlier predict's predictions.csv, skipped.csv, grid.png" in result.output
    assert sorted(p.name for p in (tmp_path / "odd").iterdir()) == ["predictions.json",
                                                                    "skipped.csv"]


def test_a_failed_predict_keeps_the_earlier_results_and_leaves_no_empty_folder(
        digits, images, tmp_path, monkeypatch):
    """A failed --exist-ok predict (a typo in the path, a model failing mid-run) emptied the
    earlier predict's files; any failed predict left an empty or header-only folder."""
    from resnet_builder.inference import predict as predict_module

    folder, _ = images
    args = ["--model", str(digits.model_file), "--project", str(tmp_path), "--name", "keep",
            "--exist-ok"]
    assert CliRunner().invoke(main, ["predict", str(folder), *args, "--grid"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "keep").iterdir()}
    typo = CliRunner().invoke(main, ["predict", str(tmp_path / "no_such"), *args])
    assert typo.exit_code == 1 and "left as they were" in typo.output

    def failing(*args, **kwargs):
        yield from ()
        raise RuntimeError("the model failed")

    monkeypatch.setattr(predict_module, "iter_predictions", failing)
    broken = CliRunner().invoke(main, ["predict", str(folder), *args])
    assert broken.exit_code == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "keep").iterdir()} == before
    fresh = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                      "--project", str(tmp_path / "new")])
    assert fresh.exit_code == 1 and not list((tmp_path / "new").iterdir())


def test_a_killed_predicts_staging_folder_is_not_an_earlier_predict(digits, images,
                                                                     tmp_path):
    folder, _ = images
    (tmp_path / "p" / ".predicting-old" / "cam").mkdir(parents=True)
    (tmp_path / "p" / "cam").write_text("the user's file")
    args = ["--model", str(digits.model_file), "--project", str(tmp_path), "--name", "p",
            "--exist-ok"]
    nothing = CliRunner().invoke(main, ["predict", str(tmp_path / "no_such"), *args])
    assert nothing.exit_code == 1 and "left as they were" not in nothing.output
    cam = CliRunner().invoke(main, ["predict", str(folder), *args, "--cam"])
    assert cam.exit_code == 1 and "p/cam is a file" in cam.output  # it crashed after predicting
    done = CliRunner().invoke(main, ["predict", str(folder), *args])
    assert done.exit_code == 0 and "removed" not in done.output
    assert not list((tmp_path / "p").glob(".predicting-*"))
    assert (tmp_path / "p" / "cam").read_text() == "the user's file"


def test_cam_names_never_swap_an_image_named_like_anothers_overlay(tmp_path):
    """a.jpg's overlay was cam/a.jpg.png, the name of the image a.jpg.png, whose own overlay
    became a.jpg~2.png."""
    from resnet_builder.inference.drawing import MirroredNames

    for order in (["a.jpg", "a.jpg.png"], ["a.jpg.png", "a.jpg"]):
        names = MirroredNames(tmp_path, [ImageSource(tmp_path / o, o) for o in order])
        got = {o: names(o).name for o in order}
        assert got == {"a.jpg.png": "a.jpg.png", "a.jpg": "a.jpg~2.png"}, order


def test_links_to_one_file_are_each_predicted_under_their_own_names(tmp_path):
    """Two links to one file (and the file) were predicted once, the rest silently gone, and
    a link given alone was named by its target."""
    _touch(tmp_path / "src" / "pool.png")
    for folder in ("a", "b"):
        (tmp_path / "src" / folder).mkdir()
        os.symlink("../pool.png", tmp_path / "src" / folder / "x.png")
    found, skipped = collect_images([tmp_path / "src"])
    assert [s.path for s in found] == ["a/x.png", "b/x.png", "pool.png"] and not skipped
    alone, _ = collect_images([tmp_path / "src" / "a" / "x.png"])
    assert alone[0].path == str(tmp_path / "src" / "a" / "x.png")


@pytest.mark.parametrize("name", [".", "..", "", "a/b"])
def test_cli_name_must_be_a_folder_name(digits, images, tmp_path, name):
    """--name . --exist-ok cleared the project folder itself (there: the images' cam/)."""
    folder, _ = images
    result = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                       "--project", str(tmp_path), "--name", name, "--exist-ok"])
    assert result.exit_code == 2 and f"{name!r} is not a folder name" in result.output


def test_cli_exist_ok_leaves_a_folder_of_the_users_own_and_the_images_alone(digits, tmp_path):
    """Only a folder showing an earlier predict (its predictions file) is cleared, and
    never when the images being predicted are inside what would be removed."""
    own = tmp_path / "mine"
    cam_image = own / "cam" / "p.png"
    cam_image.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(cam_image)
    (own / "grid.png").write_bytes(b"the user's")
    args = ["predict", str(cam_image), "--model", str(digits.model_file), "--project",
            str(tmp_path), "--name", "mine", "--exist-ok"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert cam_image.exists() and (own / "grid.png").read_bytes() == b"the user's"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "which --exist-ok would replace" in again.output
    assert cam_image.exists()


def test_cli_grid_draws_names_with_dollars_and_multilabel_answers(digits, tmp_path):
    """Two "$" in a name were read as a formula: 'this is a bug' and no grid.png. A
    multilabel model's tile shows its labels at the threshold, not the top class."""
    from resnet_builder.inference.drawing import _title
    from resnet_builder.inference.predict import Prediction
    from resnet_builder.plots import plot_confusion_matrix

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "cost_$5_to_$10.png")
    result = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                       "--grid", "--project", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "exp" / "grid.png").stat().st_size > 0
    plot_confusion_matrix(np.eye(2, dtype=int), ["$a", "b$"], tmp_path / "cm.png")
    record = Prediction("x.png", "cat", 0.9, [("cat", 0.9), ("dog", 0.8)], 0,
                        labels=[("cat", 0.9), ("dog", 0.8), ("cow", 0.7)])
    assert _title(record) == "cat 0.90, dog 0.80 +1"
    record.labels = []
    assert _title(record) == "(no label)"


def test_cli_threshold_on_a_multiclass_model_is_refused(digits, images, tmp_path):
    folder, _ = images
    result = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                       "--threshold", "0.3", "--project", str(tmp_path)])
    assert result.exit_code == 2 and "--threshold applies to multilabel models" in result.output


def test_cli_cam_notes_an_image_it_cannot_draw_and_predicts_on(digits, tmp_path, monkeypatch):
    """One image Pillow refuses (too large) stopped the whole predict, with no
    predictions.csv; it is now predicted, its overlay noted as missing."""
    from resnet_builder.data.images import ImageError
    from resnet_builder.inference import drawing

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "huge.png"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / name)
    real = drawing.display_pixels

    def refusing(file, *args, **kwargs):
        if Path(file).name == "huge.png":
            raise ImageError(file, "image too large")
        return real(file, *args, **kwargs)

    monkeypatch.setattr(drawing, "display_pixels", refusing)
    result = CliRunner().invoke(main, ["predict", str(folder), "--model", str(digits.model_file),
                                       "--cam", "--project", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "note: huge.png: no Grad-CAM overlay: cannot read image" in result.output
    out = tmp_path / "out" / "exp"
    assert len(_rows(out / "predictions.csv")) == 2
    assert [p.name for p in (out / "cam").iterdir()] == ["a.png"]


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_cam_heat_goes_back_through_the_resize_rule(mode):
    """Heat over a crop model's input lands on the centre square it saw (the rest dimmed),
    a pad model's padding rows are cut off: stretched over the whole image, both put heat
    where the model never looked."""
    from resnet_builder.inference.drawing import _placed_heat

    heat = np.zeros((16, 16), np.float32)
    heat[:, :8] = 1.0  # the input's left half is hot
    placed, seen = _placed_heat(heat, Resize(16, mode, 0.5), (40, 80), (40, 80))
    if mode == "crop":  # a 20x20 centre square at rows 10-30, columns 30-50
        assert seen[10:30, 30:50].all() and seen.sum() == 400
        assert placed[20, 32] > 0.9 and placed[20, 48] < 0.1 and placed[:, :30].max() == 0
    else:  # the input held the image in rows 4-12: all of the image's width, every row
        assert seen.all()
        assert placed[:, :38].min() > 0.9 and placed[:, 42:].max() < 0.1


def test_collect_skips_a_named_pipe_in_a_folder(tmp_path):
    """It was listed as an image, and predict waited on it forever."""
    _touch(tmp_path / "src" / "a.png")
    os.mkfifo(tmp_path / "src" / "pipe.png")
    os.mkfifo(tmp_path / "elsewhere.png")
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "src" / "link.png")  # behind a link
    os.symlink(tmp_path / "gone.png", tmp_path / "src" / "dangling.png")  # the read says
    found, skipped = collect_images([tmp_path / "src"])
    assert [s.path for s in found] == ["a.png", "dangling.png"]
    why = "not a regular file (a named pipe, socket or device)"
    assert skipped == [Skipped("link.png", why), Skipped("pipe.png", why)]
    found, skipped = collect_images([str(tmp_path / "src" / "*.png")])
    assert [s.path for s in found] == ["a.png", "dangling.png"]
    assert sorted(s.path for s in skipped) == ["link.png", "pipe.png"]


def test_collect_names_a_folder_it_does_not_list(tmp_path):
    """A link back up the tree (and a folder without permission) were left out in silence."""
    _touch(tmp_path / "src" / "sub" / "a.png")
    os.symlink("..", tmp_path / "src" / "sub" / "loop")
    found, skipped = collect_images([tmp_path / "src"])
    assert [s.path for s in found] == ["sub/a.png"]
    assert [s.path for s in skipped] == ["sub/loop"]
    assert skipped[0].reason.startswith("folder cannot be read (a link back up the tree, to ")


@pytest.mark.parametrize("short", [45, 85, 165])
def test_cam_crop_window_is_the_models_to_the_pixel(short):
    """Worked out in float64 the window was a pixel off fit_image's float32 at these sizes."""
    import tensorflow as tf

    from resnet_builder.data.resizing import centre_window
    from resnet_builder.inference.drawing import _placed_heat

    how = Resize(16, "crop", 0.7)
    _, seen = _placed_heat(np.ones((4, 4), np.float32), how, (short, 300), (short, 300))
    start, extent = (t.numpy() for t in centre_window(tf.constant([short, 300]), how))
    rows, cols = np.nonzero(seen)
    assert (rows.min(), cols.min()) == tuple(start)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == tuple(extent)
