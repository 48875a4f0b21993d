"""ResNetV2Backbone: keras-cv compatibility, presets, pyramid, validation, saving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_builder import (
    PRESETS,
    ResNet18V2Backbone,
    ResNetV2Backbone,
    ResNetV2Classifier,
    backbone_plan,
    build_model,
    resolve_architecture,
)
from resnet_builder.errors import ArgumentError
from resnet_builder.model.backbone import KERAS_LAYERS
from resnet_builder.model.head import head_layers
from resnet_builder.model.summary import model_summary

DATA = Path(__file__).parent / "data"
KERAS_CV_CONFIGS = {"basic_block": [64, 16], "block": [8, 16]}


def tiny(**overrides):
    args = dict(stackwise_filters=[8, 16], stackwise_blocks=[2, 2], stackwise_strides=[1, 2],
                include_rescaling=False, input_shape=(32, 32, 3))
    args.update(overrides)
    return ResNetV2Backbone(**args)


@pytest.mark.parametrize("block_type", ["basic_block", "block"])
def test_keras_cv_weights_load_and_give_the_same_outputs(block_type):
    """Weights saved from keras-cv 0.9.0's ResNetV2Backbone (tests/data) load into ours."""
    ref = np.load(DATA / "keras_cv_outputs.npz")
    ours = ResNetV2Backbone(stackwise_filters=KERAS_CV_CONFIGS[block_type],
                            stackwise_blocks=[2, 2], stackwise_strides=[1, 2],
                            include_rescaling=True, block_type=block_type,
                            input_shape=(32, 32, 3))
    theirs = [n for n in ref[f"{block_type}_layer_names"] if not n.startswith("rescaling")]
    assert [layer.name for layer in ours.layers[2:]] == theirs  # keras-cv auto-names rescaling
    ours.load_weights(DATA / f"keras_cv_{block_type}.weights.h5")
    out = ours.predict(ref[f"{block_type}_input"], verbose=0)
    np.testing.assert_allclose(out, ref[f"{block_type}_output"], rtol=1e-5, atol=1e-5)


# keras-cv's own numbers (its ResNetV2Backbone API page lists them rounded: 11.18M, 21.30M,
# 23.56M, 42.63M, 58.33M) and the papers' stage depths, written here rather than read from
# presets.py, so an edited preset cannot agree with itself.
KERAS_CV_PRESETS = {
    "resnet18_v2": (11_183_488, [2, 2, 2, 2]), "resnet34_v2": (21_299_072, [3, 4, 6, 3]),
    "resnet50_v2": (23_564_800, [3, 4, 6, 3]), "resnet101_v2": (42_626_560, [3, 4, 23, 3]),
    "resnet152_v2": (58_331_648, [3, 8, 36, 3]),
}


@pytest.mark.parametrize("name", [p for p in PRESETS if not p.endswith("_cifar")])
def test_keras_cv_preset_parameter_counts(name):
    params, blocks = KERAS_CV_PRESETS[name.removesuffix("_imagenet")]
    architecture = resolve_architecture(preset=name)
    plan, _ = architecture.plan()
    assert plan.params == PRESETS[name]["params"] == params
    assert list(architecture.backbone["stackwise_blocks"]) == blocks


def test_preset_counts_match_built_models():
    """The plan's counts equal Keras's for real models (the plan is what we report)."""
    model = ResNet18V2Backbone(input_shape=(64, 64, 3))
    assert model.count_params() == PRESETS["resnet18_v2"]["params"] == 11_183_488
    for name in ("resnet20_cifar", "resnet164_cifar"):
        built = ResNetV2Backbone.from_preset(name, input_shape=(32, 32, 3))
        assert built.count_params() == PRESETS[name]["params"]


@pytest.mark.parametrize(
    ("depth", "block_type", "paper_params"),
    [(110, "basic", 1.7e6), (164, "bottleneck", 1.7e6), (1001, "bottleneck", 10.2e6)],
)
def test_paper_parameter_counts_within_3_percent(depth, block_type, paper_params):
    summary = model_summary(resolve_architecture(depth, block_type=block_type), 10)
    assert abs(summary["params_trainable"] / paper_params - 1) < 0.03


def test_summary_counts_equal_keras_counts():
    for kwargs in ({"depth": 20, "block_type": "basic"}, {"depth": 11, "head": "tutorial"},
                   {"preset": "resnet18_v2", "input_shape": (64, 64, 3), "num_classes": 5}):
        head = kwargs.pop("head", "gap")
        classes = kwargs.pop("num_classes", 10)
        model = build_model(**kwargs, head=head, num_classes=classes)
        arch = resolve_architecture(**kwargs)
        s = model_summary(arch, classes, head)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert (s["params_total"], s["params_trainable"]) == (model.count_params(), trainable)


def test_pyramid_levels_halve_resolution():
    model = ResNetV2Backbone(**PRESETS["resnet18_v2"]["config"], input_shape=(64, 64, 3))
    assert list(model.pyramid_level_inputs) == ["P2", "P3", "P4", "P5"]
    assert model.pyramid_level_inputs["P2"] == "v2_stack_0_block2_out"
    features = model.pyramid_model()(np.zeros((1, 64, 64, 3), "float32"))
    sizes = [features[k].shape[1] for k in ("P2", "P3", "P4", "P5")]
    assert sizes == [16, 8, 4, 2]
    assert [features[k].shape[-1] for k in ("P2", "P5")] == [64, 512]


def test_cifar_network_strides_first_unit_and_projects_where_shape_changes():
    plan, pyramid = resolve_architecture(20, block_type="basic").plan()
    names = [op.name for op in plan.ops]
    assert "v2_stack_0_block1_0_conv" not in names  # 16 -> 16, stride 1: identity
    assert "v2_stack_1_block1_0_conv" in names  # width and size change: projection
    first = next(op for op in plan.ops if op.name == "v2_stack_1_block1_2_conv")
    assert first.args["strides"] == 2
    assert [plan.shape(pyramid[k])[:2] for k in pyramid] == [(32, 32), (16, 16), (8, 8)]
    projection = next(op for op in plan.ops if op.name == "v2_stack_1_block1_0_conv")
    assert projection.inputs == ("v2_stack_1_block1_use_preactivation_relu",)


def test_layer_names_follow_one_pattern():
    model = tiny(block_type="block")
    for layer in model.layers[1:]:
        assert layer.name in {"conv1_conv", "pool1_pool", "post_bn", "post_relu"} or (
            layer.name.startswith("v2_stack_") and "_block" in layer.name), layer.name


def test_dilations_keep_resolution():
    model = tiny(stackwise_dilations=[1, 2], stackwise_blocks=[2, 3])
    out = model(np.zeros((1, 32, 32, 3), "float32"))
    assert out.shape == (1, 8, 8, 64)  # stem /4, second stack dilated instead of strided


def test_a_dilated_one_unit_stack_strides_and_the_size_check_counts_it():
    """A one-unit stack's unit is its first, never dilated, so it strides (as saved models
    were built); the input-size check assumed it did not and let too small an input in."""
    kwargs = dict(stackwise_filters=[8, 16], stackwise_strides=[1, 2], include_rescaling=False,
                  stackwise_dilations=[1, 2])
    for blocks, size in (([1, 1], 8), ([2, 2], 16)):
        plan, _ = backbone_plan(stackwise_blocks=blocks, input_shape=(64, 64, 3), **kwargs)
        assert plan.shape(plan.output)[:2] == (size, size), blocks
    with pytest.raises(ValueError, match="downsamples by 8"):
        backbone_plan(stackwise_blocks=[1, 1], input_shape=(4, 4, 3), **kwargs)
    backbone_plan(stackwise_blocks=[2, 2], input_shape=(4, 4, 3), **kwargs)  # by 4: fits


@pytest.mark.parametrize("way", [{"depth": 20}, {"preset": "resnet18_v2"}])
def test_dilations_apply_to_a_depth_and_a_preset(way):
    """--dilations with --depth or --preset used to be dropped without a word."""
    stages = 3 if "depth" in way else 4
    dilations = [1] * (stages - 1) + [2]
    model = build_model(**way, stackwise_dilations=dilations, input_shape=(64, 64, 3),
                        num_classes=2)
    backbone = model.layers[1]  # the nested ResNetV2Backbone
    rates = {layer.name: layer.dilation_rate for layer in backbone.layers
             if layer.name.endswith("block2_2_conv")}
    assert rates[f"v2_stack_{stages - 1}_block2_2_conv"] == (2, 2)
    assert set(rates.values()) == {(1, 1), (2, 2)}
    with pytest.raises(ValueError, match="same length"):
        build_model(**way, stackwise_dilations=[1, 2], num_classes=2)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"stackwise_blocks": [2]}, "same length"),
        ({"block_type": "resnext"}, "block_type='resnext'"),
        ({"stackwise_strides": [1, 0]}, "stackwise_strides=[1, 0]"),
        ({"stackwise_filters": [8, 0]}, "stackwise_filters=[8, 0]"),
        ({"stackwise_filters": [8, -1]}, "stackwise_filters"),
        ({"input_shape": (4, 4, 3)}, "too small"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"stem": "big"}, "stem='big'"),
        ({"padding": "valid"}, "padding='valid'"),
        ({"rescale_to": [1, -1]}, "rescale_to=[1, -1]"),
        ({"rescale_to": "0-1"}, "rescale_to='0-1'"),
    ],
)
def test_bad_arguments_raise_before_building(overrides, text):
    with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("]", r"\]")):
        backbone_plan(**{**dict(stackwise_filters=[8, 16], stackwise_blocks=[2, 2],
                                stackwise_strides=[1, 2], include_rescaling=False,
                                input_shape=(32, 32, 3)), **overrides})


def test_misspelled_keywords_are_refused_with_a_suggestion():
    """keras.Model dropped them silently: input_shap= built an any-size model."""
    with pytest.raises(ValueError, match=r"'input_shap' \(did you mean 'input_shape'\?\)"):
        ResNetV2Backbone([8, 16], [1, 1], [1, 2], False, input_shap=(32, 32, 3))
    with pytest.raises(ValueError, match="did you mean 'include_rescaling'"):
        ResNetV2Backbone.from_preset("resnet18_v2", include_rescailng=False)
    backbone = ResNetV2Backbone([8], [1], [1], False, input_shape=(8, 8, 3), name="mine",
                                trainable=False)
    assert (backbone.name, backbone.trainable) == ("mine", False)


def test_classifier_and_build_model_refuse_misspelled_keywords(tmp_path):
    """ResNetV2Classifier dropped them silently (keras.Model does); build_model raised
    Python's TypeError, which suggests nothing."""
    backbone = ResNetV2Backbone([8], [1], [1], False, input_shape=(8, 8, 3))
    with pytest.raises(ArgumentError, match=r"ResNetV2Classifier got an unexpected keyword "
                       r"argument 'class_nmes' \(did you mean 'class_names'\?\)"):
        ResNetV2Classifier(backbone, num_classes=3, class_nmes=["a", "b", "c"])
    with pytest.raises(ArgumentError, match=r"'dropuot' \(did you mean 'dropout'\?\)"):
        ResNetV2Classifier(backbone, num_classes=3, dropuot=0.5)
    with pytest.raises(ArgumentError, match=r"build_model got an unexpected keyword argument "
                       r"'input_shap' \(did you mean 'input_shape'\?\)"):
        build_model(20, input_shap=(32, 32, 3))
    with pytest.raises(ArgumentError, match="'trainable'"):  # not a build_model argument
        build_model(20, trainable=False)
    # Keras' own keywords still pass, and a saved classifier (its get_config) loads back
    model = ResNetV2Classifier(backbone, num_classes=3, name="mine", trainable=False,
                               dtype="float32")
    assert (model.name, model.trainable) == ("mine", False)
    model.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert isinstance(loaded, ResNetV2Classifier) and loaded.name == "mine"
    assert not loaded.trainable and loaded.num_classes == 3


def test_mean_and_std_turn_a_presets_rescaling_off():
    """The preset's rescaling divided the normalised pixels by 255 again."""
    model = build_model(preset="resnet18_v2", num_classes=2, mean=[127.5] * 3, std=[64.0] * 3,
                        input_shape=(32, 32, 3))
    assert not model.backbone.include_rescaling
    assert build_model(preset="resnet18_v2", num_classes=2,
                       input_shape=(32, 32, 3)).backbone.include_rescaling
    with pytest.raises(ValueError, match="rescale them a second time"):
        build_model(preset="resnet18_v2", num_classes=2, include_rescaling=True,
                    mean=[1.0] * 3, std=[1.0] * 3)


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"stem_filters": 0}, "`stem_filters` must be a positive integer"),
    ({"stem_filters": True}, "`stem_filters` must be a positive integer"),
    ({"num_classes": 3, "class_names": "abc"}, "`class_names` must be a list"),
    ({"mean": 120, "std": 60}, "`mean` must be a list of numbers"),
    ({"mean": [1, 2, 3], "std": ["a", 1, 1]}, "`std` must be a list of numbers"),
    ({"num_classes": 1}, "a softmax over one class always outputs 1"),
])
def test_classifier_arguments_are_named_when_wrong(kwargs, text):
    with pytest.raises(ValueError, match=text):
        build_model(20, **kwargs)


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'resnet50_v2'"):
        ResNetV2Backbone.from_preset("resnet50v2")


def test_alias_matches_keras_cv_defaults():
    model = ResNet18V2Backbone(input_shape=(32, 32, 3))
    assert isinstance(model, ResNetV2Backbone)
    assert model.include_rescaling is True and model.block_type == "basic_block"


def test_save_and_load_round_trip(tmp_path):
    model = tiny(block_type="basic", stem_filters=8)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    path = tmp_path / "b.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ResNetV2Backbone)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_symmetric_padding_saves_loads_and_differs_from_same_only_where_it_strides(tmp_path):
    """``padding="symmetric"``: explicit zero layers before strided windows (and the stem's
    pool), a round trip through ``.keras``; and the same weights in a "same" network give
    other outputs (the strided windows are shifted by a pixel), while a network with no
    stride after the stem gives equal ones."""
    model = tiny(padding="symmetric", stem_filters=8)
    pads = [layer.name for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert pads == ["conv1_pad", "pool1_pad", "v2_stack_1_block2_2_pad"]
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    path = tmp_path / "b.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config() and loaded.padding == "symmetric"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    same = tiny(stem_filters=8)
    same.set_weights(model.get_weights())
    assert np.abs(same.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3
    flat = {"stem": "cifar", "stackwise_strides": [1, 1], "stem_filters": 8}
    a, b = tiny(**flat), tiny(padding="symmetric", **flat)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-6)


def test_rescale_to_maps_pixels_to_the_range():
    model = tiny(include_rescaling=True, rescale_to=(-1, 1))
    rescaling = model.get_layer("rescaling")
    pixels = np.array([[0.0, 127.5, 255.0]], "float32")
    np.testing.assert_allclose(rescaling(pixels), [[-1.0, 0.0, 1.0]], atol=1e-6)
    assert model.get_config()["rescale_to"] == [-1.0, 1.0]
    np.testing.assert_allclose(tiny(include_rescaling=True).get_layer("rescaling")(pixels),
                               [[0.0, 0.5, 1.0]], atol=1e-6)  # keras-cv's, the default


def test_imagenet_presets_are_keras_applications_networks():
    """The ``*_imagenet`` presets hold keras.applications' weights, so they build its
    network: every weighted layer has its output shape there, and the multiply-adds are
    keras.applications' (keras-cv's layout, ``resnet50_v2``, takes 3.3x more)."""
    from resnet_builder.model.weights import keras_applications_name

    reference = keras.applications.ResNet50V2(weights=None, include_top=False,
                                              input_shape=(64, 64, 3))
    plan, pyramid = resolve_architecture(preset="resnet50_v2_imagenet",
                                         input_shape=(64, 64, 3)).plan()
    weighted = [op for op in plan.ops if op.weights]
    assert len(weighted) == sum(1 for layer in reference.layers if layer.weights)
    for op in weighted:
        layer = reference.get_layer(keras_applications_name(op.name))
        assert tuple(layer.output.shape[1:]) == op.shape, op.name
    assert [plan.shape(name)[:2] for name in pyramid.values()] == [(8, 8), (4, 4), (2, 2),
                                                                   (2, 2)]
    big, _ = resolve_architecture(preset="resnet50_v2_imagenet").plan()
    keras_cv, _ = resolve_architecture(preset="resnet50_v2").plan()
    assert (big.macs, keras_cv.macs) == (3_480_207_360, 11_562_958_848)
    assert big.params == keras_cv.params == PRESETS["resnet50_v2_imagenet"]["params"]


@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 4, 9, 1)])
def test_normalize_is_per_channel_mean_and_std(shape):
    """The row-wise form (statistics tiled over W*C) gives exactly (x - mean) / std, for
    uint8 input, non-square images, one or three channels and sizes known only when run."""
    import tensorflow as tf

    from resnet_builder.model.classifier import Normalize

    channels = shape[-1]
    mean, std = [10.0, 20.0, 30.0][:channels], [2.0, 3.0, 4.0][:channels]
    layer = Normalize(mean, std)
    x = np.random.RandomState(0).randint(0, 256, shape).astype(np.uint8)
    expected = (x.astype(np.float32) - np.float32(mean)) * (1 / np.float32(std))
    np.testing.assert_array_equal(np.asarray(layer(x)), expected)
    traced = tf.function(layer, input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.uint8)])
    np.testing.assert_array_equal(traced(x).numpy(), expected)


@pytest.mark.slow
def test_saved_model_loads_in_a_fresh_process(tmp_path):
    """Only `keras` and `resnet_builder` imported; no custom_objects."""
    model = build_model(11, num_classes=3, mean=[1, 2, 3], std=[2, 2, 2],
                        class_names=["a", "b", "c"])
    x = np.random.RandomState(1).rand(2, 32, 32, 3).astype("float32") * 255
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    code = (
        "import sys, numpy as np, keras, resnet_builder\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r}); y = np.load({str(tmp_path / 'y.npy')!r})\n"
        "assert type(m).__name__ == 'ResNetV2Classifier', type(m)\n"
        "assert m.class_names == ['a', 'b', 'c']\n"
        "np.testing.assert_allclose(m.predict(x, verbose=0), y, atol=1e-5)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_tutorial_variant_is_options():
    """The tutorial's network: stem width 32 (stages 32/64/128) and its classifier head."""
    arch = resolve_architecture(56, stem_filters=32)
    assert arch.backbone["stackwise_filters"] == [32, 64, 128]
    assert arch.backbone["stem_filters"] == 32
    model = build_model(56, stem_filters=32, head="tutorial", num_classes=10)
    names = [layer.name for layer in model.layers]
    assert names[-5:] == ["avg_pool", "fc1", "fc1_bn", "dropout", "predictions"]
    assert model.get_layer("fc1").units == 512
    assert model.get_layer("dropout").rate == 0.5
    assert build_model(11, head="tutorial", dropout=0.3).get_layer("dropout").rate == 0.3


def test_from_preset_doc_lists_every_preset():
    """As keras-cv's: the docstring names each preset, and those with weights."""
    doc = ResNetV2Backbone.from_preset.__doc__
    for name in PRESETS:
        assert f'"{name}"' in doc, name
    assert ('choose one of\n                "resnet50_v2_imagenet", "resnet101_v2_imagenet", '
            '"resnet152_v2_imagenet".') in doc
    assert ResNet18V2Backbone.from_preset.__doc__ == doc


@pytest.mark.parametrize(("head", "dropout"), [("gap", 0.0), ("gap", 0.2), ("tutorial", 0.0)])
def test_head_description_is_the_built_head(head, dropout):
    """head.py lists the classifier's head: names, Keras classes, weight shapes, in order."""
    model = build_model(8, num_classes=5, head=head, dropout=dropout)
    ops = head_layers(model.backbone.output_shape[-1], 5, head, dropout)
    built = model.layers[-len(ops):]
    assert [layer.name for layer in built] == [op.name for op in ops]
    assert [type(layer) for layer in built] == [KERAS_LAYERS[op.kind] for op in ops]
    assert [[tuple(w.shape) for w in layer.weights] for layer in built] == [
        [shape for _, shape in op.weights] for op in ops]
    assert model.layers[-len(ops) - 1] is model.backbone


@pytest.mark.parametrize("size", [16, 15])
def test_a_narrow_strided_projection_subsamples_then_convolves(size):
    """Under 16 input channels the projection is a 1x1 stride-2 max-pool, then a stride-1
    conv: the same function as keras-cv's strided 1x1 conv (even and odd sizes), the same
    weights; from 16 channels on it stays keras-cv's layer."""
    narrow = build_model(8, block_type="basic", stem_filters=4, input_shape=(size, size, 1),
                         num_classes=3).layers[1]
    names = [layer.name for layer in narrow.layers]
    assert {"v2_stack_1_block1_0_subsample", "v2_stack_2_block1_0_subsample"} <= set(names)
    conv = narrow.get_layer("v2_stack_1_block1_0_conv")
    assert conv.strides == (1, 1) and conv.kernel.shape == (1, 1, 4, 8)
    pre = keras.Model(narrow.input, narrow.get_layer("v2_stack_1_block1_use_preactivation_relu")
                      .output)
    shortcut = keras.Model(narrow.input, conv.output)
    x = np.random.default_rng(0).normal(size=(3, size, size, 1)).astype("float32")
    strided = tf.nn.conv2d(pre(x), conv.kernel, 2, "SAME") + conv.bias
    np.testing.assert_allclose(shortcut(x), strided, atol=1e-5)
    wide = build_model(8, block_type="basic", input_shape=(16, 16, 1), num_classes=3).layers[1]
    assert wide.get_layer("v2_stack_1_block1_0_conv").strides == (2, 2)
    assert not [n for n in (layer.name for layer in wide.layers) if "subsample" in n]


def test_a_narrow_model_trains_on_odd_batches():
    """The case that crashed TensorFlow 2.21's oneDNN (AVX512): ResNet-8 with 4 stem filters,
    1-channel 16x16 images, an odd batch. Run apart: a crash takes the process with it."""
    script = ("import numpy as np, resnet_builder\n"
              "m = resnet_builder.build_model(8, block_type='basic', stem_filters=4, "
              "input_shape=(16, 16, 1), num_classes=10)\n"
              "m.compile('adam', 'sparse_categorical_crossentropy')\n"
              "x = np.random.default_rng(0).uniform(0, 255, (75, 16, 16, 1)).astype('float32')\n"
              "m.fit(x, np.arange(75) % 10, batch_size=25, epochs=3, verbose=0)\n"
              "print('trained')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]


def test_a_frozen_backbone_stays_frozen_through_save_and_load(tmp_path):
    """Passing trainable=True to the classifier's constructor set every layer in it
    trainable again, so a saved frozen backbone came back training (2 -> 42 weights)."""
    model = build_model(11, num_classes=3, input_shape=(32, 32, 3))
    model.backbone.trainable = False
    model.save(tmp_path / "frozen.keras")
    loaded = keras.models.load_model(tmp_path / "frozen.keras")
    assert len(loaded.trainable_weights) == len(model.trainable_weights) == 2
    model.trainable = False
    model.save(tmp_path / "all.keras")
    assert keras.models.load_model(tmp_path / "all.keras").trainable_weights == []


def test_get_config_hands_out_copies_and_presets_too():
    """Editing a config (or the presets table) must not change the model or later presets:
    it left a model whose saved file could not be loaded."""
    model = build_model(11, num_classes=2, input_shape=(32, 32, 3), class_names=["a", "b"])
    backbone_config = model.backbone.get_config()
    backbone_config["stackwise_blocks"][0] = 5
    model.get_config()["class_names"].append("c")
    assert model.backbone.stackwise_blocks[0] == 1 and model.class_names == ["a", "b"]
    ResNetV2Backbone.presets["resnet18_v2"]["config"]["stackwise_blocks"].append(1)
    assert ResNetV2Backbone.presets["resnet18_v2"]["config"]["stackwise_blocks"] == [2, 2, 2, 2]
    assert list(ResNetV2Backbone.presets_with_weights) == [
        "resnet50_v2_imagenet", "resnet101_v2_imagenet", "resnet152_v2_imagenet"]


def test_keras_cv_positional_arguments_and_numpy_numbers():
    """keras-cv's signature takes its first four arguments by position; NumPy's integers
    and arrays are numbers like Python's (they were refused as not integers)."""
    by_position = ResNetV2Backbone([8], [1], [2], False, None, (16, 16, 3), None, "basic")
    by_numpy = ResNetV2Backbone(stackwise_filters=np.array([8]), stackwise_blocks=[np.int64(1)],
                                stackwise_strides=[2], include_rescaling=False,
                                block_type="basic", input_shape=(16, 16, 3),
                                bn_momentum=np.float32(0.9))
    assert by_position.count_params() == by_numpy.count_params()
    assert by_numpy.get_config()["stackwise_filters"] == [8]
    assert type(by_numpy.get_config()["stackwise_filters"][0]) is int
    model = build_model(11, num_classes=np.int64(3), input_shape=(32, 32, 3))
    assert model.get_config()["num_classes"] == 3 and model.output_shape == (None, 3)


@pytest.mark.parametrize(("arguments", "text"), [
    ({"stackwise_filters": None}, "`stackwise_filters` must be a list of integers"),
    ({"stackwise_filters": "64"}, "Received: stackwise_filters='64'"),
])
def test_a_list_argument_of_another_type_is_named(arguments, text):
    with pytest.raises(ValueError, match=text):
        ResNetV2Backbone(**{"stackwise_filters": [8], "stackwise_blocks": [1],
                            "stackwise_strides": [2], "include_rescaling": False, **arguments})


@pytest.mark.parametrize("key", ["dropout", "threshold", "crop_pct"])
def test_a_classifier_number_of_another_type_is_named(key):
    with pytest.raises(ValueError, match=f"`{key}` must be in .*Received: {key}='x'"):
        build_model(11, num_classes=2, **{key: "x"})


def test_dilations_keep_a_first_unit_stride_and_the_size_check_knows_it():
    """He et al.'s stacks stride in their first unit, which is never dilated: the check
    took dilations as cancelling that stride and let a 2x2 input through to a 1x1 stage."""
    with pytest.raises(ValueError, match="downsamples by 4"):
        resolve_architecture(20, stackwise_dilations=[1, 2, 2], input_shape=(2, 2, 3)).plan()
    plan, _ = resolve_architecture(20, stackwise_dilations=[1, 2, 2],
                                   input_shape=(4, 4, 3)).plan()
    assert plan.shape(plan.output)[:2] == (1, 1)


def test_iterators_are_read_once_and_sets_refused():
    """An iterator was read by the checks, then saved as an empty list."""
    backbone = ResNetV2Backbone(stackwise_filters=map(int, ["8", "16"]),
                                stackwise_blocks=(n for n in [1, 1]),
                                stackwise_strides=iter([1, 2]), include_rescaling=False,
                                block_type="basic", input_shape=(16, 16, 3))
    config = backbone.get_config()
    assert (config["stackwise_filters"], config["stackwise_blocks"]) == ([8, 16], [1, 1])
    assert ResNetV2Backbone.from_config(config).count_params() == backbone.count_params()
    with pytest.raises(ValueError, match="must be a list of integers"):
        ResNetV2Backbone(stackwise_filters={8, 16}, stackwise_blocks=[1, 1],
                         stackwise_strides=[1, 2], include_rescaling=False)


def test_stages_deeper_than_the_depth_limit_are_refused():
    """--blocks 100000000,1 grew in memory until killed."""
    with pytest.raises(ValueError, match="deeper than the 2,000"):
        resolve_architecture(stackwise_blocks=[100_000_000, 1], stackwise_filters=[8, 8],
                             stackwise_strides=[1, 2]).plan()
