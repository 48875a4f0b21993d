"""Issue 12 in use: ResNet101/152V2 ImageNet weights, webp/tiff images, exported models in
predict and evaluate, and test-time augmentation (TTA)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from inference_helpers import trained, write_images
from PIL import Image

from resnet_builder import ResNetV2Backbone
from resnet_builder import evaluate as evaluate_api
from resnet_builder import predict as predict_api
from resnet_builder.cli import main
from resnet_builder.config import DataConfig
from resnet_builder.data import load_data
from resnet_builder.data.decode import decode_and_resize, needs_pil
from resnet_builder.data.folders import scan_class_folders
from resnet_builder.data.images import load_image
from resnet_builder.data.resizing import Resize, fit_image
from resnet_builder.errors import UserError
from resnet_builder.inference.decode import decoded_batches
from resnet_builder.inference.export import export, onnx_available
from resnet_builder.inference.loading import load_inference_model
from resnet_builder.inference.sources import collect_images
from resnet_builder.model.architecture import resolve_architecture
from resnet_builder.model.presets import PRESETS
from resnet_builder.model.weights import keras_applications_name

# ------------------------------------------------------------------ ImageNet presets


@pytest.mark.parametrize("layers", [50, 101, 152])
def test_imagenet_presets_name_keras_applications_notop_files(layers):
    """File, URL and MD5 are the ones keras.applications itself downloads; the network is
    the plain preset's with keras.applications' strides, padding and input range."""
    from keras.src.applications import resnet as applications

    entry = PRESETS[f"resnet{layers}_v2_imagenet"]
    spec, key = entry["weights"], f"resnet{layers}v2"
    assert spec["file"] == f"{key}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert spec["url"] == applications.BASE_WEIGHTS_PATH + spec["file"]
    assert spec["md5"] == applications.WEIGHTS_HASHES[key][1]
    plain = PRESETS[f"resnet{layers}_v2"]
    assert entry["params"] == plain["params"]
    assert entry["config"] == {**plain["config"], "stackwise_strides": [2, 2, 2, 1],
                               "padding": "symmetric", "rescale_to": [-1.0, 1.0]}


def _weight_layout(plan_or_model) -> dict[str, list[tuple[int, ...]]]:
    if hasattr(plan_or_model, "ops"):
        return {keras_applications_name(op.name): [s for _, s in op.weights]
                for op in plan_or_model.ops if op.weights}
    return {layer.name: [tuple(w.shape) for w in layer.weights]
            for layer in plan_or_model.layers if layer.weights}


@pytest.mark.slow
def test_resnet152_v2_layers_map_onto_keras_applications_by_name():
    """Every weighted layer of our ResNet152V2 has keras.applications' name and shapes."""
    import keras

    plan, _ = resolve_architecture(preset="resnet152_v2_imagenet", input_shape=(32, 32, 3)
                                   ).plan()
    reference = keras.applications.ResNet152V2(weights=None, include_top=False,
                                               input_shape=(32, 32, 3))
    assert _weight_layout(plan) == _weight_layout(reference)


@pytest.mark.slow
def test_resnet101_v2_imagenet_loads_a_keras_applications_file(tmp_path, monkeypatch):
    """A file written by Keras' own legacy HDF5 writer from keras.applications' ResNet101V2
    (random weights), found in the cache by name and MD5, fills every layer by name, and
    the preset's network then computes keras.applications' features: raw pixels in give
    what keras.applications gives for them after its ``preprocess_input``."""
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    reference = keras.applications.ResNet101V2(weights=None, include_top=False,
                                               input_shape=(32, 32, 3))
    plan, _ = resolve_architecture(preset="resnet101_v2_imagenet", input_shape=(32, 32, 3)
                                   ).plan()
    assert _weight_layout(plan) == _weight_layout(reference)
    rng = np.random.default_rng(0)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # not the initial 1s and 0s
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([1 + 0.1 * rng.standard_normal(gamma.shape), 0.1 *
                               rng.standard_normal(beta.shape), 0.1 *
                               rng.standard_normal(mean.shape),
                               1 + 0.1 * np.abs(rng.standard_normal(var.shape))])
    spec = PRESETS["resnet101_v2_imagenet"]["weights"]
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    with h5py.File(cache / spec["file"], "w") as f:
        save_weights_to_hdf5_group(f, reference)
    md5 = hashlib.md5((cache / spec["file"]).read_bytes()).hexdigest()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(spec, "md5", md5)

    ours = ResNetV2Backbone.from_preset("resnet101_v2_imagenet", input_shape=(32, 32, 3))
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = reference.predict(
        keras.applications.resnet_v2.preprocess_input(pixels.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)
    filled = 0
    for layer in ours.layers:
        if layer.weights:
            want = reference.get_layer(keras_applications_name(layer.name)).get_weights()
            for got, expected in zip(layer.get_weights(), want, strict=True):
                np.testing.assert_array_equal(got, expected)
            filled += 1
    assert filled == len(_weight_layout(reference)) == 2 + 6 * 33 + 4  # stem, post_bn, blocks


# ------------------------------------------------------------------------ webp, tiff


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 5, 3), np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))


def _pillow_then_resize(path, size: int, channels: int) -> np.ndarray:
    """The reference: Pillow's decode (load_image), then the one resize rule."""
    return fit_image(tf.constant(load_image(path, channels)), Resize(size)).numpy()


def _webp_and_tiff(folder) -> dict[str, bytes]:
    """One file of each new kind (and byte order), as Pillow writes them."""
    from PIL import features

    assert features.check("webp"), "this Pillow cannot write webp"
    folder.mkdir(parents=True, exist_ok=True)
    photo = _rgb(20, 30, 0)
    rgba = np.dstack([photo, np.linspace(0, 255, 30, dtype=np.uint8)[None].repeat(20, 0)])
    Image.fromarray(photo).save(folder / "lossless.webp", lossless=True)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.webp", quality=80)
    Image.fromarray(photo).save(folder / "rgb.tif")
    big = (photo[..., 0].astype(">u2") * 257).tobytes()  # 16-bit big-endian: an MM file
    Image.frombytes("I;16B", (30, 20), big).save(folder / "g16.tiff")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_webp_and_tiff_go_through_pillow(tmp_path):
    files = _webp_and_tiff(tmp_path / "c")
    assert files["g16.tiff"][:4] == b"MM\x00*" and files["rgb.tif"][:4] == b"II*\x00"
    assert files["alpha.webp"][8:12] == b"WEBP"
    for name, data in files.items():
        contents = tf.constant(data)
        assert bool(needs_pil(contents)), name
        for channels in (1, 3):
            got = decode_and_resize(contents, Resize(16), channels).numpy()
            np.testing.assert_array_equal(got, _pillow_then_resize(tmp_path / "c" / name, 16,
                                                                   channels), err_msg=name)
    assert not bool(needs_pil(tf.constant((tmp_path / "c" / "rgb.tif").read_bytes()[4:])))
    assert [p.name for p in scan_class_folders(tmp_path).classes["c"]] == sorted(files)
    assert scan_class_folders(tmp_path).skipped == []
    found, skipped = collect_images([tmp_path])
    assert len(found) == 4 and skipped == []


def test_folder_training_data_reads_webp_and_tiff(tmp_path):
    """The folder source (training) decodes them, none skipped, pixels as Pillow's."""
    for name in ("ant", "bee"):
        _webp_and_tiff(tmp_path / name)
    bundle = load_data(DataConfig(source="folder", path=str(tmp_path), image_size=8,
                                  validation_split=0.0), seed=0)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.train_dataset(0, 4)],
                         strict=True)
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert bundle.num_train == 8 and sorted(labels.tolist()) == [0] * 4 + [1] * 4
    expected = {_pillow_then_resize(p, 8, 3).tobytes() for p in tmp_path.rglob("*.*")}
    assert {image.astype(np.uint8).tobytes() for image in images} == expected  # float 0..255


# ---------------------------------------------------- the trained model and its exports


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def images(digits, tmp_path_factory):
    """Validation digits as files in a/ and b/ (and a corrupt one, a text file)."""
    folder = tmp_path_factory.mktemp("images")
    write_images(digits, folder, count=36)
    return folder


@pytest.fixture(scope="module")
def labelled(digits, tmp_path_factory):
    """60 validation digits in class folders, as lossless webp and tiff."""
    root = tmp_path_factory.mktemp("labelled")
    for i in range(60):
        label = str(digits.val_labels[i])
        (root / label).mkdir(exist_ok=True)
        gray = Image.fromarray(digits.val_images[i][..., 0], "L")
        if i % 2:
            gray.save(root / label / f"{i}.webp", lossless=True)
        else:
            gray.save(root / label / f"{i}.tiff")
    return root


@pytest.fixture(scope="module")
def exports(digits, tmp_path_factory):
    """Every format `resnet-builder export` writes, in one folder with its export.json."""
    formats = ["savedmodel", "tflite", "tflite-int8"] + ([] if onnx_available() else ["onnx"])
    report = export(digits.run, formats, samples=32,
                    output=tmp_path_factory.mktemp("exports") / "exp")
    assert not report.failed
    return report.folder


@pytest.fixture(scope="module")
def reference(digits, images):
    """The .keras model's predictions of ``images``, every class's probability."""
    return predict_api(digits.model_file, images, top_k=10)


@pytest.fixture(scope="module")
def on_keras(digits, labelled):
    """The .keras model's evaluation of ``labelled``, without TTA."""
    return evaluate_api(digits.model_file, data=labelled, top_k=3).metrics


FLOAT_EXPORTS = ["saved_model", "model.tflite", "model.onnx"]


def _probabilities(result) -> np.ndarray:
    return np.array([[p for _, p in sorted(r.top_k, key=lambda t: t[0])] for r in result])


@pytest.mark.parametrize("name", [*FLOAT_EXPORTS, "model_int8.tflite"])
def test_predict_with_an_export_gives_the_keras_labels(images, exports, reference, name):
    if name == "model.onnx" and onnx_available():
        pytest.skip("onnx extra not installed")
    assert (exports / name).exists(), f"{name} was not exported"
    got = predict_api(exports / name, images, top_k=10)
    assert [r.path for r in got] == [r.path for r in reference] and len(got) == 36
    assert [s.reason for s in got.skipped] == [s.reason for s in reference.skipped]
    diff = np.abs(_probabilities(got) - _probabilities(reference)).max()
    agree = np.mean([a.label == b.label for a, b in zip(got, reference, strict=True)])
    if name in FLOAT_EXPORTS:  # as the float exports' check: |diff| ~1e-7 at export
        assert diff < 1e-4 and agree == 1.0
    else:
        assert agree >= 0.95  # the int8 threshold of the export check


def test_evaluate_with_an_export_matches_keras(labelled, exports, on_keras, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "-m", str(exports / "saved_model"),
                                       "--data", str(labelled), "--top-k", "3", "--json", "-o",
                                       str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["images"] == 60 and metrics["skipped"] == 0  # every webp and tiff
    assert metrics["model"] == str(exports / "saved_model")
    assert metrics["confusion_matrix"] == on_keras["confusion_matrix"]
    assert metrics["accuracy"] == on_keras["accuracy"] >= 0.9


def test_an_export_needs_its_export_json_and_the_keras_model_for_more(images, exports,
                                                                      tmp_path):
    im = load_inference_model(exports / "model_int8.tflite")
    assert (im.model, im.kind, im.image_size, im.channels) == (None, "tflite-int8", 16, 1)
    assert (im.labels, im.resize) == ([str(k) for k in range(10)], "stretch")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(exports / "model.tflite", alone / "model.tflite")
    with pytest.raises(UserError, match=r"no export\.json beside it"):
        load_inference_model(alone / "model.tflite")
    with pytest.raises(UserError, match="is an export folder") as err:
        load_inference_model(exports)
    assert "saved_model" in err.value.hint
    info = json.loads((exports / "export.json").read_text())
    info["image_shape"] = [8, 8, 1]
    (alone / "export.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"takes input \[16, 16, 1\]"):
        load_inference_model(alone / "model.tflite")
    info["image_shape"] = [16, 16, 1]
    info["exports"]["tflite"]["passed"] = False
    (alone / "export.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="failed its check"):
        load_inference_model(alone / "model.tflite")

    result = CliRunner().invoke(main, ["predict", str(images), "-m",
                                       str(exports / "model.tflite"), "--cam", "--project",
                                       str(tmp_path / "p")])
    assert result.exit_code == 1 and "Grad-CAM (--cam) needs the Keras model" in result.output
    with pytest.raises(UserError, match="export needs the Keras model"):
        export(exports / "model.tflite", ["tflite"], output=tmp_path / "again")


def test_onnx_without_onnxruntime_names_the_extra(exports, monkeypatch):
    if onnx_available():
        pytest.skip("onnx extra not installed")
    assert (exports / "model.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(UserError, match="needs onnxruntime") as err:
        load_inference_model(exports / "model.onnx")
    assert "pip install 'resnet-builder[onnx]'" in err.value.hint


# ---------------------------------------------------------------------------------- TTA


def test_tta_averages_the_image_and_its_mirror(digits, images, reference):
    got = predict_api(digits.model_file, images, top_k=10, tta=True)
    assert [r.path for r in got] == [r.path for r in reference] and len(got) == 36
    files = [images / r.path for r in got]
    (_, pixels, _), = decoded_batches(files, Resize(16), 1, 64)
    im = load_inference_model(digits.model_file)
    mirrored = im.probabilities(pixels[:, :, ::-1])
    np.testing.assert_allclose(_probabilities(got),
                               (_probabilities(reference) + mirrored) / 2, atol=1e-5)
    assert not np.allclose(mirrored, _probabilities(reference), atol=1e-3)  # digits mirror


def test_cli_tta_predict_and_evaluate(digits, labelled, exports, on_keras, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(labelled), "-m",
                                  str(exports / "model.tflite"), "--tta", "--project",
                                  str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "(tflite export)" in result.output
    assert "predicted 60 image(s), skipped 0" in result.output
    assert "(with TTA: image and its horizontal flip)" in result.output
    result = runner.invoke(main, ["predict", str(labelled), "-m", str(digits.model_file),
                                  "--tta", "--cam", "--project", str(tmp_path / "p")])
    assert result.exit_code == 1 and "--cam and --tta cannot be combined" in result.output

    assert on_keras["tta"] is None and "without_tta" not in on_keras
    result = runner.invoke(main, ["evaluate", "-m", str(digits.model_file), "--data",
                                  str(labelled), "--tta", "--top-k", "3", "-o",
                                  str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    tta = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert tta["tta"] == "horizontal flip" and tta["images"] == 60
    for key in ("images", "accuracy", "top3_accuracy", "macro_f1"):
        assert tta["without_tta"][key] == on_keras[key], key
    assert tta["accuracy"] != on_keras["accuracy"]  # mirrored digits change the answers
    line = next(s for s in result.output.splitlines() if s.startswith("with TTA"))
    assert line == (f"with TTA (horizontal flip): accuracy {tta['accuracy']:.4f}, top-3 "
                    f"{tta['top3_accuracy']:.4f}; without TTA: accuracy "
                    f"{on_keras['accuracy']:.4f}, top-3 {on_keras['top3_accuracy']:.4f}")
