"""Tests for the training config: loading, --set, every kind of error message, rendering."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import yaml

from resnet_builder import depth as depth_rules
from resnet_builder import files
from resnet_builder.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_yaml,
    default_config_yaml,
    describe_keys,
    dump_config,
    key_specs,
    load_config,
    markdown_table,
    model_arguments,
    validate_config,
)
from resnet_builder.config.schema import BLOCK_TYPES, SECTION_CLASSES
from resnet_builder.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path | None, overrides: tuple[str, ...] | list[str] = ()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


# ----------------------------------------------------------------------------- loading


def test_no_file_gives_the_schema_defaults() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.train.epochs == 15
    assert cfg.model.depth == 20
    assert cfg.data.source == "digits"


def test_default_lists_are_not_shared_between_configs() -> None:
    a, b = load_config(None), load_config(None)
    a.schedule.milestones.append(3)
    assert b.schedule.milestones == []
    assert key_specs()["schedule"]["milestones"].default == []


def test_partial_file_takes_defaults_for_missing_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "train:\n  epochs: 3\n"))
    assert cfg.train.epochs == 3
    assert cfg.train.early_stopping_patience == 0
    assert cfg.data == Config().data


def test_empty_file_and_empty_section_are_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n")) == Config()
    assert load_config(write(tmp_path, "train:\n  # epochs: 3\n", "y.yaml")) == Config()


def test_overrides_are_parsed_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  preset: resnet50_v2\n")
    cfg = load_config(path, [
        "train.epochs=5", "data.batch_size=64", "model.preset=null",
        "model.stackwise_filters=[8, 16, 32, 64]", "model.stackwise_blocks=[3,4,6,3]",
        "model.stackwise_strides=[1,2,2,2]", "augment.horizontal_flip=true",
        "optim.weight_decay=5e-4"])
    assert cfg.train.epochs == 5
    assert cfg.data.batch_size == 64
    assert cfg.model.preset is None
    assert cfg.model.stackwise_blocks == [3, 4, 6, 3]
    assert cfg.augment.horizontal_flip is True
    assert cfg.optim.weight_decay == pytest.approx(5e-4)


def test_override_beats_the_file_and_later_override_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 3\n")
    assert load_config(path, ["train.epochs=7"]).train.epochs == 7
    assert load_config(path, ["train.epochs=7", "train.epochs=9"]).train.epochs == 9


def test_a_single_override_string_is_one_override() -> None:
    assert load_config(None, "train.epochs=4").train.epochs == 4  # type: ignore[arg-type]


def test_apply_overrides_sets_keys_on_a_loaded_config_and_checks_them() -> None:
    cfg = load_config(CONFIGS / "cifar.yaml")
    changed = apply_overrides(cfg, ["train.epochs=2", "run.name=2024"])
    assert (changed.train.epochs, changed.run.name) == (2, "2024")
    assert cfg.train.epochs == 164  # the given config is left alone
    assert apply_overrides(cfg) == cfg
    assert apply_overrides(cfg, "train.epochs=3").train.epochs == 3  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^--set optim.lr=0.001: schedule.warmup_lr 0.01"):
        apply_overrides(cfg, ["optim.lr=0.001"])
    with pytest.raises(ConfigError, match=r"^--set train.epoch=2: 'epoch' is not a key"):
        apply_overrides(cfg, ["train.epoch=2"])


def test_string_keys_take_set_text_as_written_but_null_is_null(tmp_path: Path) -> None:
    cfg = load_config(None, ["run.name=2024", "run.project=a: b"])
    assert cfg.run.name == "2024"
    assert cfg.run.project == "a: b"
    path = write(tmp_path, "model:\n  weights: w.keras\n  preset: resnet18_v2\n")
    assert load_config(path, ["model.weights=null"]).model.weights is None
    # YAML would read a comment, an anchor or an empty value there: the text is kept
    for text in ("/data/set #1", "&x", "#1", "a: b"):
        assert load_config(None, [f"data.path={text}"]).data.path == text
    for null in ("null", "~", "NULL", ""):
        assert load_config(None, [f"data.path={null}"]).data.path is None
    assert load_config(None, ["data.path='a b'"]).data.path == "a b"  # quoted YAML's way
    assert load_config(None, ["data.path='null'"]).data.path == "null"


def test_int_is_accepted_for_float_and_converted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "optim:\n  lr: 1\n"))
    assert cfg.optim.lr == 1.0
    assert type(cfg.optim.lr) is float


def test_yaml_1_2_scalars_off_is_text_and_exponents_are_numbers(tmp_path: Path) -> None:
    text = "hardware:\n  mixed_precision: off\noptim:\n  weight_decay: 1e-4\n  lr: 2E-1\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.hardware.mixed_precision == "off"
    assert cfg.optim.weight_decay == pytest.approx(1e-4)
    assert cfg.optim.lr == pytest.approx(0.2)


def test_an_old_seed_above_the_range_says_which_seed_it_trained_as() -> None:
    """Seeds up to 2**32 - 1 were allowed and folded: a run made then resumes with the
    folded one (the same split and order)."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["hardware.seed=3000000000"])
    assert "this one trained as 852516352" in err.value.hint


def test_a_dict_of_sections_is_a_config_as_its_yaml_would_be() -> None:
    cfg = load_config({"train": {"epochs": 2}, "model": {"depth": 8}}, ["optim.lr=0.5"])
    assert (cfg.train.epochs, cfg.model.depth, cfg.optim.lr) == (2, 8, 0.5)
    with pytest.raises(ConfigError, match="'epoch' is not a key of train"):  # as in a file
        load_config({"train": {"epoch": 2}})
    with pytest.raises(TypeError, match="a YAML path or a dict of sections, got int"):
        load_config(3)  # type: ignore[arg-type]


def test_yaml_1_2_integers_are_decimal_not_octal_or_base_60(tmp_path: Path) -> None:
    text = "train:\n  epochs: 010\n  early_stopping_patience: 1_000\nhardware:\n  seed: 0x10\n"
    cfg = load_config(write(tmp_path, text))
    assert (cfg.train.epochs, cfg.train.early_stopping_patience) == (10, 1000)  # not 8
    assert cfg.hardware.seed == 16
    msg = str(error(write(tmp_path, "train:\n  checkpoint_every: 1:30\n")))  # not 90 steps
    assert "train.checkpoint_every" in msg and "'1:30'" in msg


def test_an_integer_past_floats_range_is_not_a_finite_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr must be a finite number, got 1000"):
        load_config(None, ["optim.lr=1" + "0" * 320])


def test_yes_is_not_a_boolean(tmp_path: Path) -> None:
    msg = str(error(write(tmp_path, "data:\n  normalize: yes\n")))
    assert "x.yaml:2: data.normalize must be true or false, got 'yes' (a string)" in msg
    msg = str(error(write(tmp_path, "data:\n  cache: yes\n")))  # true, false or disk
    assert "x.yaml:2: data.cache must be one of true, false, disk; got 'yes'" in msg


# ----------------------------------------------------------------------------- file problems


def test_missing_file(tmp_path: Path) -> None:
    err = error(tmp_path / "nope.yaml")
    assert "config file not found" in err.message
    assert "nope.yaml" in err.message
    assert err.exit_code == 2
    assert isinstance(err, UserError)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert "is a folder" in error(tmp_path).message


def test_malformed_yaml_gives_file_line_column_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 5\n   lr: 1\n", "bad.yaml")
    err = error(path)
    assert err.message.startswith(f"{path}:3:6: invalid YAML: mapping values are not allowed")
    assert "line 3 reads 'lr: 1'" in err.hint


def test_malformed_yaml_with_a_tab(tmp_path: Path) -> None:
    err = error(write(tmp_path, "train:\n\tepochs: 5\n"))
    assert re.search(r"x\.yaml:2:1: invalid YAML: .*'\\t'", err.message)


def test_unclosed_list_names_where_it_started(tmp_path: Path) -> None:
    err = error(write(tmp_path, "schedule:\n  milestones: [1, 2\ntrain:\n  epochs: 3\n"))
    assert re.match(r".*x\.yaml:3:\d+: invalid YAML: .*started on line 2", err.message)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = error(write(tmp_path, "# a list\n- 1\n- 2\n"))
    assert err.message.startswith(f"{tmp_path / 'x.yaml'}:2: a config must be a mapping")
    assert "got a list" in err.message


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    err = error(write(tmp_path, "model:\n  depth: 20\ntrain: 5\n"))
    assert "x.yaml:3: section train must be a mapping of key: value, got an integer 5" \
        in err.message
    assert "epochs: 15" in err.hint


def test_key_given_twice_is_an_error(tmp_path: Path) -> None:
    err = error(write(tmp_path, "train:\n  epochs: 3\n  epochs: 4\n"))
    assert "x.yaml:3: 'train.epochs' is given twice (also on line 2)" in err.message


def test_section_given_twice_is_an_error(tmp_path: Path) -> None:
    err = error(write(tmp_path, "optim:\n  lr: 0.1\ntrain:\n  epochs: 3\noptim:\n  lr: 0.2\n"))
    assert "x.yaml:5: 'optim' is given twice (also on line 1)" in err.message


# ----------------------------------------------------------------------------- unknown keys


def test_unknown_key_names_key_file_line_and_closest_key(tmp_path: Path) -> None:
    text = "# header\nmodel:\n  depth: 56\n\ntrain:\n  epochs: 10\n  epoch: 5\n"
    path = write(tmp_path, text)
    err = error(path)
    assert err.message == f"{path}:7: 'epoch' is not a key of train; did you mean 'epochs'?"
    assert err.hint == ("keys of train: epochs, early_stopping_patience, monitor, "
                        "eval_batch_size, checkpoint_every")


def test_unknown_key_without_close_match_lists_keys(tmp_path: Path) -> None:
    err = error(write(tmp_path, "train:\n  zzz: 1\n"))
    assert err.message.endswith("x.yaml:2: 'zzz' is not a key of train")
    assert "epochs" in err.hint


def test_key_in_the_wrong_section_points_to_its_section(tmp_path: Path) -> None:
    err = error(write(tmp_path, "train:\n  epochs: 3\n  batch_size: 32\n"))
    assert "x.yaml:3: 'batch_size' is not a key of train; did you mean data.batch_size?" \
        in err.message


def test_unknown_section_suggests_closest(tmp_path: Path) -> None:
    err = error(write(tmp_path, "trian:\n  epochs: 3\n"))
    assert "x.yaml:1: 'trian' is not a section; did you mean 'train'?" in err.message
    assert "model, data, augment" in err.hint


def test_key_outside_any_section_points_to_its_section(tmp_path: Path) -> None:
    err = error(write(tmp_path, "model:\n  depth: 20\nepochs: 5\n"))
    assert "x.yaml:3: 'epochs' is not a section; did you mean train.epochs?" in err.message


def test_unknown_set_key_says_it_came_from_set() -> None:
    err = error(None, ["train.epochs=3", "train.epoch=5"])
    assert err.message == "--set train.epoch=5: 'epoch' is not a key of train; " \
                          "did you mean 'epochs'?"


def test_unknown_set_section() -> None:
    assert error(None, ["optm.lr=1"]).message == \
        "--set optm.lr=1: 'optm' is not a section; did you mean 'optim'?"


@pytest.mark.parametrize(("override", "expected"), [
    ("train.epochs", "--set train.epochs: expected section.key=value"),
    ("=5", "--set =5: expected section.key=value"),
    ("epochs=5", "--set epochs=5: 'epochs' is not a section.key name; did you mean "
                 "train.epochs?"),
    ("train.epochs.x=5", "--set train.epochs.x=5: 'train.epochs.x' is not a section.key name"),
    ("model.stackwise_blocks=[3,4", "--set model.stackwise_blocks=[3,4: cannot read '[3,4' "
                                    "as a YAML value: expected ',' or ']'"),
])
def test_malformed_set(override: str, expected: str) -> None:
    err = error(None, [override])
    assert err.message.startswith(expected)
    assert err.hint


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(("text", "expected"), [
    ("train:\n  epochs: ten\n", "x.yaml:2: train.epochs must be an integer, got 'ten' "
                                "(a string)"),
    ("train:\n  epochs: 5.5\n", "x.yaml:2: train.epochs must be an integer, got 5.5 "
                                "(a decimal number)"),
    ("train:\n  epochs: true\n", "x.yaml:2: train.epochs must be an integer, got true "
                                 "(a boolean)"),
    ("optim:\n  lr: false\n", "x.yaml:2: optim.lr must be a number, got false (a boolean)"),
    ("optim:\n  lr: .nan\n", "x.yaml:2: optim.lr must be a finite number, got .nan"),
    ("data:\n  normalize: 1\n",
     "x.yaml:2: data.normalize must be true or false, got 1 (an integer)"),
    ("run:\n  name: 5\n", "x.yaml:2: run.name must be a string, got 5 (an integer)"),
    ("train:\n  epochs: null\n", "x.yaml:2: train.epochs cannot be null"),
    ("schedule:\n  milestones: 30\n", "x.yaml:2: schedule.milestones must be a list of "
                                      "integers, got 30 (an integer)"),
    ("model:\n  stackwise_blocks: [3, 4, x]\n", "x.yaml:2: model.stackwise_blocks[2] must be an "
                                                "integer, got 'x' (a string)"),
    ("model:\n  stackwise_blocks: [3, true]\n", "x.yaml:2: model.stackwise_blocks[1] must be "
                                                "an integer, got true (a boolean)"),
])
def test_wrong_type_names_key_line_and_value(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(write(tmp_path, text)).message


def test_float_for_int_hints_at_the_decimal_point(tmp_path: Path) -> None:
    err = error(write(tmp_path, "data:\n  batch_size: 64.0\n"))
    assert "got 64.0" in err.message
    assert "write 64, without the decimal point" in err.hint
    assert "an integer >= 1 (default: 128)" in err.hint


def test_quoted_number_hints_at_the_quotes(tmp_path: Path) -> None:
    assert "remove the quotes" in error(write(tmp_path, "train:\n  epochs: '5'\n")).hint


@pytest.mark.parametrize(("override", "expected"), [
    ("train.epochs=0", "--set train.epochs=0: train.epochs must be in [1, 1000000], got 0"),
    ("optim.lr=-1", "--set optim.lr=-1: optim.lr must be >= 0, got -1"),
    ("optim.momentum=1.5", "--set optim.momentum=1.5: optim.momentum must be in [0, 1], "
                           "got 1.5"),
    ("data.image_size=5000", "data.image_size must be in [8, 4096], got 5000"),
    ("schedule.milestones=[5,0]", "schedule.milestones[1] must be >= 1, got 0"),
    ("hardware.seed=-1", "hardware.seed must be in [0, 2147483647], got -1"),
    ("hardware.seed=2147483648", "hardware.seed must be in [0, 2147483647], got 2147483648"),
])
def test_out_of_range_names_key_range_and_value(override: str, expected: str) -> None:
    assert expected in error(None, [override]).message


def test_not_a_choice_suggests_the_closest(tmp_path: Path) -> None:
    err = error(write(tmp_path, "data:\n  source: cifar\n"))
    assert err.message.endswith(
        "x.yaml:2: data.source must be one of digits, cifar10, cifar100, folder, npz, "
        "synthetic, tfrecord, csv; got 'cifar'; did you mean 'cifar10'?")


def test_int_choices(tmp_path: Path) -> None:
    assert "data.channels must be one of 1, 3; got 2" in \
        error(write(tmp_path, "data:\n  channels: 2\n")).message


def test_value_error_from_set_points_to_the_set(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 3\n")
    err = error(path, ["train.epochs=abc"])
    assert err.message.startswith("--set train.epochs=abc: train.epochs must be an integer, "
                                  "got 'abc'")


def test_nullable_keys_accept_null(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "train:\n  eval_batch_size: null\nhardware:\n  seed: ~\n"))
    assert cfg.train.eval_batch_size is None
    assert cfg.hardware.seed is None


# ----------------------------------------------------------------------------- cross-key rules


def test_preset_and_stackwise_together_is_an_error(tmp_path: Path) -> None:
    text = ("model:\n  preset: resnet50_v2\n  stackwise_filters: [8]\n"
            "  stackwise_blocks: [1]\n  stackwise_strides: [1]\n")
    err = error(write(tmp_path, text))
    assert "x.yaml:2: model.preset and model.stackwise_* both say which network to build" \
        in err.message
    assert "model.depth is ignored" in err.hint


def test_depth_is_ignored_when_preset_is_set(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "model:\n  preset: resnet50_v2\n  depth: 21\n"))
    assert cfg.model.preset == "resnet50_v2"
    with pytest.raises(ConfigError):  # the same depth alone is checked
        load_config(write(tmp_path, "model:\n  depth: 21\n", "y.yaml"))


def test_stackwise_lists_must_come_together(tmp_path: Path) -> None:
    err = error(write(tmp_path, "model:\n  stackwise_blocks: [3, 4, 6, 3]\n"))
    assert err.message.endswith(
        "x.yaml:2: model.stackwise_blocks is set but model.stackwise_filters and "
        "model.stackwise_strides are not; give all three (one entry per stage)")


def test_stackwise_lists_must_have_equal_length() -> None:
    err = error(None, ["model.stackwise_filters=[16, 32]", "model.stackwise_blocks=[2, 2, 2]",
                       "model.stackwise_strides=[1, 2]"])
    assert "got lengths stackwise_filters 2, stackwise_blocks 3, stackwise_strides 2" \
        in err.message
    assert err.message.startswith("--set model.stackwise_")


def test_stackwise_lists_must_not_be_empty() -> None:
    err = error(None, ["model.stackwise_filters=[]", "model.stackwise_blocks=[]",
                       "model.stackwise_strides=[]"])
    assert "one entry per stage" in err.message


def test_depth_must_fit_the_block_type(tmp_path: Path) -> None:
    err = error(write(tmp_path, "model:\n  depth: 21\n  block_type: basic\n"))
    assert err.message.endswith("x.yaml:2: model.depth 21 is not a valid ResNet depth: it must "
                                "be 6n+2 (basic units) with n >= 1 (6n+2 (basic units): "
                                "nearest: 20 and 26).")
    assert err.hint.startswith("change model.depth or model.block_type;")
    wrong_block = error(None, ["model.depth=26", "model.block_type=bottleneck"]).message
    assert "9n+2 (bottleneck units)" in wrong_block
    assert "26 fits 6n+2 (basic units): ask for block type basic" in wrong_block
    neither = error(None, ["model.depth=22"])
    assert "nearest: 20 and 29" in neither.message and "nearest: 20 and 26" in neither.message
    assert neither.hint.startswith("change model.depth;")


@pytest.mark.parametrize(("depth", "block"), [(20, "basic"), (20, None), (29, "bottleneck"),
                                               (164, "bottleneck"), (110, "basic_block"),
                                               (56, None), (11, "block")])
def test_valid_depths(depth: int, block: str | None) -> None:
    cfg = load_config(None, [f"model.depth={depth}", f"model.block_type={block or 'null'}"])
    assert cfg.model.depth == depth


def test_depth_null_needs_preset_or_stackwise() -> None:
    assert "model.depth is null and neither model.preset nor model.stackwise_* is set" in \
        error(None, ["model.depth=null"]).message
    assert load_config(None, ["model.depth=null", "model.preset=resnet18_v2"]).model.depth is None


def test_block_types_are_the_spellings_depth_py_accepts() -> None:
    assert BLOCK_TYPES == ("basic", "bottleneck", "basic_block", "block")
    assert set(BLOCK_TYPES) == set(depth_rules.BLOCK_TYPE_ALIASES)


@pytest.mark.parametrize("block", [None, *BLOCK_TYPES])
def test_depth_rule_agrees_with_depth_py(block: str | None) -> None:
    for depth in range(3, 200):
        overrides = [f"model.depth={depth}", f"model.block_type={block or 'null'}"]
        try:
            depth_rules.resolve_depth(depth, block)
        except ValueError as exc:  # the same words, with the place in the file
            assert f"model.{exc}" in error(None, overrides).message, depth
        else:
            assert load_config(None, overrides).model.depth == depth


@pytest.mark.parametrize("source", ["folder", "npz", "csv", "tfrecord"])
def test_sources_without_a_location_need_a_path(tmp_path: Path, source: str) -> None:
    err = error(write(tmp_path, f"data:\n  batch_size: 8\n  source: {source}\n"))
    assert err.message.endswith(f"x.yaml:3: data.source is {source} but data.path is not set")
    assert "data.path" in err.hint
    cfg = load_config(write(tmp_path, f"data:\n  source: {source}\n  path: p\n", "y.yaml"))
    assert cfg.data.path == "p"


def test_config_command_rejects_tfrecord_without_a_path_up_front(tmp_path: Path) -> None:
    """Caught by `resnet-builder config` (usage error, exit 2), as for folder and csv."""
    from click.testing import CliRunner

    from resnet_builder.cli import main

    path = write(tmp_path, "data:\n  source: folder\n  path: photos\n")
    result = CliRunner().invoke(main, ["config", str(path), "--set", "data.source=tfrecord",
                                       "--set", "data.path=null"])
    assert result.exit_code == 2, result.output
    assert "data.source is tfrecord but data.path is not set" in result.output
    assert "resnet-builder pack" in result.output and "Traceback" not in result.output


def test_step_schedule_needs_milestones(tmp_path: Path) -> None:
    err = error(write(tmp_path, "schedule:\n  unit: iterations\n  type: step\n"))
    assert err.message.endswith("x.yaml:3: schedule.type is step but schedule.milestones is "
                                "empty")
    assert "in iterations" in err.hint


def test_step_milestones_must_increase(tmp_path: Path) -> None:
    text = "schedule:\n  type: step\n  milestones: [48000, 32000]\n"
    assert error(write(tmp_path, text)).message.endswith(
        "x.yaml:3: schedule.milestones must increase, got [48000, 32000]")
    assert "must increase" in error(None, ["schedule.type=step",
                                           "schedule.milestones=[5, 5]"]).message


def test_milestones_are_ignored_by_other_schedules() -> None:
    cfg = load_config(None, ["schedule.type=cosine", "schedule.milestones=[5, 3]"])
    assert cfg.schedule.milestones == [5, 3]


def test_warmup_lr_above_lr_is_an_error_only_with_warmup(tmp_path: Path) -> None:
    text = "optim:\n  lr: 0.01\nschedule:\n  warmup: 5\n  warmup_lr: 0.1\n"
    err = error(write(tmp_path, text))
    assert err.message.endswith("x.yaml:5: schedule.warmup_lr 0.1 is above optim.lr 0.01")
    assert load_config(None, ["schedule.warmup=0", "schedule.warmup_lr=5"]).schedule.warmup == 0


def test_lowering_lr_with_set_points_at_the_set() -> None:
    err = error(CONFIGS / "cifar.yaml", ["optim.lr=0.001"])
    assert err.message == "--set optim.lr=0.001: schedule.warmup_lr 0.01 is above optim.lr 0.001"


def test_cosine_floor_above_lr_is_an_error() -> None:
    assert "schedule.min_lr 1 is above optim.lr 0.1" in \
        error(None, ["schedule.min_lr=1"]).message
    assert load_config(None, ["schedule.type=constant", "schedule.min_lr=1"]).schedule.min_lr == 1


def test_freezing_a_random_backbone_is_an_error() -> None:
    err = error(None, ["model.freeze_backbone_epochs=2"])
    assert "model.freeze_backbone_epochs needs trained weights to freeze" in err.message
    # a preset alone names an architecture: its backbone would be frozen at random values
    err = error(None, ["model.freeze_backbone_epochs=2", "model.preset=resnet18_v2",
                       "model.depth=null"])
    assert "model.freeze_backbone_epochs needs trained weights to freeze" in err.message
    cfg = load_config(None, ["model.freeze_backbone_epochs=2", "model.weights=w.keras"])
    assert cfg.model.freeze_backbone_epochs == 2


def test_deterministic_with_xla_is_an_error_for_a_network_with_a_max_pool() -> None:
    """XLA has no deterministic max-pool gradient: the pair failed in the first step. A
    network without one trains (and its runs must stay resumable)."""
    pair = ["hardware.deterministic=true", "hardware.xla=true"]
    err = error(None, [*pair, "model.depth=null", "model.preset=resnet18_v2",
                       "data.image_size=64"])
    assert "cannot be kept with hardware.xla" in err.message
    err = error(None, [*pair, "model.stem_filters=8", "model.block_type=basic"])  # narrow
    assert "cannot be kept with hardware.xla" in err.message
    assert load_config(None, pair).hardware.xla  # CIFAR stem, 16 wide: no max-pool


# ----------------------------------------------------------------------------- dicts and dumps


def test_dict_round_trip_and_dict_errors_name_the_source() -> None:
    cfg = load_config(CONFIGS / "cifar.yaml")
    data = config_to_dict(cfg)
    assert data["schedule"]["milestones"] == [32000, 48000]
    assert config_from_dict(data) == cfg
    data["train"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"^run/config.yaml: train.epochs must be in "
                                          r"\[1, 1000000\], got 0"):
        config_from_dict(data, source="run/config.yaml")


def test_validate_config_catches_changes_made_in_code() -> None:
    cfg = Config()
    cfg.data.batch_size = 0
    with pytest.raises(ConfigError, match=r"data\.batch_size must be >= 1"):
        validate_config(cfg)


def test_dump_config_reloads_equal_and_leaves_no_temp_file(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "folder.yaml")
    path = tmp_path / "run" / "config.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)  # any YAML reader agrees
    assert os.listdir(path.parent) == ["config.yaml"]


def test_dump_config_round_trips_awkward_strings(tmp_path: Path) -> None:
    cfg = Config()
    names = ["off", "null", "2024", "0801", "09", "0o17", "1e-4", "0x_",  # numbers to YAML 1.2
             "a: b # c", " lead", "line\nbreak", "tab\there", "ünï", "'q\""]
    for i, name in enumerate(names):
        cfg.run.name = name
        path = tmp_path / f"c{i}.yaml"
        dump_config(cfg, path)
        assert load_config(path).run.name == name
        assert yaml.safe_load(path.read_text(encoding="utf-8"))["run"]["name"] == name


def test_dump_config_keeps_the_old_file_when_writing_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old\n")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        dump_config(Config(), path)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_dump_config_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.epochs = 0
    with pytest.raises(ConfigError):
        dump_config(cfg, tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml").exists()


# ----------------------------------------------------------------------------- docs


def test_default_yaml_loads_back_to_the_defaults(tmp_path: Path) -> None:
    text = default_config_yaml()
    assert load_config(write(tmp_path, text)) == Config()
    assert yaml.safe_load(text) == config_to_dict(Config())


def test_default_yaml_comments_every_key_with_its_help() -> None:
    text = default_config_yaml()
    comments = " ".join(line.strip().lstrip("# ") for line in text.splitlines()
                        if line.strip().startswith("#"))
    for section, specs in key_specs().items():
        assert f"\n{section}:\n" in text
        for name, spec in specs.items():
            assert re.search(rf"^  {name}: ", text, re.M), name
            assert " ".join(spec.help.split()) in comments, spec.dotted


def test_describe_keys_covers_every_field_with_default_and_allowed_values() -> None:
    rows = describe_keys()
    fields = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config)
              for f in dataclasses.fields(s.default_factory)]
    assert [key for key, _, _ in rows] == fields
    table = {key: (default, help) for key, default, help in rows}
    assert table["train.epochs"] == ("15", "Epochs to train. Allowed: an integer in "
                                           "[1, 1000000].")
    assert table["hardware.mixed_precision"][0] == "auto"
    assert "one of sgd, adam, adamw" in table["optim.optimizer"][1]
    assert "a list of integers >= 1, or null" in table["model.stackwise_blocks"][1]
    assert "in [0, 0.99]" in table["model.dropout"][1]


def test_markdown_table_has_one_well_formed_row_per_key() -> None:
    lines = markdown_table().strip().splitlines()
    assert lines[0] == "| Key | Default | Description |"
    assert len(lines) == 2 + len(describe_keys())
    for line in lines[2:]:
        cells = re.split(r"(?<!\\)\|", line)
        assert len(cells) == 5, line  # pipes inside help texts are escaped
    assert "| `model.block_type` | `null` | basic \\| bottleneck" in markdown_table()


def test_schema_nullable_matches_annotations() -> None:
    for section, cls in SECTION_CLASSES.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            allows_none = type(None) in get_args(hints[f.name])
            assert allows_none == f.metadata["nullable"], f"{section}.{f.name}"


def test_weight_decay_help_says_what_keras_3_does() -> None:
    text = key_specs()["optim"]["weight_decay"].help
    assert "L2" not in text  # Keras 3 never adds a loss term, for any optimizer
    assert text.startswith("Decoupled weight decay, the same for sgd, adam and adamw")
    assert "lr * weight_decay * weight" in text
    assert "bypassing momentum and Adam's moments" in text


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_weight_decay_is_decoupled_as_the_help_says(optimizer: str) -> None:
    keras = pytest.importorskip("keras")
    from resnet_builder.training.setup import make_optimizer

    cfg = load_config(None, [f"optim.optimizer={optimizer}", "optim.weight_decay=0.1",
                             "optim.momentum=0.9"])
    opt = make_optimizer(cfg, 0.5, "off")
    kernel = keras.Variable([1.0, 1.0], name="kernel")
    bias = keras.Variable([1.0, 1.0], name="bias")
    for _ in range(3):  # zero gradients: an L2 term would go through momentum, this does not
        opt.apply_gradients([(keras.ops.zeros(2), kernel), (keras.ops.zeros(2), bias)])
    assert kernel.numpy() == pytest.approx([(1 - 0.5 * 0.1) ** 3] * 2)
    assert bias.numpy() == pytest.approx([1.0, 1.0])  # biases are not decayed


def test_only_deterministic_turns_on_op_determinism() -> None:
    hardware = key_specs()["hardware"]
    seed, deterministic = hardware["seed"].help, hardware["deterministic"].help
    for what in ("data order", "augmentation", "initial weights"):
        assert what in seed
    assert "does not turn on op determinism" in seed
    assert deterministic.startswith("Turn on TensorFlow's op determinism")
    assert "hardware.seed alone does not" in deterministic


# ----------------------------------------------------------------------------- model arguments


@pytest.mark.parametrize(("overrides", "expected", "source"), [
    (["model.depth=56", "data.image_size=16", "data.channels=1"],
     {"depth": 56, "bn_momentum": 0.99, "head": "gap", "dropout": 0.0,
      "input_shape": [16, 16, 1], "resize": "stretch", "crop_pct": 0.875, "task": "multiclass",
      "threshold": 0.5}, "depth"),
    (["model.preset=resnet18_v2", "model.num_classes=5", "model.stem_filters=32",
      "model.head=tutorial", "model.dropout=0.5", "data.resize=crop", "data.crop_pct=0.9"],
     {"preset": "resnet18_v2", "num_classes": 5, "stem_filters": 32, "bn_momentum": 0.99,
      "head": "tutorial", "dropout": 0.5, "input_shape": [32, 32, 3], "resize": "crop",
      "crop_pct": 0.9, "task": "multiclass", "threshold": 0.5}, "preset"),
    (["model.stackwise_filters=[16, 32]", "model.stackwise_blocks=[1, 2]",
      "model.stackwise_strides=[1, 2]", "model.block_type=basic", "model.bn_momentum=0.9",
      "model.depth=21"],
     {"stackwise_filters": [16, 32], "stackwise_blocks": [1, 2], "stackwise_strides": [1, 2],
      "block_type": "basic", "bn_momentum": 0.9, "head": "gap", "dropout": 0.0,
      "input_shape": [32, 32, 3], "resize": "stretch", "crop_pct": 0.875, "task": "multiclass",
      "threshold": 0.5}, "stackwise"),
])
def test_model_arguments_say_one_way_and_resolve(overrides: list[str], expected: dict,
                                                 source: str) -> None:
    from resnet_builder.model.architecture import resolve_architecture

    cfg = load_config(None, overrides)
    args = model_arguments(cfg)
    assert args == expected
    arch = resolve_architecture(**{k: v for k, v in args.items()
                                   if k not in ("num_classes", "head", "dropout", "resize",
                                                "crop_pct", "task", "threshold")})
    assert arch.source == source
    assert list(arch.input_shape) == expected["input_shape"]
    for value in args.values():
        if isinstance(value, list):
            value.append(0)  # the arguments are copies: changing them leaves the config alone
    assert model_arguments(cfg) == expected


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("name", ["cifar", "cifar100", "folder", "digits"])
def test_shipped_configs_load(name: str) -> None:
    assert isinstance(load_config(CONFIGS / f"{name}.yaml"), Config)


def test_cifar_is_the_he_et_al_recipe() -> None:
    cfg = load_config(CONFIGS / "cifar.yaml")
    assert (cfg.model.depth, cfg.model.block_type) == (164, "bottleneck")
    assert (cfg.data.source, cfg.data.batch_size, cfg.data.image_size) == ("cifar10", 128, 32)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 0.1, 0.9)
    assert cfg.optim.weight_decay == 1e-4
    s = cfg.schedule
    assert (s.type, s.milestones, s.unit, s.gamma) == ("step", [32000, 48000], "iterations", 0.1)
    assert (s.warmup, s.warmup_mode, s.warmup_lr) == (400, "constant", 0.01)
    assert cfg.train.epochs == 164
    assert abs(64000 * 128 / 50000 - cfg.train.epochs) < 0.5  # 64k iterations
    assert (cfg.augment.random_crop_padding, cfg.augment.horizontal_flip) == (4, True)
    assert cfg.data.normalize is True


def test_cifar100_differs_from_cifar_only_in_source_and_name() -> None:
    a = config_to_dict(load_config(CONFIGS / "cifar.yaml"))
    b = config_to_dict(load_config(CONFIGS / "cifar100.yaml"))
    assert b["data"].pop("source") == "cifar100"
    assert a["data"].pop("source") == "cifar10"
    a["run"].pop("name"), b["run"].pop("name")
    assert a == b


def test_folder_and_digits_configs() -> None:
    f = load_config(CONFIGS / "folder.yaml")
    assert (f.data.source, f.data.path, f.data.image_size) == ("folder", "data/my_images", 224)
    assert (f.model.preset, f.model.weights) == ("resnet50_v2_imagenet",) * 2
    assert f.model.freeze_backbone_epochs == 3
    assert (f.optim.optimizer, f.optim.lr, f.schedule.type) == ("adamw", 1e-3, "cosine")
    assert (f.schedule.warmup > 0, f.schedule.warmup_mode) == (True, "linear")
    assert (f.augment.horizontal_flip, f.augment.random_scale) == (True, 0.1)
    d = load_config(CONFIGS / "digits.yaml")
    assert (d.data.source, d.data.image_size, d.data.channels) == ("digits", 16, 1)
    assert (d.model.depth, d.model.block_type, d.data.batch_size) == (20, "basic", 64)
    assert (d.schedule.type, d.train.epochs, d.hardware.seed) == ("cosine", 15, 0)


def test_config_module_does_not_import_tensorflow() -> None:
    # As the `resnet-builder` command runs it: the package's eager model import is skipped.
    code = ("import sys; sys.argv[0] = 'resnet-builder'; "
            "import resnet_builder.config as c; c.load_config(None); "
            "c.default_config_yaml(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("setting", "message"), [
    ("hardware.steps_per_call=fast", "must be an integer >= 1 or auto, got 'fast'"),
    ("hardware.steps_per_call=0", "must be >= 1, got 0"),
    ("train.checkpoint_every=soon",
     "must be an integer >= 1 or a time such as '10min', '30s' or '1.5h', or null, got "
     "'soon'"),
    ("train.checkpoint_every=0min", "got '0min'"),
    ("train.checkpoint_every=0.0s", "got '0.0s'"),
    ("train.checkpoint_every=10 days", "got '10 days'"),
    ("data.cache=ram", "data.cache must be one of true, false, disk; got 'ram'"),
])
def test_keys_that_take_a_number_or_words(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [setting])


def test_number_or_words_keys_accept_both() -> None:
    cfg = load_config(None, ["hardware.steps_per_call=4", "train.checkpoint_every=10min",
                             "data.cache=disk", "run.log_every=5"])
    assert (cfg.hardware.steps_per_call, cfg.train.checkpoint_every) == (4, "10min")
    assert (cfg.data.cache, cfg.run.log_every) == ("disk", 5)
    assert load_config(None, ["train.checkpoint_every=200"]).train.checkpoint_every == 200
    for time_ in ("30s", "1.5h", "10 MIN", "0.5min"):
        assert load_config(None, [f"train.checkpoint_every={time_}"]).train.checkpoint_every \
            == time_
    assert load_config(None).hardware.steps_per_call == "auto"


# ----------------------------------------------------------------------------- mapping keys


def test_mapping_keys_fill_defaults_and_check_each_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "augment:\n  rand_augment: {num_ops: 3}\n"
                           "  random_resized_crop: {}\n")
    cfg = load_config(path)
    assert cfg.augment.rand_augment == {"num_ops": 3, "magnitude": 9.0}
    assert cfg.augment.random_resized_crop == {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]}
    err = error(write(tmp_path, "augment:\n  rand_augment: {num_op: 3}\n", "b.yaml"))
    assert err.message.endswith("'num_op' is not an entry of augment.rand_augment; "
                                "did you mean 'num_ops'?")
    assert ":2:" in err.message
    assert "num_ops: an integer in [1, 10] (default 2)" in err.hint
    err = error(None, ["augment.rand_augment={magnitude: 11}"])
    assert "augment.rand_augment.magnitude must be in [0, 10], got 11" in err.message
    err = error(None, ["augment.random_resized_crop={scale: [0.1]}"])
    assert "augment.random_resized_crop.scale must have 2 items, got 1" in err.message
    err = error(None, ["augment.random_resized_crop={ratio: [2.0, 1.0]}"])
    assert "ratio must be [low, high]" in err.message
    err = error(None, ["augment.rand_augment=3"])
    assert "must be a mapping, got 3 (an integer)" in err.message


def test_class_weight_takes_balanced_or_a_mapping_of_weights() -> None:
    assert load_config(None, ["data.class_weight=balanced"]).data.class_weight == "balanced"
    got = load_config(None, ["data.class_weight={cat: 2, dog: 0.5}"]).data.class_weight
    assert got == {"cat": 2.0, "dog": 0.5}
    err = error(None, ["data.class_weight=balance"])
    assert "must be balanced or a mapping {name: a number >= 0}" in err.message
    assert "did you mean 'balanced'?" in err.message
    err = error(None, ["data.class_weight={cat: -1}"])
    assert "data.class_weight.cat must be >= 0, got -1" in err.message


def test_list_keys_with_a_length_and_resize_choices() -> None:
    cfg = load_config(None, ["augment.color_jitter=[0.2, 0.2, 0.1, 0]", "data.resize=pad"])
    assert cfg.augment.color_jitter == [0.2, 0.2, 0.1, 0.0] and cfg.data.resize == "pad"
    err = error(None, ["augment.color_jitter=[0.2, 0.2]"])
    assert "augment.color_jitter must have 4 items, got 2" in err.message
    err = error(None, ["data.resize=squash"])
    assert "data.resize must be one of stretch, crop, pad" in err.message
    shown = re.sub(r"\n\s*# ", " ", default_config_yaml())  # comments unwrapped
    assert "rand_augment: null" in shown and "[balanced or a mapping {name:" in shown


def test_readme_key_table_is_the_generated_one() -> None:
    """README's "All keys" table is markdown_table() verbatim (regenerate it when keys change)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, ("README.md's key table is stale: paste the output of "
                                        "python -c \"from resnet_builder.config import "
                                        "markdown_table; print(markdown_table())\"")


@pytest.mark.parametrize("name", ["a/b", "..", ".", "c:\\\\runs"])
def test_run_name_is_one_folder_name(name: str) -> None:
    err = error(None, [f"run.name={name}"])
    assert "is not a folder name" in err.message and "run.project" in err.hint
    assert load_config(None, ["run.name=cifar-56"]).run.name == "cifar-56"


# ----------------------------------------------------------------------------- review, stop 33


@pytest.mark.parametrize("overrides, said, hint", [
    (["model.preset=resnet_nope"], "--set model.preset=resnet_nope: Unknown preset 'resnet_nope'",
     "resnet-builder presets"),
    (["model.preset=resnet50_v2", "data.image_size=16"],
     "--set data.image_size=16: `input_shape` (16, 16, 3) is too small", "raise data.image_size"),
    (["model.stackwise_filters=[8, 8, 8, 8, 8, 8]", "model.stackwise_blocks=[1, 1, 1, 1, 1, 1]",
      "model.stackwise_strides=[2, 2, 2, 2, 2, 2]", "data.image_size=64"],
     "downsamples by 256", "raise data.image_size"),
    (["model.weights=resnet18_v2"],
     "--set model.weights=resnet18_v2: model.weights 'resnet18_v2' is a preset without "
     "pretrained weights", "resnet50_v2_imagenet"),
])
def test_a_network_that_cannot_be_built_is_a_config_error(overrides, said, hint):
    err = error(None, overrides)
    assert said in err.message and hint in err.hint


def test_what_config_prints_loads_back_as_the_same_config(tmp_path: Path) -> None:
    for override in ("run.name=0801", "run.name=1e5", "data.class_weight={'0801': 2}",
                     "data.path=/data/set #1", "run.name=yes"):
        cfg = load_config(None, [override])
        again = load_config(write(tmp_path, config_yaml(cfg)))
        assert config_to_dict(again) == config_to_dict(cfg), override
    assert load_config(None, ["data.class_weight={'0801': 2}"]).data.class_weight == {"0801": 2}
    path = tmp_path / "saved.yaml"  # a run's config.yaml (read again by a resume)
    dump_config(load_config(None, ["data.class_weight={'0801': 2}"]), path)
    assert load_config(path).data.class_weight == {"0801": 2}


def test_tilde_in_run_project_is_the_home_folder(tmp_path: Path) -> None:
    home = os.path.expanduser("~")
    assert load_config(write(tmp_path, "run:\n  project: ~/runs\n")).run.project == \
        os.path.join(home, "runs")
    assert load_config(None, ["run.project=~"]).run.project == home


@pytest.mark.parametrize("text, said, hint", [
    ("data:\n  cache: \"true\"\n", "got 'true'; write true without quotes", None),
    ("data:\n  cache: dsk\n", "did you mean 'disk'?", None),
    ("run:\n  name: 1e5\n", "run.name must be a string", "put it in quotes to give it as text"),
    ("run:\n  name: 2024\n", "run.name must be a string", "put it in quotes to give it as text"),
    ("optim:\n  lr: inf\n", "optim.lr must be a number", "optim.lr takes"),
    ("run:\n  loggers: csv\n", "run.loggers must be a list of strings",
     "a list, each one of csv, tensorboard"),
])
def test_hints_fit_the_mistake(tmp_path: Path, text: str, said: str, hint: str | None) -> None:
    err = error(write(tmp_path, text))
    assert said in err.message
    assert "without the decimal point" not in err.hint and "remove the quotes" not in err.hint
    if hint:
        assert hint in err.hint


def test_a_key_given_by_a_yaml_merge_and_written_is_not_given_twice(tmp_path: Path) -> None:
    """Constructing the document merged the << keys into the tree before the key lines
    were read, so a key written once was 'given twice'; the written one wins, as in YAML."""
    cfg = load_config(write(tmp_path, "model:\n  <<: {depth: 8, block_type: basic}\n"
                                      "  depth: 14\n"))
    assert (cfg.model.depth, cfg.model.block_type) == (14, "basic")
