"""What to build, in plain Python: checked arguments in, a ``Plan`` out.

``backbone_plan`` validates keras-cv's arguments (and ours) before anything is
built, and ``resolve_architecture`` turns the three ways of saying what to
build (a depth, a preset, stackwise lists) into backbone arguments. Nothing
here imports Keras, so the CLI answers ``depths``, ``presets`` and most of
``build`` without loading TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resnet_builder.depth import DepthRule, normalize_block_type, resolve_depth
from resnet_builder.model import blocks
from resnet_builder.model.plan import Plan


def _int_list(name: str, values: object, *, minimum: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"`{name}` must be a list of integers. Received: {name}={values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(
                f"`{name}` must hold integers >= {minimum}. Received: {name}={list(values)!r}"
            )
        out.append(int(v))
    if not out:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={list(values)!r}")
    return out


def _check_input_shape(input_shape: object) -> tuple[int | None, int | None, int]:
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        ) from None
    if len(shape) != 3 or shape[2] is None or any(d is not None and d < 1 for d in shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive sizes and a known "
            f"channel count. Received: input_shape={input_shape!r}"
        )
    return shape


def backbone_plan(
    *,
    stackwise_filters: Sequence[int],
    stackwise_blocks: Sequence[int],
    stackwise_strides: Sequence[int],
    include_rescaling: bool,
    stackwise_dilations: Sequence[int] | None = None,
    input_shape: Sequence[int | None] = (None, None, 3),
    block_type: str = "block",
    stem: str = "imagenet",
    stem_filters: int = 64,
    stride_position: str = "last",
    bn_momentum: float = 0.99,
) -> tuple[Plan, dict[str, str]]:
    """Check every argument, then describe the network; no Keras objects are made.

    Returns the plan and the pyramid levels (``{"P2": layer name, ...}``).
    Raises ``ValueError`` naming the argument and the value received.
    """
    filters = _int_list("stackwise_filters", stackwise_filters, minimum=1)
    n_blocks = _int_list("stackwise_blocks", stackwise_blocks, minimum=1)
    strides = _int_list("stackwise_strides", stackwise_strides, minimum=1)
    dilations = (
        [1] * len(filters) if stackwise_dilations is None
        else _int_list("stackwise_dilations", stackwise_dilations, minimum=1)
    )
    lengths = {"stackwise_filters": len(filters), "stackwise_blocks": len(n_blocks),
               "stackwise_strides": len(strides), "stackwise_dilations": len(dilations)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"The stackwise lists must have the same length. Received lengths: "
                         f"{lengths}")
    block_type = normalize_block_type(block_type)
    if stem not in blocks.STEMS:
        raise ValueError(f"`stem` must be one of {sorted(blocks.STEMS)}. Received: stem={stem!r}")
    if stride_position not in blocks.STRIDE_POSITIONS:
        raise ValueError(f"`stride_position` must be one of {blocks.STRIDE_POSITIONS}. "
                         f"Received: stride_position={stride_position!r}")
    if isinstance(stem_filters, bool) or not isinstance(stem_filters, int) or stem_filters < 1:
        raise ValueError(f"`stem_filters` must be a positive integer. "
                         f"Received: stem_filters={stem_filters!r}")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not (
            0.0 <= bn_momentum < 1.0):
        raise ValueError(f"`bn_momentum` must be in [0, 1). Received: bn_momentum={bn_momentum!r}")
    shape = _check_input_shape(input_shape)
    _, stem_stride, pooled, level = blocks.STEMS[stem]
    total = stem_stride * (2 if pooled else 1) * math.prod(
        s for s, d in zip(strides, dilations, strict=True) if d == 1)
    for size in shape[:2]:
        if size is not None and size < total:
            raise ValueError(
                f"`input_shape` {shape} is too small: this backbone downsamples by {total}, so "
                f"height and width must be at least {total}. Received: input_shape={shape}"
            )

    plan = Plan(shape, bn_momentum=float(bn_momentum))
    x = plan.input_name
    if include_rescaling:
        x = plan.rescaling(x, 1 / 255.0, name="rescaling")
    x = blocks.stem(plan, x, stem, stem_filters)
    pyramid = {}
    for i, (f, b, s, d) in enumerate(zip(filters, n_blocks, strides, dilations, strict=True)):
        x = blocks.stack(plan, x, f, b, stride=s, dilation=d, block_type=block_type,
                         stack_index=i, stride_position=stride_position)
        pyramid[f"P{level + i}"] = x
    x = plan.bn(x, name="post_bn")
    plan.relu(x, name="post_relu")
    return plan, pyramid


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
    network is ``stem_filters=32``). Raises ``ValueError`` for bad requests.
    """
    stackwise = [stackwise_filters, stackwise_blocks, stackwise_strides]
    ways = [name for name, given in (("depth", depth is not None), ("preset", preset is not None),
                                     ("stackwise", any(v is not None for v in stackwise)))
            if given]
    if len(ways) != 1:
        raise ValueError("Say what to build in exactly one way: a depth, a preset, or "
                         f"stackwise_filters/blocks/strides. Received: {ways or 'none of them'}")
    shape = None if input_shape is None else tuple(input_shape)
    extra: dict[str, Any] = {}
    if include_rescaling is not None:
        extra["include_rescaling"] = bool(include_rescaling)
    if bn_momentum is not None:
        extra["bn_momentum"] = bn_momentum
    if ways == ["depth"]:
        rule = resolve_depth(depth, block_type)
        width = 16 if stem_filters is None else stem_filters
        backbone = {
            "stackwise_filters": [width, 2 * width, 4 * width],
            "stackwise_blocks": [rule.n] * 3,
            "stackwise_strides": [1, 2, 2],
            "stackwise_dilations": None,
            "include_rescaling": False,
            "block_type": rule.block_type,
            "stem": "cifar",
            "stem_filters": width,
            "stride_position": "first",
            **extra,
        }
        return Architecture("depth", backbone, shape or (32, 32, 3), depth_rule=rule)
    if ways == ["preset"]:
        from resnet_builder.model.presets import backbone_config

        overrides = dict(extra)
        if block_type is not None:
            overrides["block_type"] = normalize_block_type(block_type)
        if stem_filters is not None:
            overrides["stem_filters"] = stem_filters
        backbone = {"stackwise_dilations": None, "stem": "imagenet", "stem_filters": 64,
                    "stride_position": "last", **backbone_config(preset, **overrides)}
        default = (32, 32, 3) if backbone["stem"] == "cifar" else (224, 224, 3)
        return Architecture("preset", backbone, shape or default, preset=preset)
    if any(v is None for v in stackwise):
        raise ValueError("stackwise_filters, stackwise_blocks and stackwise_strides go together. "
                         f"Received: stackwise_filters={stackwise_filters!r}, "
                         f"stackwise_blocks={stackwise_blocks!r}, "
                         f"stackwise_strides={stackwise_strides!r}")
    backbone = {
        "stackwise_filters": list(stackwise_filters),
        "stackwise_blocks": list(stackwise_blocks),
        "stackwise_strides": list(stackwise_strides),
        "stackwise_dilations": None if stackwise_dilations is None else list(stackwise_dilations),
        "include_rescaling": False,
        "block_type": normalize_block_type(block_type or "block"),
        "stem": "imagenet",
        "stem_filters": 64 if stem_filters is None else stem_filters,
        "stride_position": "last",
        **extra,
    }
    return Architecture("stackwise", backbone, shape or (224, 224, 3))


HEAD_WIDTH = 512  # the tutorial head's hidden Dense layer
HEADS = ("gap", "tutorial")


def check_classifier_args(num_classes, head, dropout, mean, std, class_names,
                           channels: int) -> None:
    """Check the classifier's own arguments (shared by ``ResNetV2Classifier`` and the writer)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer. "
                         f"Received: num_classes={num_classes!r}")
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"`class_names` must have num_classes={num_classes} names. "
                         f"Received {len(class_names)}: {list(class_names)!r}")
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError(f"Normalize needs both mean and std. Received: mean={mean!r}, "
                             f"std={std!r}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Normalize needs one positive std per mean. Received: "
                             f"mean={list(mean)!r}, std={list(std)!r}")
        if len(mean) not in (1, channels):
            raise ValueError(f"Normalize needs one mean and std per input channel "
                             f"({channels}). Received: mean={list(mean)!r}, std={list(std)!r}")


def head_layers(in_channels: int, num_classes: int, head: str) -> list[tuple[str, str, list]]:
    """The classifier head's weighted layers: (name, kind, [(weight, shape), ...]).

    Mirrors ``ResNetV2Classifier``'s head so counts and the fast ``.keras``
    writer need no Keras; a test checks the two agree.
    """
    layers: list[tuple[str, str, list]] = []
    if head == "tutorial":
        layers.append(("fc1", "dense", [("kernel", (in_channels, HEAD_WIDTH)),
                                        ("bias", (HEAD_WIDTH,))]))
        layers.append(("fc1_bn", "bn", [(w, (HEAD_WIDTH,)) for w in
                                        ("gamma", "beta", "moving_mean", "moving_variance")]))
        in_channels = HEAD_WIDTH
    layers.append(("predictions", "dense", [("kernel", (in_channels, num_classes)),
                                            ("bias", (num_classes,))]))
    return layers
