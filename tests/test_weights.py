"""Preset weights: cache lookup, MD5 check, keras.applications layout, offline errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from resnet_builder import ResNetV2Backbone, build_model
from resnet_builder.errors import UserError
from resnet_builder.model import presets
from resnet_builder.model.weights import (
    PresetLayoutWarning,
    keras_applications_name,
    layout_differences,
    load_donor_weights,
    load_preset_weights,
)

REPO = Path(__file__).resolve().parents[1]

TINY = {"stackwise_filters": [8, 16], "stackwise_blocks": [2, 2], "stackwise_strides": [1, 2],
        "include_rescaling": True, "block_type": "block"}


def write_keras_applications_file(path, backbone: ResNetV2Backbone, rng) -> dict:
    """A Keras 2 style HDF5 file as keras.applications ships, with random values."""
    values = {}
    with h5py.File(path, "w") as f:
        names = []
        for layer in backbone.layers:
            name = keras_applications_name(layer.name)
            names.append(name.encode())
            group = f.create_group(name)
            weight_names = []
            for w in layer.weights:
                wname = f"{name}/{w.name}:0"
                data = rng.standard_normal(w.shape).astype("float32")
                if "variance" in w.name:
                    data = np.abs(data) + 0.5
                group.create_dataset(wname, data=data)
                weight_names.append(wname.encode())
                values.setdefault(layer.name, []).append(data)
            group.attrs["weight_names"] = weight_names
        f.attrs["layer_names"] = names
    return values


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    """A preset with downloadable weights, whose file sits in a KERAS_HOME cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    source = ResNetV2Backbone(**TINY, input_shape=(32, 32, 3))
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    path = cache / "tiny_notop.h5"
    values = write_keras_applications_file(path, source, np.random.default_rng(0))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    entry = {"config": TINY, "params": source.count_params(), "description": "tiny",
             "weights": {"file": path.name, "url": "https://example.invalid/tiny_notop.h5",
                         "md5": md5, "layout": "keras_applications"}}
    monkeypatch.setitem(presets.PRESETS, "tiny_imagenet", entry)
    return path, values


def test_keras_applications_names_map_to_ours():
    assert keras_applications_name("v2_stack_1_block2_use_preactivation_bn") == \
        "conv3_block2_preact_bn"
    assert keras_applications_name("v2_stack_0_block1_3_conv") == "conv2_block1_3_conv"
    assert keras_applications_name("post_bn") == "post_bn"


def test_from_preset_loads_cached_weights_by_name(tiny_preset):
    _, values = tiny_preset
    model = ResNetV2Backbone.from_preset("tiny_imagenet", input_shape=(32, 32, 3))
    for layer in model.layers:
        for got, want in zip(layer.get_weights(), values.get(layer.name, []), strict=True):
            np.testing.assert_array_equal(got, want)
    unloaded = ResNetV2Backbone.from_preset("tiny_imagenet", load_weights=False,
                                            input_shape=(32, 32, 3))
    conv = unloaded.get_layer("conv1_conv").get_weights()[0]
    assert not np.array_equal(conv, values["conv1_conv"][0])


def test_build_model_with_preset_weights(tiny_preset):
    _, values = tiny_preset
    model = build_model(preset="tiny_imagenet", num_classes=3, input_shape=(32, 32, 3),
                        load_weights=True)
    got = model.backbone.get_layer("post_bn").get_weights()[0]
    np.testing.assert_array_equal(got, values["post_bn"][0])


def test_checksum_mismatch_is_refused(tiny_preset):
    path, _ = tiny_preset
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(UserError, match="does not match the MD5") as cached:
        ResNetV2Backbone.from_preset("tiny_imagenet", input_shape=(32, 32, 3))
    assert "delete it" in cached.value.hint  # the cache's copy: ours to fetch again


def test_checksum_mismatch_of_the_users_own_file_does_not_say_delete_it(tiny_preset, tmp_path):
    """A file the user named may be another model's weights, not a damaged download."""
    own = tmp_path / "mine.h5"
    own.write_bytes(b"another model")
    with pytest.raises(UserError, match="does not match the MD5") as given:
        ResNetV2Backbone.from_preset("tiny_imagenet", input_shape=(32, 32, 3),
                                     weights_file=own)
    assert "delete" not in given.value.hint and "tiny_notop.h5" in given.value.hint
    assert own.exists()


def test_no_file_and_no_network_says_what_to_put_where(tiny_preset, monkeypatch):
    path, _ = tiny_preset
    path.unlink()

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("keras.utils.get_file", offline)
    with pytest.raises(UserError) as err:
        ResNetV2Backbone.from_preset("tiny_imagenet", input_shape=(32, 32, 3))
    text = str(err.value)
    assert "https://example.invalid/tiny_notop.h5" in text and str(path) in text


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    other = ResNetV2Backbone(**{**TINY, "stackwise_filters": [4, 8]}, input_shape=(32, 32, 3))
    path = tmp_path / "other.h5"
    write_keras_applications_file(path, other, np.random.default_rng(1))
    target = ResNetV2Backbone(**TINY, input_shape=(32, 32, 3))
    from resnet_builder.model.weights import load_backbone_weights

    with pytest.raises(UserError, match="different network"):
        load_backbone_weights(target, path, layout="keras_applications")
    with pytest.raises(UserError, match="does not exist"):
        load_backbone_weights(target, tmp_path / "missing.h5")


def test_preset_without_weights_refuses_load_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        ResNetV2Backbone.from_preset("resnet18_v2", load_weights=True)


def test_preset_table_is_pure_and_weights_load_from_weights_module(tmp_path):
    """presets.py is data: importing it (and the architecture checks) loads no Keras."""
    code = (
        "import sys\n"
        "sys.argv[0] = 'resnet-builder'\n"
        "from resnet_builder.model import architecture, presets\n"
        "assert presets.presets_with_weights() == ['resnet50_v2_imagenet', "
        "'resnet101_v2_imagenet', 'resnet152_v2_imagenet']\n"
        "assert architecture.resolve_architecture(preset='resnet20_cifar').backbone == "
        "architecture.resolve_architecture(20, block_type='basic').backbone\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_preset_weights.__module__ == "resnet_builder.model.weights"


def test_weights_in_another_network_warn_naming_the_difference(tiny_preset, monkeypatch):
    """The preset's own network loads silently; another one (here: padded otherwise) gets
    the weights and a warning that names what differs and the preset to build from."""
    monkeypatch.setitem(presets.PRESETS["tiny_imagenet"], "config", {**TINY, "padding": "same"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", PresetLayoutWarning)
        ResNetV2Backbone.from_preset("tiny_imagenet", input_shape=(32, 32, 3))
    other = ResNetV2Backbone(**TINY, padding="symmetric", input_shape=(32, 32, 3))
    with pytest.warns(PresetLayoutWarning, match=r"padding same \(this network: symmetric\)"
                                                 r".*model.preset: tiny_imagenet"):
        load_preset_weights(other, "tiny_imagenet")
    assert layout_differences(other, "tiny_imagenet") == {"padding": ("same", "symmetric")}


def same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_a_donor_file_gives_its_backbone_and_its_head_only_when_it_fits(tmp_path):
    """model.weights: a classifier's .weights.h5 of another class count gives its backbone
    (it was refused), a backbone's file loads without Keras' 'freshly-initialized' warnings,
    a .keras donor with another head gives its backbone (refused before), and a head comes
    over only with the same shapes and classes."""
    donor = build_model(11, num_classes=5, input_shape=(16, 16, 3))
    donor.save_weights(tmp_path / "classifier.weights.h5")
    donor.backbone.save_weights(tmp_path / "backbone.weights.h5")
    tutorial = build_model(11, num_classes=3, head="tutorial", input_shape=(16, 16, 3),
                           class_names=["a", "b", "c"])
    tutorial.save(tmp_path / "tutorial.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("classifier.weights.h5", "backbone.weights.h5"):
            model = build_model(11, num_classes=3, input_shape=(16, 16, 3))
            load_donor_weights(model, tmp_path / name)
            assert same_weights(model.backbone, donor.backbone), name
    whole = build_model(11, num_classes=5, input_shape=(16, 16, 3))
    load_donor_weights(whole, tmp_path / "classifier.weights.h5")
    assert same_weights(whole, donor)
    gap = build_model(11, num_classes=3, input_shape=(16, 16, 3), class_names=["a", "b", "c"])
    load_donor_weights(gap, tmp_path / "tutorial.keras")
    assert same_weights(gap.backbone, tutorial.backbone)
    swapped = build_model(11, num_classes=3, head="tutorial", input_shape=(16, 16, 3),
                          class_names=["c", "b", "a"])
    fresh_head = swapped.layers[-1].get_weights()
    load_donor_weights(swapped, tmp_path / "tutorial.keras")
    assert same_weights(swapped.backbone, tutorial.backbone)
    head = swapped.layers[-1].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(head, fresh_head, strict=True))
    same = build_model(11, num_classes=3, head="tutorial", input_shape=(16, 16, 3),
                       class_names=["a", "b", "c"])
    load_donor_weights(same, tmp_path / "tutorial.keras")
    assert same_weights(same, tutorial)


@pytest.mark.parametrize("name", ["classifier.weights.h5", "junk.weights.h5", "donor.keras"])
def test_a_donor_of_another_network_is_one_short_error(tmp_path, name):
    donor = build_model(11, num_classes=5, input_shape=(16, 16, 3))
    donor.save_weights(tmp_path / "classifier.weights.h5")
    donor.save(tmp_path / "donor.keras")
    (tmp_path / "junk.weights.h5").write_text("not hdf5")
    with pytest.raises(UserError, match=f"model.weights .*{name} does not fit this model") as e:
        load_donor_weights(build_model(20, num_classes=3, input_shape=(16, 16, 3)),
                           tmp_path / name)
    assert "\n" not in e.value.message and len(e.value.message) < 400


def test_a_failed_whole_model_try_leaves_no_half_loaded_head(tmp_path):
    """Keras assigns every layer that fits before it raises: a tutorial head's first dense
    layer came from a 5-class donor into a 3-class model, its last stayed fresh."""
    donor = build_model(11, num_classes=5, head="tutorial", input_shape=(16, 16, 3))
    donor.save_weights(tmp_path / "tutorial5.weights.h5")
    model = build_model(11, num_classes=3, head="tutorial", input_shape=(16, 16, 3))
    head_before = [layer.get_weights() for layer in model.layers[2:]]
    load_donor_weights(model, tmp_path / "tutorial5.weights.h5")
    assert same_weights(model.backbone, donor.backbone)
    for layer, before in zip(model.layers[2:], head_before, strict=True):
        for now, then in zip(layer.get_weights(), before, strict=True):
            np.testing.assert_array_equal(now, then)


def test_a_run_whose_weights_do_not_fit_leaves_no_run_folder_behind(tmp_path):
    """It failed after its folder was made: the folder took the name (the next run became
    exp2) and held only config.yaml. The name is free again; a folder with more is kept."""
    from resnet_builder import train

    (tmp_path / "junk.weights.h5").write_text("not hdf5")
    project = tmp_path / "runs"
    junk = str(tmp_path / "junk.weights.h5")
    config = {"model": {"depth": 8, "block_type": "basic", "weights": junk},
              "data": {"source": "digits", "image_size": 8, "channels": 1, "limit": 60},
              "train": {"epochs": 1}, "run": {"project": str(project), "progress": "none"}}
    for _ in range(2):
        with pytest.raises(UserError, match="does not fit this model"):
            train(config)
        assert not (project / "exp").exists() and not (project / "exp2").exists()
    (project / "exp").mkdir()
    (project / "exp" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="does not fit this model"):
        train({**config, "run": {**config["run"], "exist_ok": True}})
    assert sorted(p.name for p in (project / "exp").iterdir()) == [".lock", "config.yaml",
                                                                    "notes.txt"]
