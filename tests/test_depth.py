"""Depth rules: 9n+2 bottleneck, 6n+2 basic, defaults, nearest valid depths."""

import pytest

from resnet_builder.depth import (
    BASIC,
    BLOCK_TYPE_ALIASES,
    BOTTLENECK,
    SHORT_NAMES,
    nearest_valid,
    normalize_block_type,
    resolve_depth,
    valid_depths,
)
from resnet_builder.errors import ArgumentError


@pytest.mark.parametrize(
    ("depth", "block_type", "n", "also"),
    [
        (164, BOTTLENECK, 18, BASIC),  # 162 = 9*18 = 6*27: fits both, bottleneck by default
        (1001, BOTTLENECK, 111, None),
        (110, BOTTLENECK, 12, BASIC),  # 108 = 9*12 = 6*18
        (56, BOTTLENECK, 6, BASIC),
        (32, BASIC, 5, None),
        (44, BASIC, 7, None),
        (11, BOTTLENECK, 1, None),
        (8, BASIC, 1, None),
    ],
)
def test_default_rule(depth, block_type, n, also):
    rule = resolve_depth(depth)
    assert (rule.block_type, rule.n, rule.also_fits) == (block_type, n, also)


@pytest.mark.parametrize("alias", ["basic", "basic_block", "BASIC"])
def test_basic_block_type_chosen_explicitly(alias):
    rule = resolve_depth(110, alias)
    assert (rule.block_type, rule.n) == (BASIC, 18)
    assert resolve_depth("56", "bottleneck").n == 6


def test_block_type_aliases():
    assert normalize_block_type("bottleneck") == normalize_block_type("block") == BOTTLENECK
    assert normalize_block_type("basic") == BASIC
    with pytest.raises(ValueError, match="block_type='resnext'"):
        normalize_block_type("resnext")


def test_block_type_spellings_have_one_table():
    """Every spelling the CLI and config accept, and the short name each type is offered as."""
    assert list(BLOCK_TYPE_ALIASES) == ["basic", "bottleneck", "basic_block", "block"]
    assert all(normalize_block_type(alias) == name for alias, name in BLOCK_TYPE_ALIASES.items())
    assert SHORT_NAMES == {BASIC: "basic", BOTTLENECK: "bottleneck"}
    with pytest.raises(ArgumentError) as err:  # a ValueError the CLI knows is ours: exit 2
        normalize_block_type("wide")
    assert "'basic_block' (alias 'basic') or 'block' (alias 'bottleneck')" in str(err.value)


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (57, ["9n+2", "6n+2", "nearest: 56 and 65", "nearest: 56 and 62"]),
        (1, ["smallest: 11", "smallest: 8"]),
        (0, ["smallest: 11", "smallest: 8"]),
        (-5, ["smallest: 11", "smallest: 8"]),
        ("abc", ["'abc'", "9n+2", "6n+2"]),
        (2, ["smallest: 11", "smallest: 8"]),
    ],
)
def test_invalid_depth_names_both_rules_and_neighbours(depth, expected):
    with pytest.raises(ValueError) as err:
        resolve_depth(depth)
    for text in expected:
        assert text in str(err.value)


def test_depth_not_fitting_the_requested_block_type():
    with pytest.raises(ValueError, match=r"6n\+2 \(basic units\): nearest: 32 and 38"):
        resolve_depth(35, "basic")
    with pytest.raises(ValueError, match=r"9n\+2") as err:
        resolve_depth(32, "bottleneck")
    assert "32 fits 6n+2 (basic units): ask for block type basic" in str(err.value)
    with pytest.raises(ValueError) as err:  # 35 fits neither: no such line
        resolve_depth(35, "basic")
    assert "fits" not in str(err.value)


def test_nearest_valid():
    assert nearest_valid(57, BOTTLENECK) == (56, 65)
    assert nearest_valid(12, BOTTLENECK) == (11, 20)
    assert nearest_valid(11, BOTTLENECK) == (None, 11)


def test_valid_depths_lists_both_rules():
    rows = valid_depths(60)
    assert [(r.depth, r.block_type) for r in rows][:4] == [
        (8, BASIC), (11, BOTTLENECK), (14, BASIC), (20, BOTTLENECK)]
    assert all((r.depth - 2) % (9 if r.block_type == BOTTLENECK else 6) == 0 for r in rows)
    assert {r.depth for r in valid_depths(60, "basic")} == {8, 14, 20, 26, 32, 38, 44, 50, 56}


def test_a_depth_past_the_papers_is_refused_before_anything_is_built():
    """A typo such as 1000000001 grew in memory until killed."""
    assert resolve_depth(1001).n == 111
    with pytest.raises(ValueError, match="deeper than the 2,000 layers"):
        resolve_depth(1000000001)
