"""The fast ``.keras`` writer against Keras itself: same config, same HDF5 tree, loads and runs.

Each case builds the model with ``build_model(...)`` and saves it with Keras,
writes the same model with ``write_model_file``, and compares the members.
``keras.utils.clear_session()`` before each build resets Keras's automatic
names (``res_net_v2_classifier``, ``input_layer``), which a second model in
one process would otherwise number ``_1``.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import keras
import numpy as np
import pytest

from resnet_builder.model import keras_writer as keras_file
from resnet_builder.model import saving
from resnet_builder.model.architecture import resolve_architecture
from resnet_builder.model.classifier import ResNetV2Classifier, build_model
from resnet_builder.model.keras_writer import (
    backbone_layer_order,
    functional_layer_order,
    write_model_file,
)
from resnet_builder.model.saving import save_model_file

REPO = Path(__file__).resolve().parents[1]

ARCH_KEYS = ("depth", "preset", "block_type", "stackwise_filters", "stackwise_blocks",
             "stackwise_strides", "stackwise_dilations", "stem_filters", "input_shape",
             "include_rescaling")

CASES = {
    "depth11_bottleneck_normalize_names": dict(
        depth=11, num_classes=3, mean=[125.3, 123.0, 113.9], std=[63.0, 62.1, 66.7],
        class_names=["cat", "dog", "bird"]),
    "depth8_basic_tutorial_head": dict(depth=8, num_classes=4, head="tutorial", dropout=0.3),
    "depth8_basic_narrow_projection_subsampled": dict(
        depth=8, block_type="basic", stem_filters=4, input_shape=(16, 16, 1), num_classes=10),
    "depth20_basic_dropout_any_size": dict(depth=20, block_type="basic", num_classes=10,
                                           dropout=0.25, input_shape=(None, None, 3)),
    "stackwise_dilated": dict(
        stackwise_filters=[8, 16, 24], stackwise_blocks=[2, 1, 2], stackwise_strides=[1, 2, 2],
        stackwise_dilations=[1, 1, 2], block_type="bottleneck", stem_filters=8,
        input_shape=(48, 40, 1), include_rescaling=False, num_classes=2, mean=[0.5], std=[0.25]),
    "resnet18_v2_64px_named": dict(preset="resnet18_v2", input_shape=(64, 64, 3), num_classes=5,
                                   head="tutorial", name="pets"),
    "resnet50_v2_imagenet_symmetric_padding": dict(preset="resnet50_v2_imagenet",
                                                   input_shape=(64, 64, 3), num_classes=3),
}


def split(kwargs: dict) -> tuple[dict, dict]:
    arch = {k: v for k, v in kwargs.items() if k in ARCH_KEYS}
    rest = {k: v for k, v in kwargs.items() if k not in ARCH_KEYS}
    return arch, rest


def h5_tree(data: bytes) -> dict:
    """Every group and dataset: attributes, and shape and dtype for datasets."""
    tree = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tree[name] = (dict(obj.attrs), obj.shape, obj.dtype.str)
            else:
                tree[name] = (dict(obj.attrs), None, None)
        f.visititems(visit)
    return tree


def h5_arrays(data: bytes) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda n, o: arrays.__setitem__(n, o[()])
                     if isinstance(o, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    """(case kwargs, Keras-built model, Keras's file, our file) for one case."""
    kwargs = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    keras.utils.clear_session()
    model = build_model(**kwargs)
    theirs = folder / "keras.keras"
    model.save(theirs)
    arch_kwargs, rest = split(kwargs)
    ours = folder / "ours.keras"
    write_model_file(ours, resolve_architecture(**arch_kwargs), seed=0, **rest)
    return kwargs, model, theirs, ours


def test_same_members_and_config(pair):
    _, _, theirs, ours = pair
    with zipfile.ZipFile(theirs) as a, zipfile.ZipFile(ours) as b:
        assert b.namelist() == a.namelist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in b.infolist())
        assert b.read("config.json") == a.read("config.json")  # byte for byte
        meta_a, meta_b = json.loads(a.read("metadata.json")), json.loads(b.read("metadata.json"))
        assert meta_b.keys() == meta_a.keys()
        assert meta_b["keras_version"] == meta_a["keras_version"] == keras.__version__


def test_same_weights_tree(pair):
    _, _, theirs, ours = pair
    with zipfile.ZipFile(theirs) as a, zipfile.ZipFile(ours) as b:
        tree_a, tree_b = h5_tree(a.read("model.weights.h5")), h5_tree(b.read("model.weights.h5"))
    assert sorted(tree_b) == sorted(tree_a)
    diff = {k: (tree_a[k], tree_b[k]) for k in tree_a if tree_a[k] != tree_b[k]}
    assert not diff


def test_layer_order_is_keras_order(pair):
    kwargs, model, _, _ = pair
    plan, _ = resolve_architecture(**split(kwargs)[0]).plan()
    ours = [keras_file.BACKBONE_INPUT_NAME if n == plan.input_name else n
            for n in backbone_layer_order(plan)]
    assert ours == [layer.name for layer in model.backbone.layers]


def test_loads_and_predicts(pair):
    kwargs, model, _, ours = pair
    loaded = keras.models.load_model(ours)
    assert isinstance(loaded, ResNetV2Classifier)
    assert loaded.get_config() == model.get_config()
    assert loaded.count_params() == model.count_params()
    shape = tuple(d or 32 for d in loaded.image_shape)
    images = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")
    probs = loaded.predict(images, verbose=0)
    assert probs.shape == (2, kwargs["num_classes"])
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_initial_values_as_keras_defaults(pair):
    _, model, _, ours = pair
    with zipfile.ZipFile(ours) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        arrays = {}  # dataset path -> (its layer's name, value)
        f.visititems(lambda n, o: arrays.__setitem__(n, (o.parent.attrs["name"], o[()]))
                     if isinstance(o, h5py.Dataset) else None)
    layers = {layer.name: layer for layer in model.backbone.layers + model.layers}
    checked = 0
    for path, (layer_name, value) in arrays.items():
        variable = layers[layer_name].weights[int(path.rsplit("/", 1)[1])]
        assert value.shape == tuple(variable.shape) and value.dtype == np.float32
        kind = variable.path.rsplit("/", 1)[1]
        if kind == "kernel":
            receptive = math.prod(value.shape[:-2])
            limit = math.sqrt(6 / (receptive * (value.shape[-2] + value.shape[-1])))
            assert np.abs(value).max() <= limit
            if value.size >= 2000:  # enough draws for the statistics to be tight
                assert abs(value.std() / (limit / math.sqrt(3)) - 1) < 0.08
                assert abs(value.mean()) < 0.1 * limit
            checked += 1
        elif kind in ("gamma", "moving_variance"):
            assert (value == 1).all()
        else:
            assert kind in ("bias", "beta", "moving_mean")
            assert (value == 0).all()
    assert checked == sum("kernel" in w.path for w in model.weights)


def test_functional_layer_order_matches_keras_on_a_branchy_graph():
    """Depth first, ties by first reach from the output: checked on a small DAG."""
    keras.utils.clear_session()
    x = inp = keras.Input((4,), name="in")
    a = keras.layers.Dense(4, name="a")(x)
    b = keras.layers.Dense(4, name="b")(a)
    c = keras.layers.Dense(4, name="c")(x)  # short branch, read first by the add
    d = keras.layers.Dense(4, name="d")(b)
    s = keras.layers.Add(name="s")([c, d])
    e = keras.layers.Dense(4, name="e")(a)
    out = keras.layers.Add(name="t")([e, s])
    model = keras.Model(inp, out)
    graph = {"in": (), "a": ("in",), "b": ("a",), "c": ("in",), "d": ("b",), "s": ("c", "d"),
             "e": ("a",), "t": ("e", "s")}
    assert functional_layer_order(graph, "t") == [layer.name for layer in model.layers]


def test_seed_repeats_and_differs(tmp_path):
    arch = resolve_architecture(depth=11)
    paths = [tmp_path / f"{i}.keras" for i in range(3)]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        write_model_file(path, arch, num_classes=3, seed=seed)
    first, again, other = (h5_arrays(zipfile.ZipFile(p).read("model.weights.h5")) for p in paths)
    kernel = "layers/res_net_v2_backbone/layers/conv2d_1/vars/0"
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first[kernel], other[kernel])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=3, head="big"), "head"),
    (dict(num_classes=3, dropout=1.0), "dropout"),
    (dict(num_classes=3, class_names=["a"]), "class_names"),
    (dict(num_classes=3, mean=[1.0, 2.0, 3.0]), "mean and std"),
    (dict(num_classes=3, mean=[1.0, 2.0, 3.0], std=[1.0, 0.0, 1.0]), "positive std"),
    (dict(num_classes=3, mean=[1.0, 2.0], std=[1.0, 1.0]), "per input channel"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_model_file(tmp_path / "m.keras", resolve_architecture(depth=11), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_mean_and_std_turn_a_presets_rescaling_off_as_build_model_does(tmp_path):
    """The pixels would be normalised, then divided by 255 again: build_model turns the
    preset's rescaling off for mean/std, and so does the writer."""
    arch = resolve_architecture(preset="resnet18_v2", input_shape=(32, 32, 3))
    write_model_file(tmp_path / "m.keras", arch, num_classes=3, mean=[1.0] * 3, std=[1.0] * 3)
    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    assert config["config"]["backbone"]["config"]["include_rescaling"] is False


def test_needs_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        write_model_file(tmp_path / "m.h5", resolve_architecture(depth=11), num_classes=3)


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.keras"
    target.write_bytes(b"old")

    def broken_zip(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras_file.zipfile, "ZipFile", broken_zip)
    with pytest.raises(OSError, match="disk full"):
        write_model_file(target, resolve_architecture(depth=11), num_classes=3)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_replaces_an_existing_file_with_normal_permissions(tmp_path):
    target, plain = tmp_path / "m.keras", tmp_path / "plain"
    target.write_bytes(b"old")
    plain.write_bytes(b"")  # what open() gives under this umask
    write_model_file(target, resolve_architecture(depth=11), num_classes=3)
    assert zipfile.is_zipfile(target)
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "plain"]


def test_other_keras_version_saves_with_keras_and_says_so(tmp_path, monkeypatch):
    """Correct first, fast second: an unverified Keras writes the file with model.save."""
    monkeypatch.setattr(keras_file, "keras_version", lambda: "3.99.0")
    target = tmp_path / "m.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        facts = save_model_file(resolve_architecture(depth=11), output=str(target), plot=None,
                                num_classes=3, head="tutorial")
    assert facts["note"] == ("wrote with keras.Model.save: the fast writer is verified for "
                             "Keras 3.15, this is 3.99")
    assert facts["output"] == str(target) and facts["output_bytes"] == target.stat().st_size
    metadata = json.loads(zipfile.ZipFile(target).read("metadata.json"))
    assert metadata["keras_version"] == keras.__version__  # Keras wrote it, not our writer
    loaded = keras.models.load_model(target)
    assert isinstance(loaded, ResNetV2Classifier) and loaded.head == "tutorial"
    assert loaded.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary file left


def test_verified_keras_version_uses_the_fast_writer(tmp_path, monkeypatch):
    def no_keras(*args, **kwargs):
        raise AssertionError("built a Keras model on the verified Keras version")

    monkeypatch.setattr(saving, "keras_classifier", no_keras)
    target = tmp_path / "m.keras"
    facts = save_model_file(resolve_architecture(depth=11), output=str(target), plot=None,
                            num_classes=3)
    assert "note" not in facts
    assert keras.models.load_model(target).count_params() == build_model(
        11, num_classes=3).count_params()


def test_writer_called_directly_on_other_keras_warns_but_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_file, "keras_version", lambda: "3.99.0")
    target = tmp_path / "m.keras"
    with pytest.warns(RuntimeWarning, match="verified with Keras"):
        write_model_file(target, resolve_architecture(depth=11), num_classes=3)
    assert json.loads(zipfile.ZipFile(target).read("metadata.json"))["keras_version"] == "3.99.0"


def test_writer_does_not_import_tensorflow(tmp_path):
    """As in the CLI process (argv[0] == resnet-builder, so the package registers nothing)."""
    target = tmp_path / "m.keras"
    code = (
        "import sys\n"
        "sys.argv[0] = 'resnet-builder'\n"
        "from resnet_builder.model.architecture import resolve_architecture\n"
        "from resnet_builder.model.keras_writer import write_model_file\n"
        f"write_model_file({str(target)!r}, resolve_architecture(depth=20), num_classes=10)\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert zipfile.ZipFile(target).namelist() == ["metadata.json", "config.json",
                                                  "model.weights.h5"]
