"""What to build, in plain Python: checked arguments in, a ``Plan`` out.

``backbone_plan`` validates keras-cv's arguments (and ours) before anything is
built, and ``resolve_architecture`` turns the three ways of saying what to
build (a depth, a preset, stackwise lists) into backbone arguments. Nothing
here imports Keras, so the CLI answers ``depths``, ``presets`` and most of
``build`` without loading TensorFlow.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from resnet_builder.depth import (
    BOTTLENECK,
    MAX_DEPTH,
    DepthRule,
    normalize_block_type,
    resolve_depth,
)
from resnet_builder.errors import ArgumentError
from resnet_builder.model import blocks
from resnet_builder.model.head import HEADS
from resnet_builder.model.plan import Plan
from resnet_builder.model.presets import backbone_config, cifar_backbone

# How an image becomes the model's square input (data/resizing.py does it; stored in the
# classifier so every command resizes as training did).
RESIZE_MODES = ("stretch", "crop", "pad")
# multiclass: one label per image (softmax); multilabel: any number (sigmoid per class).
TASKS = ("multiclass", "multilabel")


def _is_integer(value: object) -> bool:
    """An integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: object) -> float:
    """A real number as a float (NumPy's too); NaN for anything else, so range checks fail."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _int_list(name: str, values: object, *, minimum: int) -> list[int]:
    """A list of integers >= minimum; NumPy integers and arrays count (``np.int64`` is
    ``numbers.Integral``), a string does not (it would be split into characters), nor a set
    (no order)."""
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not isinstance(values, Iterable):
        raise ArgumentError(f"`{name}` must be a list of integers. Received: {name}={values!r}")
    values = list(values)
    out = []
    for v in values:
        if not _is_integer(v) or v < minimum:
            raise ArgumentError(
                f"`{name}` must hold integers >= {minimum}. Received: {name}={list(values)!r}"
            )
        out.append(int(v))
    if not out:
        raise ArgumentError(f"`{name}` must not be empty. Received: {name}={list(values)!r}")
    return out


def _check_input_shape(input_shape: object) -> tuple[int | None, int | None, int]:
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ArgumentError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        ) from None
    if len(shape) != 3 or shape[2] is None or any(d is not None and d < 1 for d in shape):
        raise ArgumentError(
            "`input_shape` must be (height, width, channels) with positive sizes and a known "
            f"channel count. Received: input_shape={input_shape!r}"
        )
    return shape


def _stackwise_lists(filters, n_blocks, strides, dilations) -> list[list[int]]:
    """The four stackwise lists, checked; dilations default to 1 per stack."""
    lists = [_int_list("stackwise_filters", filters, minimum=1),
             _int_list("stackwise_blocks", n_blocks, minimum=1),
             _int_list("stackwise_strides", strides, minimum=1)]
    lists.append([1] * len(lists[0]) if dilations is None
                 else _int_list("stackwise_dilations", dilations, minimum=1))
    lengths = dict(zip(("stackwise_filters", "stackwise_blocks", "stackwise_strides",
                        "stackwise_dilations"), map(len, lists), strict=True))
    if len(set(lengths.values())) != 1:
        raise ArgumentError(f"The stackwise lists must have the same length. Received lengths: "
                            f"{lengths}")
    return lists


def _check_options(stem: str, stride_position: str, stem_filters: int,
                   bn_momentum: float, padding: str) -> None:
    if stem not in blocks.STEMS:
        raise ArgumentError(f"`stem` must be one of {sorted(blocks.STEMS)}. "
                            f"Received: stem={stem!r}")
    if stride_position not in blocks.STRIDE_POSITIONS:
        raise ArgumentError(f"`stride_position` must be one of {blocks.STRIDE_POSITIONS}. "
                            f"Received: stride_position={stride_position!r}")
    if padding not in blocks.PADDINGS:
        raise ArgumentError(f"`padding` must be one of {blocks.PADDINGS}. "
                            f"Received: padding={padding!r}")
    _check_stem_filters(stem_filters)
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, numbers.Real) or not (
            0.0 <= bn_momentum < 1.0):
        raise ArgumentError(f"`bn_momentum` must be in [0, 1). "
                            f"Received: bn_momentum={bn_momentum!r}")


def _check_stem_filters(stem_filters: object) -> None:
    if not _is_integer(stem_filters) or stem_filters < 1:
        raise ArgumentError(f"`stem_filters` must be a positive integer. "
                            f"Received: stem_filters={stem_filters!r}")


def input_range(rescale_to: object) -> tuple[float, float]:
    """``rescale_to``: the (low, high) that ``include_rescaling`` maps pixels 0..255 to."""
    try:
        low, high = (float(v) for v in rescale_to)
    except (TypeError, ValueError):
        low = high = 0.0
    if not low < high:
        raise ArgumentError("`rescale_to` must be two numbers (low, high), low < high, e.g. "
                            f"(0, 1) or (-1, 1). Received: rescale_to={rescale_to!r}")
    return low, high


def _check_depth(n_blocks: list[int], block_type: str) -> None:
    """Stages as deep as ``depth`` allows (``MAX_DEPTH``): --blocks 100000000,1 grew in
    memory until killed, as a depth of 1000000001 did."""
    layers = 2 + sum(n_blocks) * (3 if block_type == BOTTLENECK else 2)
    if layers > MAX_DEPTH:
        raise ArgumentError(f"stackwise_blocks={n_blocks} make {layers:,} layers, deeper than "
                            f"the {MAX_DEPTH:,} resnet-builder builds (He et al. trained up to "
                            f"1,202). Received: stackwise_blocks={n_blocks}")


def _check_size(shape: tuple, stem: str, strides: list[int], dilations: list[int],
                n_blocks: list[int], stride_position: str) -> None:
    """The input must survive the backbone's total downsampling. A dilated stack does not
    downsample when its last unit strides (keras-cv's layout: that unit is dilated, which
    cancels the stride); the first unit is never dilated, so it still halves the size when
    it strides: in He et al.'s layout, and in a one-unit stack, whose unit is both."""
    _, stem_stride, pooled, _ = blocks.STEMS[stem]
    total = stem_stride * (2 if pooled else 1) * math.prod(
        s for s, d, n in zip(strides, dilations, n_blocks, strict=True)
        if d == 1 or stride_position == "first" or n == 1)
    for size in shape[:2]:
        if size is not None and size < total:
            raise ArgumentError(
                f"`input_shape` {shape} is too small: this backbone downsamples by {total}, so "
                f"height and width must be at least {total}. Received: input_shape={shape}"
            )


def backbone_plan(
    *,
    stackwise_filters: Sequence[int],
    stackwise_blocks: Sequence[int],
    stackwise_strides: Sequence[int],
    include_rescaling: bool,
    stackwise_dilations: Sequence[int] | None = None,
    input_shape: Sequence[int | None] = (None, None, 3),
    block_type: str = BOTTLENECK,
    stem: str = "imagenet",
    stem_filters: int = 64,
    stride_position: str = "last",
    bn_momentum: float = 0.99,
    padding: str = "same",
    rescale_to: Sequence[float] = (0.0, 1.0),
) -> tuple[Plan, dict[str, str]]:
    """Check every argument, then describe the network; no Keras objects are made.

    Returns the plan and the pyramid levels (``{"P2": layer name, ...}``).
    Raises ``ArgumentError`` (a ``ValueError``) naming the argument and the
    value received.
    """
    filters, n_blocks, strides, dilations = _stackwise_lists(
        stackwise_filters, stackwise_blocks, stackwise_strides, stackwise_dilations)
    block_type = normalize_block_type(block_type)
    _check_depth(n_blocks, block_type)
    _check_options(stem, stride_position, stem_filters, bn_momentum, padding)
    shape = _check_input_shape(input_shape)
    _check_size(shape, stem, strides, dilations, n_blocks, stride_position)
    low, high = input_range(rescale_to)

    plan = Plan(shape, bn_momentum=float(bn_momentum))
    x = plan.input_name
    if include_rescaling:
        x = plan.rescaling(x, (high - low) / 255.0, offset=low, name="rescaling")
    x = blocks.stem(plan, x, stem, stem_filters, padding)
    level = blocks.STEMS[stem][3]
    pyramid = {}
    for i, (f, b, s, d) in enumerate(zip(filters, n_blocks, strides, dilations, strict=True)):
        x = blocks.stack(plan, x, f, b, stride=s, dilation=d, block_type=block_type,
                         stack_index=i, stride_position=stride_position, padding=padding)
        pyramid[f"P{level + i}"] = x
    x = plan.bn(x, name="post_bn")
    plan.relu(x, name="post_relu")
    return plan, pyramid


# keras-cv's layout around the stacks: its constructor's defaults, which presets and
# stackwise lists build on.
IMAGENET_LAYOUT = {"stackwise_dilations": None, "stem": "imagenet", "stem_filters": 64,
                   "stride_position": "last", "padding": "same", "rescale_to": [0.0, 1.0]}


@dataclass(frozen=True)
class Architecture:
    """A resolved request: backbone arguments plus how they were arrived at."""

    source: str  # "depth" | "preset" | "stackwise"
    backbone: dict[str, Any]
    input_shape: tuple[int | None, int | None, int]
    depth_rule: DepthRule | None = None
    preset: str | None = None

    def plan(self) -> tuple[Plan, dict[str, str]]:
        return backbone_plan(input_shape=self.input_shape, **self.backbone)


def resolve_architecture(
    depth: int | str | None = None,
    preset: str | None = None,
    block_type: str | None = None,
    *,
    stackwise_filters: Sequence[int] | None = None,
    stackwise_blocks: Sequence[int] | None = None,
    stackwise_strides: Sequence[int] | None = None,
    stackwise_dilations: Sequence[int] | None = None,
    stem_filters: int | None = None,
    input_shape: Sequence[int | None] | None = None,
    include_rescaling: bool | None = None,
    bn_momentum: float | None = None,
) -> Architecture:
    """Turn a depth, a preset or explicit stackwise lists into backbone arguments.

    Exactly one way must be used. A depth gives He et al.'s CIFAR network
    (widths w/2w/4w with ``w = stem_filters``, 16 by default; the tutorial's
    network is ``stem_filters=32``). Raises ``ArgumentError`` (a ``ValueError``)
    for bad requests.
    """
    stackwise = [stackwise_filters, stackwise_blocks, stackwise_strides]
    ways = [name for name, given in (("depth", depth is not None), ("preset", preset is not None),
                                     ("stackwise", any(v is not None for v in stackwise)))
            if given]
    if len(ways) != 1:
        raise ArgumentError("Say what to build in exactly one way: a depth, a preset, or "
                            f"stackwise_filters/blocks/strides. Received: {ways or 'none of them'}")
    shape = None if input_shape is None else tuple(input_shape)
    extra: dict[str, Any] = {}
    if include_rescaling is not None:
        extra["include_rescaling"] = bool(include_rescaling)
    if bn_momentum is not None:
        extra["bn_momentum"] = bn_momentum
    if stackwise_dilations is not None:  # with any way (the plan checks one per stage)
        extra["stackwise_dilations"] = list(stackwise_dilations)
    if stem_filters is not None:  # a depth multiplies it out into the stage widths
        _check_stem_filters(stem_filters)
    if ways == ["depth"]:
        rule = resolve_depth(depth, block_type)
        width = 16 if stem_filters is None else stem_filters
        backbone = {**IMAGENET_LAYOUT, **cifar_backbone(rule.depth, rule.block_type, width),
                    **extra}
        return Architecture("depth", backbone, shape or (32, 32, 3), depth_rule=rule)
    if stem_filters is not None:
        extra["stem_filters"] = stem_filters
    if ways == ["preset"]:
        if block_type is not None:
            extra["block_type"] = normalize_block_type(block_type)
        backbone = {**IMAGENET_LAYOUT, **backbone_config(preset, **extra)}
        default = (32, 32, 3) if backbone["stem"] == "cifar" else (224, 224, 3)
        return Architecture("preset", backbone, shape or default, preset=preset)
    backbone = {**_stackwise_backbone(stackwise_filters, stackwise_blocks, stackwise_strides,
                                      stackwise_dilations, block_type), **extra}
    return Architecture("stackwise", backbone, shape or (224, 224, 3))


def _stackwise_backbone(filters, n_blocks, strides, dilations, block_type) -> dict[str, Any]:
    """Backbone arguments from the user's stackwise lists, with keras-cv's ImageNet layout."""
    if filters is None or n_blocks is None or strides is None:
        raise ArgumentError("stackwise_filters, stackwise_blocks and stackwise_strides go "
                            f"together. Received: stackwise_filters={filters!r}, "
                            f"stackwise_blocks={n_blocks!r}, stackwise_strides={strides!r}")
    return {**IMAGENET_LAYOUT, "stackwise_filters": list(filters),
            "stackwise_blocks": list(n_blocks), "stackwise_strides": list(strides),
            "stackwise_dilations": None if dilations is None else list(dilations),
            "include_rescaling": False,
            "block_type": normalize_block_type(block_type or BOTTLENECK)}


def check_classifier_args(num_classes, head, dropout, mean, std, class_names,
                          channels: int, resize: str = "stretch",
                          crop_pct: float = 0.875, task: str = "multiclass",
                          threshold: float = 0.5) -> None:
    """Check the classifier's own arguments (shared by ``ResNetV2Classifier`` and the writer)."""
    if task not in TASKS:
        raise ArgumentError(f"`task` must be one of {TASKS}. Received: task={task!r}")
    if not 0.0 <= _real(threshold) <= 1.0:
        raise ArgumentError(f"`threshold` must be in [0, 1]. Received: threshold={threshold!r}")
    if resize not in RESIZE_MODES:
        raise ArgumentError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    if not 0.0 < _real(crop_pct) <= 1.0:
        raise ArgumentError(f"`crop_pct` must be in (0, 1]. Received: crop_pct={crop_pct!r}")
    if not _is_integer(num_classes) or num_classes < 1:
        raise ArgumentError(f"`num_classes` must be a positive integer. "
                            f"Received: num_classes={num_classes!r}")
    if task == "multiclass" and num_classes < 2:
        raise ArgumentError("a softmax over one class always outputs 1: a multiclass model "
                            "needs num_classes >= 2 (one yes/no label: task='multilabel'). "
                            f"Received: num_classes={num_classes!r}")
    if head not in HEADS:
        raise ArgumentError(f"`head` must be one of {HEADS}. Received: head={head!r}")
    if not 0.0 <= _real(dropout) < 1.0:
        raise ArgumentError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if class_names is not None and (isinstance(class_names, (str, bytes)) or not isinstance(
            class_names, Iterable)):  # a string would be split into one-letter classes
        raise ArgumentError(f"`class_names` must be a list of names. "
                            f"Received: class_names={class_names!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise ArgumentError(f"`class_names` must have num_classes={num_classes} names. "
                            f"Received {len(class_names)}: {list(class_names)!r}")
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ArgumentError(f"Normalize needs both mean and std. Received: mean={mean!r}, "
                                f"std={std!r}")
        check_normalize_args(mean, std)
        if len(mean) not in (1, channels):
            raise ArgumentError(f"Normalize needs one mean and std per input channel "
                                f"({channels}). Received: mean={list(mean)!r}, std={list(std)!r}")


def with_normalization(arch: Architecture, mean: object, std: object) -> Architecture:
    """The classifier's mean/std normalise raw pixels, so the backbone's rescaling gives way
    (it would divide the normalised values by 255 again): build_model and the writer."""
    if mean is None and std is None:
        return arch
    return replace(arch, backbone={**arch.backbone, "include_rescaling": False})


def check_one_rescaling(include_rescaling: bool | None, mean: object, std: object) -> None:
    """The classifier's mean/std normalise raw pixels; the backbone's rescaling after them
    would divide the normalised values by 255 again, so the two are never both on."""
    if include_rescaling and (mean is not None or std is not None):
        raise ArgumentError("mean/std already normalise the raw pixels, so "
                            "include_rescaling=True would rescale them a second time. "
                            "Pass one of the two.")


def check_normalize_args(mean: Sequence[float], std: Sequence[float]) -> None:
    """``Normalize``'s statistics: one positive std per mean."""
    for name, values in (("mean", mean), ("std", std)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable) or any(
                math.isnan(_real(v)) for v in values):
            raise ArgumentError(f"`{name}` must be a list of numbers, one per channel. "
                                f"Received: {name}={values!r}")
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ArgumentError(f"Normalize needs one positive std per mean. Received: "
                            f"mean={list(mean)!r}, std={list(std)!r}")
