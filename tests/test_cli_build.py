"""The build, depths, presets and config commands: output, files and exit codes."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from resnet_builder.cli import main
from resnet_builder.model import keras_writer
from resnet_builder.model.architecture import resolve_architecture
from resnet_builder.model.summary import format_summary, model_summary


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_build_depth_summary():
    result = run("build", "--depth", "56")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rule 9n+2 (bottleneck units), n=6" in out
    assert "also fits 6n+2 (basic units): pass --block-type basic" in out
    assert "601,674 total, 593,578 trainable, 8,096 non-trainable" in out
    assert "8x8" in out and "multiply-adds: 87.21M per image" in out


def test_build_json_has_every_field():
    result = run("build", "--depth", "110", "--block-type", "basic", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.output)
    for key in ("depth", "block_type", "params_total", "params_trainable", "macs_per_image",
                "build_seconds"):
        assert key in summary
    assert (summary["depth"], summary["block_type"], summary["n"]) == (110, "basic_block", 18)
    assert [s["output_size"] for s in summary["stages"]] == [[32, 32], [16, 16], [8, 8]]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--depth", "57"], 2, "nearest: 56 and 65"),
        (["--depth", "abc"], 2, "9n+2"),
        (["--depth", "0"], 2, "smallest: 11"),
        (["--depth", "35", "--block-type", "basic"], 2, "nearest: 32 and 38"),
        (["--preset", "resnet50v2"], 2, "Did you mean 'resnet50_v2'"),
        (["--blocks", "3,4", "--filters", "64,128,256", "--strides", "1,2"], 2, "same length"),
        (["--blocks", "3,x"], 2, "expected integers"),
        (["--depth", "20", "--preset", "resnet18_v2"], 2, "exactly one way"),
        (["--depth", "20", "--output", "model.h5"], 2, "must end in .keras"),
    ],
)
def test_build_user_errors(args, code, text):
    result = run("build", *args)
    assert result.exit_code == code, result.output
    assert text in result.output
    assert "Traceback" not in result.output


def test_build_output_loads_and_predicts(tmp_path):
    path = tmp_path / "m.keras"
    result = run("build", "--depth", "20", "--block-type", "basic", "--num-classes", "4",
                 "--input-shape", "16,16,1", "--output", str(path))
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(path)
    probs = model.predict(np.zeros((2, 16, 16, 1), "float32"), verbose=0)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert model.count_params() == json.loads(run("build", "--depth", "20", "--block-type",
                                                  "basic", "--num-classes", "4",
                                                  "--input-shape", "16,16,1",
                                                  "--json").output)["params_total"]


def test_build_preset_and_stackwise_and_config(tmp_path):
    preset = json.loads(run("build", "--preset", "resnet50_v2", "--json").output)
    assert preset["backbone_params"] == 23_564_800 and preset["input_shape"] == [224, 224, 3]
    stackwise = json.loads(run("build", "--blocks", "2,2", "--filters", "32,64", "--strides",
                               "1,2", "--block-type", "basic", "--json").output)
    assert [s["blocks"] for s in stackwise["stages"]] == [2, 2]
    config = json.loads(run("build", "--config", "configs/digits.yaml", "--json").output)
    assert config["input_shape"] == [16, 16, 1] and config["block_type"] == "basic_block"


def test_plot_without_pydot_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pydot(name, *args, **kwargs):
        if name == "pydot":
            raise ImportError("no pydot")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydot)
    result = run("build", "--depth", "11", "--plot", str(tmp_path / "m.png"))
    assert result.exit_code == 1
    assert "pip install pydot" in result.output and "graphviz" in result.output
    # asked before anything is written: --output's file was left behind by a failed command
    result = run("build", "--depth", "11", "--output", str(tmp_path / "m.keras"),
                 "--plot", str(tmp_path / "m.png"))
    assert result.exit_code == 1 and "pip install pydot" in result.output
    assert not (tmp_path / "m.keras").exists()


def test_build_config_with_num_classes_null_takes_the_datas_count(tmp_path):
    """train builds 100 classes for cifar100; build --config printed and wrote 10."""
    summary = json.loads(run("build", "--config", "configs/cifar100.yaml", "--json").output)
    assert summary["num_classes"] == 100
    folder = run("build", "--config", "configs/folder.yaml")
    assert folder.exit_code == 2 and "--num-classes" in folder.output
    assert "leaves model.num_classes to its data (data.source: folder)" in folder.output
    given = json.loads(run("build", "--config", "configs/folder.yaml", "--num-classes", "3",
                           "--json").output)
    assert given["num_classes"] == 3
    from resnet_builder.cli_model import architecture_from_options

    options = {key: None for key in ("depth", "preset", "block_type", "blocks", "filters",
                                     "strides", "dilations", "stem_filters", "num_classes",
                                     "head", "dropout", "input_shape")}
    for config, count in (("configs/folder.yaml", 10), ("configs/cifar100.yaml", 100)):
        # bench measures on synthetic images: no data to read for the count
        _, args = architecture_from_options({**options, "config_path": config},
                                            data_classes=False)
        assert args["num_classes"] == count


@pytest.mark.parametrize("args", [
    ("--blocks", "1,,1", "--filters", "8,16", "--strides", "1,2"),
    ("--depth", "20", "--input-shape", "32,,32,3"),
    ("--depth", "20", "--num-classes", "1"),
    ("--depth", "20", "--output", "m.h5"),
    ("--depth", "20", "--output", "no/such/folder/m.keras"),
])
def test_build_refuses_bad_arguments_with_exit_code_2(args):
    """Empty list items were dropped (1,,1 built [1, 1]), one class built a softmax that is
    always 1, and a bad --output exited 1 where every other bad argument exits 2."""
    result = run("build", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_depths_lists_both_rules():
    result = run("depths", "--max", "60", "--json")
    rows = json.loads(result.output)
    by_depth = {(r["depth"], r["block_type"]): r for r in rows}
    assert by_depth[(56, "block")]["n"] == 6 and by_depth[(56, "basic_block")]["n"] == 9
    assert (57, "block") not in by_depth
    assert by_depth[(56, "block")]["params"] == 601_674
    text = run("depths", "--max", "60").output
    assert "needs --block-type basic (56 fits both)" in text
    assert "needs --block-type" not in run("depths", "--max", "60", "--block-type", "basic").output


def test_depths_counts_every_depth_up_to_the_largest_exactly():
    """Counts come from two plans per rule (linear in n), so --max 2000 lists at once; each
    equals its own plan's count."""
    rows = json.loads(run("depths", "--max", "2000", "--json").output)
    assert rows[-1]["depth"] == 2000 and len(rows) == 555
    for r in rows[::50] + rows[-2:]:
        arch = resolve_architecture(r["depth"], block_type=r["block_type"])
        assert r["params"] == model_summary(arch, 10)["params_total"], r
    refused = run("depths", "--max", "2001")
    assert refused.exit_code == 2 and "2001 is not in the range" in refused.output


def test_a_network_on_the_command_line_replaces_the_configs_shape_too():
    """--preset with --config kept the config's basic blocks and 16-filter stem."""
    result = run("build", "--config", "configs/digits.yaml", "--preset", "resnet50_v2",
                 "--input-shape", "64,64,3", "--json")
    summary = json.loads(result.output)
    assert (summary["block_type"], summary["stem_filters"]) == ("block", 64)
    assert summary["backbone_params"] == 23_564_800, summary
    deeper = json.loads(run("build", "--config", "configs/digits.yaml", "--depth", "20",
                            "--json").output)  # a depth keeps the config's basic blocks
    assert deeper["block_type"] == "basic_block", deeper


def test_building_an_imagenet_preset_says_its_weights_are_not_in_the_file(tmp_path):
    result = run("build", "--preset", "resnet20_cifar", "--output", str(tmp_path / "a.keras"))
    assert result.exit_code == 0 and "ImageNet" not in result.output
    result = run("build", "--preset", "resnet50_v2_imagenet", "--input-shape", "32,32,3",
                 "--output", str(tmp_path / "b.keras"))
    assert result.exit_code == 0, result.output
    assert "holds freshly initialised weights, not resnet50_v2_imagenet's ImageNet" in result.output


def test_presets_lists_counts():
    result = run("presets")
    assert result.exit_code == 0
    assert "resnet152_v2" in result.output and "58,331,648" in result.output


def test_config_show_and_check(tmp_path):
    shown = run("config", "--show")
    assert shown.exit_code == 0 and "epochs: 15" in shown.output
    checked = run("config", "configs/digits.yaml", "--set", "train.epochs=3")
    assert checked.exit_code == 0 and "epochs: 3" in checked.output
    bad = run("config", "configs/digits.yaml", "--set", "train.epoch=3")
    assert bad.exit_code == 2 and "did you mean 'epochs'" in bad.output
    defaults = run("config", "--set", "train.epochs=5")  # the defaults with the override
    assert defaults.exit_code == 0 and "epochs: 5" in defaults.output
    assert run("config", "--set", "bogus.x=1").exit_code == 2
    both = run("config", "--show", "configs/digits.yaml")
    assert both.exit_code == 2 and "--show prints the defaults" in both.output


def test_format_summary_shows_the_rule_counts_files_and_note():
    """summary.format_summary is build's terminal form: the depth rule, counts, files, note."""
    s = model_summary(resolve_architecture(56), 10)
    s.update(output="m.keras", note="wrote with keras.Model.save: the fast writer is verified "
                                    "for Keras 3.15, this is 3.16", build_seconds=0.5)
    text = format_summary(s)
    assert "ResNetV2-56: rule 9n+2 (bottleneck units), n=6 (default block type)" in text
    assert "also fits 6n+2 (basic units): pass --block-type basic" in text
    basic = format_summary({**model_summary(resolve_architecture(20, block_type="basic"), 10),
                            "build_seconds": 0.1})
    assert "ResNetV2-20: rule 6n+2 (basic units), n=3 (basic block type asked for)" in basic
    assert "20 also fits 9n+2 (bottleneck units): pass --block-type bottleneck" in basic
    assert "601,674 total, 593,578 trainable, 8,096 non-trainable" in text
    assert "multiply-adds: 87.21M per image" in text
    assert "wrote m.keras\nnote: wrote with keras.Model.save: the fast writer is verified for " \
           "Keras 3.15, this is 3.16\ndone in 0.50 s" in text
    basic = model_summary(resolve_architecture(20, block_type="basic"), 10)
    text = format_summary({**basic, "build_seconds": 0.1})
    assert "pass --block-type bottleneck" in text and "note" not in text


def test_a_bottleneck_block_type_asked_for_is_not_called_the_default():
    """--block-type bottleneck at a depth that fits both rules said "(default block type)"."""
    result = run("build", "--depth", "56", "--block-type", "bottleneck")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == "ResNetV2-56: rule 9n+2 (bottleneck units), n=6 (bottleneck block type " \
                    "asked for)"
    assert "56 also fits 6n+2 (basic units): pass --block-type basic" in result.output
    asked = model_summary(resolve_architecture(56, block_type="bottleneck"), 10)
    assert asked["block_type_asked"] is True
    default = model_summary(resolve_architecture(56), 10)
    assert default["block_type_asked"] is False and "(default block type)" in format_summary(
        {**default, "build_seconds": 0.1})


def test_build_output_on_unverified_keras_notes_the_keras_save(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_writer, "keras_version", lambda: "3.16.0")
    path = tmp_path / "m.keras"
    result = run("build", "--depth", "11", "--num-classes", "3", "--output", str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["note"] == ("wrote with keras.Model.save: the fast writer is verified for "
                               "Keras 3.15, this is 3.16")
    assert keras.models.load_model(path).count_params() == summary["params_total"]


def test_bench_refuses_a_non_square_input_before_measuring():
    """The trainer's images are data.image_size squared: 8x16 failed after the step and fit
    were set up, as 'this is a bug'."""
    result = run("bench", "--depth", "8", "--block-type", "basic", "--input-shape", "8,16,1",
                 "--no-pipelines")
    assert result.exit_code == 2 and "bench trains on square images" in result.output
    for shape, text in (("16,16,2", "data.channels must be one of 1, 3; got 2"),
                        ("4,4,1", "data.image_size must be in [8, 4096]; got 4")):
        # these failed ~20 s into measuring, naming a --set the user never typed
        result = run("bench", "--depth", "8", "--input-shape", shape, "--no-pipelines")
        assert result.exit_code == 2 and text in result.output, result.output


def test_build_config_takes_the_command_lines_network_over_the_configs(tmp_path):
    """The config's own network (16x16 for resnet50_v2) cannot build; the command line's
    input shape or depth replaces it, so the config check must wait for them."""
    path = tmp_path / "small.yaml"
    path.write_text("data:\n  image_size: 16\nmodel:\n  preset: resnet50_v2\n")
    for extra in (["--input-shape", "224,224,3"], ["--depth", "20"]):
        result = CliRunner().invoke(main, ["build", "--config", str(path), *extra])
        assert result.exit_code == 0, result.output
    alone = CliRunner().invoke(main, ["build", "--config", str(path)])
    assert alone.exit_code == 2 and "is too small" in alone.output
