"""``ResNetV2Backbone``: keras-cv 0.9.0's API and weights layout, any depth.

The backbone is a functional ``keras.Model`` subclass whose ``get_config``
lists exactly its constructor arguments (the keras-hub pattern), registered
as ``resnet_builder>ResNetV2Backbone`` so ``keras.models.load_model`` needs no
``custom_objects``. Its graph is made from a ``Plan`` (``backbone_plan``),
which can also be inspected without building anything.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import textwrap
from collections.abc import Callable, Sequence

import keras

from resnet_builder.depth import BOTTLENECK, normalize_block_type
from resnet_builder.errors import ArgumentError
from resnet_builder.model.architecture import backbone_plan, input_range
from resnet_builder.model.plan import Op, Plan
from resnet_builder.model.presets import (
    PRESETS,
    backbone_config,
    get_preset,
    presets_with_weights,
)
from resnet_builder.model.weights import load_preset_weights

KERAS_LAYERS = {  # an Op's kind -> its Keras layer (backbone ops and the head's, head.py)
    "conv": keras.layers.Conv2D,
    "bn": keras.layers.BatchNormalization,
    "relu": keras.layers.Activation,
    "max_pool": keras.layers.MaxPooling2D,
    "pad": keras.layers.ZeroPadding2D,
    "add": keras.layers.Add,
    "rescaling": keras.layers.Rescaling,
    "gap": keras.layers.GlobalAveragePooling2D,
    "dense": keras.layers.Dense,
    "dropout": keras.layers.Dropout,
}


def make_layer(op: Op) -> keras.layers.Layer:
    """The Keras layer for one planned op."""
    return KERAS_LAYERS[op.kind](name=op.name, **op.args)


def _listed(values: object) -> object:
    """An iterator as a list, read once (it was read by the checks, then saved empty); what
    is not a sequence of values is left for the checks to name."""
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not hasattr(values, "__iter__"):
        return values
    return list(values)


def _ints(values: Sequence[int]) -> list[int]:
    """Plain ints (the values were checked; NumPy's would not serialize)."""
    return [int(v) for v in values]


def with_trainable_flag(cls: type, config: dict) -> keras.Model:
    """``cls(**config)``, frozen afterwards when the config says so: passing
    ``trainable=True`` to a model's constructor sets every layer in it trainable, which
    undid a frozen backbone inside a saved classifier."""
    config = dict(config)
    trainable = config.pop("trainable", True)
    model = cls(**config)
    if not trainable:
        model.trainable = False
    return model


class CopiedTable:
    """A class attribute read as a deep copy of a table (keras-cv's ``presets``)."""

    def __init__(self, table: Callable[[], dict]) -> None:
        self.table = table

    def __get__(self, instance: object, owner: type) -> dict:
        return copy.deepcopy(self.table())


def _lists_presets(method: Callable) -> Callable:
    """Write the preset names into ``method``'s docstring from the table, as keras-cv does."""
    def names(found: list[str]) -> str:
        return textwrap.fill(", ".join(f'"{n}"' for n in found), width=72,
                             subsequent_indent=" " * 16)

    method.__doc__ = method.__doc__.format(names=names(list(PRESETS)),
                                           with_weights=names(presets_with_weights()))
    return method


def apply_plan(plan: Plan, inputs: keras.KerasTensor) -> dict[str, keras.KerasTensor]:
    """Call a layer for each op in order; returns every op's output tensor by name."""
    tensors = {plan.input_name: inputs}
    for op in plan.ops:
        args = [tensors[name] for name in op.inputs]
        tensors[op.name] = make_layer(op)(args if op.kind == "add" else args[0])
    return tensors


@keras.saving.register_keras_serializable(package="resnet_builder")
class ResNetV2Backbone(keras.Model):
    """Pre-activation ResNet (He et al. 2016) feature extractor, keras-cv compatible.

    Arguments as keras-cv 0.9.0's ``ResNetV2Backbone`` (``block_type`` also
    takes ``basic``/``bottleneck``), plus five of our own, whose defaults give
    keras-cv's network: ``stem`` ("imagenet" 7x7/2 conv + 3x3/2 max-pool, or
    "cifar" 3x3/1 conv), ``stem_filters`` (64), ``stride_position`` ("last"
    unit of a stack strides, as keras-cv; "first", as He et al.),
    ``bn_momentum`` (0.99; 0.9 adapts faster on small datasets), ``padding``
    ("same", as keras-cv; "symmetric": explicit zeros before strided convolutions
    and the stem's pool, as keras.applications, whose ImageNet weights need it) and
    ``rescale_to`` (the range ``include_rescaling`` maps 0..255 to: (0, 1) as
    keras-cv; (-1, 1) is keras.applications' ResNetV2 ``preprocess_input``).
    """

    def __init__(
        self,
        stackwise_filters: Sequence[int],
        stackwise_blocks: Sequence[int],
        stackwise_strides: Sequence[int],
        include_rescaling: bool,
        stackwise_dilations: Sequence[int] | None = None,
        input_shape: Sequence[int | None] = (None, None, 3),
        input_tensor: keras.KerasTensor | None = None,
        block_type: str = BOTTLENECK,
        stem: str = "imagenet",
        stem_filters: int = 64,
        stride_position: str = "last",
        bn_momentum: float = 0.99,
        padding: str = "same",
        rescale_to: Sequence[float] = (0.0, 1.0),
        **kwargs,
    ) -> None:
        check_keywords(kwargs, ResNetV2Backbone)
        stackwise_filters, stackwise_blocks, stackwise_strides, stackwise_dilations = map(
            _listed, (stackwise_filters, stackwise_blocks, stackwise_strides,
                      stackwise_dilations))
        arch = dict(  # checked by backbone_plan below
            stackwise_filters=stackwise_filters, stackwise_blocks=stackwise_blocks,
            stackwise_strides=stackwise_strides, include_rescaling=bool(include_rescaling),
            stackwise_dilations=stackwise_dilations, block_type=block_type, stem=stem,
            stem_filters=stem_filters, stride_position=stride_position,
            bn_momentum=bn_momentum, padding=padding, rescale_to=rescale_to)
        if input_tensor is not None and not keras.backend.is_keras_tensor(input_tensor):
            input_tensor = keras.Input(tensor=input_tensor, shape=tuple(input_shape))
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        plan, pyramid = backbone_plan(input_shape=input_shape, **arch)
        inputs = input_tensor if input_tensor is not None else keras.Input(shape=plan.input_shape)
        tensors = apply_plan(plan, inputs)
        super().__init__(inputs=inputs, outputs=tensors[plan.output], **kwargs)

        self.plan = plan
        self.pyramid_level_inputs = pyramid
        self.stackwise_filters = _ints(stackwise_filters)
        self.stackwise_blocks = _ints(stackwise_blocks)
        self.stackwise_strides = _ints(stackwise_strides)
        self.include_rescaling = arch["include_rescaling"]
        self.stackwise_dilations = None if stackwise_dilations is None else _ints(
            stackwise_dilations)
        self.block_type = normalize_block_type(block_type)
        self.stem = stem
        self.stem_filters = int(stem_filters)
        self.stride_position = stride_position
        self.bn_momentum = float(bn_momentum)
        self.padding = padding
        self.rescale_to = list(input_range(rescale_to))  # checked by backbone_plan above
        self.input_tensor = input_tensor

    def get_config(self) -> dict:
        """Copies of the lists: editing a config must not change this model."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stackwise_filters": list(self.stackwise_filters),
            "stackwise_blocks": list(self.stackwise_blocks),
            "stackwise_strides": list(self.stackwise_strides),
            "include_rescaling": self.include_rescaling,
            "stackwise_dilations": None if self.stackwise_dilations is None
            else list(self.stackwise_dilations),
            "input_shape": list(self.plan.input_shape),
            "input_tensor": None,
            "block_type": self.block_type,
            "stem": self.stem,
            "stem_filters": self.stem_filters,
            "stride_position": self.stride_position,
            "bn_momentum": self.bn_momentum,
            "padding": self.padding,
            "rescale_to": list(self.rescale_to),
        }

    @classmethod
    def from_config(cls, config: dict) -> ResNetV2Backbone:
        return with_trainable_flag(cls, config)

    @classmethod
    @_lists_presets
    def from_preset(cls, preset: str, load_weights: bool | None = None,
                    weights_file: str | os.PathLike | None = None,
                    **kwargs) -> ResNetV2Backbone:
        """A preset's network, with its pretrained weights when it has them.

        Args:
            preset: string. Must be one of
                {names}.
                If looking for a preset with pretrained weights, choose one of
                {with_weights}.
            load_weights: whether to load the pretrained weights. ``None`` (the
                default) follows whether the preset has them, as keras-cv.
            weights_file: a local copy of the weights file; otherwise the Keras
                cache, otherwise a download, each checked against the MD5.
            **kwargs: constructor arguments that replace the preset's
                (``input_shape``, ``include_rescaling``, ...).

        Example::

            backbone = ResNetV2Backbone.from_preset("resnet50_v2_imagenet")
            untrained = ResNetV2Backbone.from_preset("resnet18_v2", input_shape=(64, 64, 3))
        """
        has_weights = "weights" in get_preset(preset)
        # Not cls(...): the ResNet{N}V2Backbone aliases route their __new__ through here.
        backbone = ResNetV2Backbone(**backbone_config(preset, **kwargs))
        if load_weights or (load_weights is None and has_weights):
            load_preset_weights(backbone, preset, weights_file)
        return backbone

    # name -> {"config", "params", "description", ["weights"]}: copies, as keras-cv's, so
    # editing one cannot change what from_preset builds later in the process.
    presets = CopiedTable(lambda: PRESETS)
    presets_with_weights = CopiedTable(
        lambda: {name: entry for name, entry in PRESETS.items() if "weights" in entry})

    def pyramid_model(self) -> keras.Model:
        """A model mapping images to the P-level feature maps, for detection/segmentation."""
        outputs = {level: self.get_layer(name).output
                   for level, name in self.pyramid_level_inputs.items()}
        return keras.Model(self.input, outputs, name=f"{self.name}_pyramid")


# what keras.Model and Keras' loader pass on; any other keyword is a misspelling that
# keras.Model would drop in silence (keras-cv's does: `input_shap=` built an any-size model)
_MODEL_KEYWORDS = ("name", "trainable", "dtype")


def check_keywords(kwargs: dict, owner: Callable,
                   extra: Sequence[str] = _MODEL_KEYWORDS) -> None:
    """Refuse a keyword that neither ``owner``'s signature (a class: its ``__init__``) nor
    ``extra`` names, with the closest known name: keras.Model drops a misspelling in silence,
    and Python's TypeError for a function suggests nothing."""
    unknown = sorted(set(kwargs) - set(extra))
    if not unknown:
        return
    function = owner.__init__ if isinstance(owner, type) else owner
    known = [name for name, p in inspect.signature(function).parameters.items()
             if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    close = difflib.get_close_matches(unknown[0], [*known, *extra], n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise ArgumentError(f"{owner.__name__} got an unexpected keyword argument "
                        f"{unknown[0]!r}{guess}. Received: {unknown}")


def _alias(preset: str, layers: int) -> type:
    """keras-cv's ``ResNet{N}V2Backbone``: the preset's backbone, same defaults."""

    def __new__(cls, include_rescaling: bool = True, input_shape=(None, None, 3),
                input_tensor=None, **kwargs):
        return ResNetV2Backbone.from_preset(preset, include_rescaling=include_rescaling,
                                            input_shape=input_shape, input_tensor=input_tensor,
                                            **kwargs)

    doc = f"ResNetV2Backbone with {layers} layers (preset {preset!r}), as keras-cv's alias."
    return type(f"ResNet{layers}V2Backbone", (ResNetV2Backbone,),
                {"__new__": __new__, "__doc__": doc, "__module__": __name__})


ResNet18V2Backbone = _alias("resnet18_v2", 18)
ResNet34V2Backbone = _alias("resnet34_v2", 34)
ResNet50V2Backbone = _alias("resnet50_v2", 50)
ResNet101V2Backbone = _alias("resnet101_v2", 101)
ResNet152V2Backbone = _alias("resnet152_v2", 152)
