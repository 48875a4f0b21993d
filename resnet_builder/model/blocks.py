"""The pre-activation units, stacks and stems, written once into a ``Plan``.

Layer names and placement follow keras-cv 0.9.0's ResNetV2 (``v2_stack_{i}``,
``_block{j}``, ``_use_preactivation_bn`` ...), so weights and ``summary()``
match it. Two additions keep the paper's CIFAR networks in the same code:
``stride_position="first"`` (He et al. and timm stride the first unit of a
stage; keras-cv strides the last) and a ``"cifar"`` stem (3x3 conv, no pool).
A third, ``padding="symmetric"``, builds keras.applications' ResNetV2, whose
ImageNet weights the ``*_imagenet`` presets load: strided convolutions and the
stem's pool read explicit zero padding, equal on every side (TensorFlow's
"same" pads an even input only at the bottom and right, which shifts every
strided window by a pixel against the 1x1 shortcut beside it).
"""

from __future__ import annotations

from resnet_builder.depth import BASIC, BOTTLENECK
from resnet_builder.model.plan import Plan

STEMS = {
    # name: (kernel, stride, max-pool after it, pyramid level of its output)
    "imagenet": (7, 2, True, 2),
    "cifar": (3, 1, False, 0),
}
STRIDE_POSITIONS = ("last", "first")
PADDINGS = ("same", "symmetric")  # keras-cv's (TensorFlow's "same"); keras.applications'


def strided_conv(plan: Plan, x: str, filters: int, kernel: int, *, stride: int, padding: str,
                 name: str, dilation: int = 1, use_bias: bool = False) -> str:
    """A "same"-sized convolution; with ``padding="symmetric"`` and a stride, the zeros are
    an explicit ``{name}_pad`` layer and the convolution is "valid" (keras.applications)."""
    conv = name + "_conv"
    if padding == "same" or stride == 1 or kernel == 1:
        return plan.conv(x, filters, kernel, strides=stride, padding="same", dilation=dilation,
                         use_bias=use_bias, name=conv)
    x = plan.pad(x, dilation * (kernel - 1) // 2, name=name + "_pad")
    return plan.conv(x, filters, kernel, strides=stride, dilation=dilation, use_bias=use_bias,
                     name=conv)


def stem(plan: Plan, x: str, kind: str, filters: int, padding: str = "same") -> str:
    """keras-cv's 7x7/2 conv + 3x3/2 max-pool, or the CIFAR 3x3/1 conv."""
    kernel, stride, pool, _ = STEMS[kind]
    x = strided_conv(plan, x, filters, kernel, stride=stride, padding=padding, name="conv1",
                     use_bias=True)
    if pool and padding == "symmetric":  # zeros, as keras.applications pads before its pool
        x = plan.max_pool(plan.pad(x, 1, name="pool1_pad"), 3, strides=2, name="pool1_pool")
    elif pool:
        x = plan.max_pool(x, 3, strides=2, padding="same", name="pool1_pool")
    return x


def _preactivate(plan: Plan, x: str, name: str) -> str:
    x = plan.bn(x, name=f"{name}_use_preactivation_bn")
    return plan.relu(x, name=f"{name}_use_preactivation_relu")


# Below this many input channels a strided 1x1 projection subsamples first (a 1x1 max-pool
# with the stride: the same function, see _shortcut).
NARROW_PROJECTION = 16


def _shortcut(plan: Plan, x: str, pre: str, out_filters: int, stride: int, dilation: int,
              conv_shortcut: bool, name: str) -> str:
    """Projection from the pre-activated tensor, else identity or a 1x1 strided pool.

    A projection narrower than NARROW_PROJECTION input channels takes every stride-th
    pixel first (``_0_subsample``) and then a stride-1 conv: TensorFlow 2.21's oneDNN
    kernel for a strided 1x1 conv's input gradient corrupted memory with 4-12 input
    channels and an odd batch (glibc abort or segfault in 3 of 3 runs, AVX512; 16 and 24
    channels, even batches or TF_ENABLE_ONEDNN_OPTS=0 never did), and a run's last batch
    is often odd. A 1x1 window reads the same pixels either way; the weights are the same.
    """
    s = stride if dilation == 1 else 1
    if conv_shortcut:
        if s > 1 and plan.shape(pre)[2] < NARROW_PROJECTION:
            pre, s = plan.max_pool(pre, 1, strides=s, name=f"{name}_0_subsample"), 1
        return plan.conv(pre, out_filters, 1, strides=s, name=f"{name}_0_conv")
    if s > 1:
        return plan.max_pool(x, 1, strides=stride, name=f"{name}_0_max_pooling")
    return x


def basic_unit(plan: Plan, x: str, filters: int, *, stride: int = 1, dilation: int = 1,
               conv_shortcut: bool = False, name: str, kernel: int = 3,
               padding: str = "same") -> str:
    """BN-ReLU, then two 3x3 convs; the stride sits on the second (as in keras-cv)."""
    pre = _preactivate(plan, x, name)
    shortcut = _shortcut(plan, x, pre, filters, stride, dilation, conv_shortcut, name)
    s = stride if dilation == 1 else 1
    y = plan.conv(pre, filters, kernel, padding="same", use_bias=False, name=f"{name}_1_conv")
    y = plan.relu(plan.bn(y, name=f"{name}_1_bn"), name=f"{name}_1_relu")
    y = strided_conv(plan, y, filters, kernel, stride=s, padding=padding, dilation=dilation,
                     name=f"{name}_2")
    return plan.add(shortcut, y, name=f"{name}_out")


def bottleneck_unit(plan: Plan, x: str, filters: int, *, stride: int = 1, dilation: int = 1,
                    conv_shortcut: bool = False, name: str, kernel: int = 3,
                    padding: str = "same") -> str:
    """BN-ReLU, then 1x1 -> 3x3 (strided) -> 1x1 with 4x the filters."""
    pre = _preactivate(plan, x, name)
    shortcut = _shortcut(plan, x, pre, 4 * filters, stride, dilation, conv_shortcut, name)
    s = stride if dilation == 1 else 1
    y = plan.conv(pre, filters, 1, use_bias=False, name=f"{name}_1_conv")
    y = plan.relu(plan.bn(y, name=f"{name}_1_bn"), name=f"{name}_1_relu")
    y = strided_conv(plan, y, filters, kernel, stride=s, padding=padding, dilation=dilation,
                     name=f"{name}_2")
    y = plan.relu(plan.bn(y, name=f"{name}_2_bn"), name=f"{name}_2_relu")
    y = plan.conv(y, 4 * filters, 1, name=f"{name}_3_conv")
    return plan.add(shortcut, y, name=f"{name}_out")


UNITS = {BASIC: basic_unit, BOTTLENECK: bottleneck_unit}
EXPANSION = {BASIC: 1, BOTTLENECK: 4}


def stack(plan: Plan, x: str, filters: int, blocks: int, *, stride: int, dilation: int,
          block_type: str, stack_index: int, stride_position: str = "last",
          padding: str = "same") -> str:
    """``blocks`` units; only one unit strides, the first one may project.

    keras-cv's rule for the projection (bottleneck stacks, and every stack but
    the first) is kept, and widened to any unit whose input width differs, so
    a custom stem width never breaks the addition.
    """
    unit = UNITS[block_type]
    name = f"v2_stack_{stack_index}"
    in_channels = plan.shape(x)[2]
    first_shortcut = (block_type == BOTTLENECK or stack_index > 0
                      or in_channels != filters * EXPANSION[block_type])
    strided = 1 if stride_position == "first" else blocks
    for j in range(1, blocks + 1):
        x = unit(
            plan, x, filters,
            stride=stride if j == strided else 1,
            dilation=1 if j == 1 else dilation,
            conv_shortcut=first_shortcut and j == 1,
            name=f"{name}_block{j}",
            padding=padding,
        )
    return x
