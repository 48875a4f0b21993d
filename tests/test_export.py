"""export.py and `resnet-builder export`: every format loads and agrees with the Keras model."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from inference_helpers import trained, write_images

from resnet_builder.cli import main
from resnet_builder.data.resizing import Resize, fit_image
from resnet_builder.errors import UserError
from resnet_builder.inference import export as export_module
from resnet_builder.inference.export import resolve_formats
from resnet_builder.inference.export_formats import TFLiteRunner


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def keras_probs(digits):
    import keras

    model = keras.models.load_model(digits.model_file, compile=False)
    images = digits.val_images[:100]
    return images, model.predict(images.astype(np.float32), verbose=0)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_the_saved_models_function_applies_the_resize_rule_at_the_models_size_too(mode):
    """A crop model's SavedModel took a model-size image as ready: predict and training crop
    its centre and resize it back, so the two disagreed (by up to 0.0065 here)."""
    import tensorflow as tf

    from resnet_builder import build_model
    from resnet_builder.inference.export_formats import _serving_function
    from resnet_builder.inference.loading import load_inference_model

    model = build_model(stackwise_filters=[4], stackwise_blocks=[1], stackwise_strides=[1],
                        num_classes=3, input_shape=(16, 16, 3), resize=mode, crop_pct=0.75)
    im = load_inference_model(model)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.float32)
    fitted = np.stack([fit_image(tf.constant(x, tf.uint8), im.resizing).numpy()
                       for x in images.astype(np.uint8)])
    want = model(fitted.astype(np.float32), training=False).numpy()
    got = _serving_function(im)(tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (mode == "crop") == (not np.array_equal(fitted, images.astype(np.uint8)))


def test_resolve_formats(monkeypatch):
    assert resolve_formats(["tflite", "savedmodel", "tflite"])[0] == ["tflite", "savedmodel"]
    assert resolve_formats("tflite")[0] == ["tflite"]  # one name, not its letters
    monkeypatch.setattr(export_module, "onnx_available", lambda: ["tf2onnx"])
    wanted, notes = resolve_formats(["all"])
    assert wanted == ["savedmodel", "tflite", "tflite-int8"]
    assert "onnx left out" in notes[0] and "resnet-builder[onnx]" in notes[0]
    with pytest.raises(UserError, match="ONNX export needs tf2onnx") as info:
        resolve_formats(["onnx"])
    assert "pip install 'resnet-builder[onnx]'" in str(info.value)


@pytest.mark.slow
def test_cli_export_all_formats_agree_with_keras(digits, keras_probs, tmp_path):
    import tensorflow as tf

    formats = ["savedmodel", "tflite", "tflite-int8"]
    has_onnx = not export_module.onnx_available()
    if has_onnx:
        formats.append("onnx")
    out = tmp_path / "export"
    args = ["export", str(digits.run), "--samples", "64", "--output", str(out)]
    for f in formats:
        args += ["--format", f]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "export.json").read_text())
    assert report["passed"] and set(report["exports"]) == set(formats)
    assert "validation images" in report["check_images"]
    assert "training images" in report["calibration_images"]
    for fmt, r in report["exports"].items():
        assert r["top1_agreement"] >= r["threshold"] and r["images"] == 64, fmt
        assert f"{fmt}: " in result.output and "top-1 agreement" in result.output
    assert report["exports"]["tflite"]["max_abs_diff"] < 1e-4
    assert report["exports"]["tflite-int8"]["input"]["dtype"] == "uint8"
    assert (out / "labels.txt").read_text().split() == [str(k) for k in range(10)]

    images, reference = keras_probs
    # SavedModel: raw float or uint8 pixels, any size (resized inside the graph)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    serve = loaded.signatures["serving_default"]
    got = serve(images=tf.constant(images, tf.float32))
    np.testing.assert_allclose(got["probabilities"].numpy(), reference, atol=1e-5)
    assert got["label"].numpy()[0].decode() == str(reference[0].argmax())
    got8 = loaded.signatures["serve_uint8"](images=tf.constant(images))["probabilities"]
    np.testing.assert_allclose(got8.numpy(), reference, atol=1e-5)
    bigger = tf.image.resize(tf.constant(images, tf.float32), (32, 32), method="bilinear")
    resized = serve(images=bigger)["probabilities"].numpy()
    assert resized.shape == (100, 10) and _agreement(resized, reference) >= 0.9
    how = Resize(images.shape[1])  # the model's own rule, as predict applies it
    fitted = np.stack([fit_image(tf.cast(tf.round(b), tf.uint8), how).numpy() for b in bigger])
    want = serve(images=tf.constant(fitted, tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(resized, want, atol=1e-5)

    # TFLite through tf.lite.Interpreter
    float_probs = TFLiteRunner((out / "model.tflite").read_bytes())(images, 64)
    assert np.abs(float_probs - reference).max() < 1e-4
    assert _agreement(float_probs, reference) >= 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's move-to-LiteRT notice
        interp = tf.lite.Interpreter(model_path=str(out / "model_int8.tflite"))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and outp["dtype"] == np.uint8
    int8_probs = TFLiteRunner((out / "model_int8.tflite").read_bytes())(images, 64)
    assert _agreement(int8_probs, reference) >= 0.95

    if has_onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                               providers=["CPUExecutionProvider"])
        onnx_probs = session.run(None, {"images": images.astype(np.float32)})[0]
        np.testing.assert_allclose(onnx_probs, reference, atol=1e-4)


@pytest.mark.slow
def test_export_int8_of_a_bare_model_file_needs_calibration(digits, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(digits.model_file, bare / "model.keras")  # no config.yaml beside it
    result = CliRunner().invoke(main, ["export", str(bare / "model.keras"), "-f", "tflite-int8",
                                       "--output", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "needs calibration images" in result.output and "--calibration" in result.output
    images = tmp_path / "images"
    write_images(digits, images, count=30)
    result = CliRunner().invoke(main, ["export", str(bare / "model.keras"), "-f", "tflite-int8",
                                       "--calibration", str(images), "--output",
                                       str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "export.json").read_text())
    assert report["exports"]["tflite-int8"]["passed"]
    assert report["exports"]["tflite-int8"]["images"] == 30  # the readable ones of 31
    assert [s["reason"] for s in report["skipped"]] == ["truncated file"]


def test_an_export_into_a_used_folder_removes_the_earlier_formats(digits, tmp_path):
    """export.json describes one export: an earlier export's file left beside it would run
    with this export's labels and resize rule, so it is removed, and one that appears
    later is refused."""
    out = tmp_path / "o"
    (out / "saved_model").mkdir(parents=True)  # the user's own, not recorded by an export
    (out / "saved_model" / "saved_model.pb").write_text("mine")
    for fmt in ("tflite", "tflite-int8"):
        result = CliRunner().invoke(main, ["export", str(digits.run), "-f", fmt, "--samples",
                                           "16", "--output", str(out)])
        assert result.exit_code == 0, result.output
    assert f"removed model.tflite, left by an earlier export into {out}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "labels.txt",
                                                     "model_int8.tflite", "saved_model"]
    assert (out / "saved_model" / "saved_model.pb").read_text() == "mine"  # kept
    shutil.copy(out / "model_int8.tflite", out / "model.tflite")  # a stray file, unrecorded
    result = CliRunner().invoke(main, ["predict", str(digits.run / "best.keras"), "--model",
                                       str(out / "model.tflite")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "model.tflite is not among the exports its export.json records (it holds " \
           "tflite-int8)" in result.output
    info = json.loads((out / "export.json").read_text())
    info["class_names"] = info["class_names"][:5]  # edited, or another export's
    (out / "export.json").write_text(json.dumps(info))
    images = tmp_path / "images"
    write_images(digits, images, count=2)
    result = CliRunner().invoke(main, ["predict", str(images), "--model",
                                       str(out / "model_int8.tflite"), "--project",
                                       str(tmp_path / "p")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "gives outputs of shape [2, 10], but the export.json beside it names 5 classes" \
        in result.output


@pytest.mark.slow
def test_export_failing_check_exits_non_zero(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(export_module.THRESHOLDS, "tflite", 1.01)  # unreachable
    result = CliRunner().invoke(main, ["export", str(digits.run), "-f", "tflite", "--samples",
                                       "16", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "export failed for tflite" in result.output
    report = json.loads((tmp_path / "runs" / "exp" / "export.json").read_text())
    assert report["passed"] is False and report["exports"]["tflite"]["passed"] is False


@pytest.mark.slow
def test_python_api_export_through_the_package(digits, tmp_path, monkeypatch):
    import keras

    import resnet_builder

    monkeypatch.chdir(tmp_path)
    model = keras.models.load_model(digits.model_file, compile=False)
    report = resnet_builder.export(model, ["tflite"], samples=16)
    assert report.folder.resolve() == (tmp_path / "runs" / "export" / "exp").resolve()
    assert not report.failed and report.results["tflite"]["images"] == 16
    assert "random images" in report.samples.check_source  # a model object has no run data
    assert (report.folder / "model.tflite").is_file()
    assert json.loads((report.folder / "export.json").read_text())["passed"]


def test_the_check_uses_only_readable_validation_images(tmp_path):
    """An unreadable validation file (a blank row, label -1, in the split) is not a check
    image: it is named in the samples' skipped list instead."""
    from types import SimpleNamespace

    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 3)):
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                    tmp_path / "data" / split / label / f"{i}.png")
    (tmp_path / "data" / "val" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  source: folder\n  path: {tmp_path / 'data'}\n  image_size: 8\n"
                      "  channels: 3\n  cache: false\n")
    im = SimpleNamespace(image_size=8, channels=3, task="multiclass")
    samples = export_module._config_samples(im, config, 64)
    assert len(samples.check) == 6 and samples.check_source.startswith("6 validation images")
    assert [name.rsplit("/", 1)[-1] for name, _ in samples.skipped] == ["broken.png"]
