"""``ResNetV2Classifier`` and ``build_model``: a backbone, a head and its own preprocessing.

The classifier keeps what a saved model needs to be used alone: per-channel
normalisation statistics (so ``predict`` applies exactly the training
preprocessing) and the class names, both in ``get_config``. It outputs class
probabilities in float32, also under mixed precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from resnet_builder.errors import ArgumentError
from resnet_builder.model.architecture import (
    Architecture,
    check_classifier_args,
    check_normalize_args,
    check_one_rescaling,
    resolve_architecture,
    with_normalization,
)
from resnet_builder.model.backbone import (
    ResNetV2Backbone,
    check_keywords,
    make_layer,
    with_trainable_flag,
)
from resnet_builder.model.head import head_layers
from resnet_builder.model.weights import load_preset_weights


@keras.saving.register_keras_serializable(package="resnet_builder")
class Normalize(keras.layers.Layer):
    """``(x - mean) / std`` per channel, with the statistics kept in the config."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_normalize_args(mean, std)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, inputs):
        """Images [B, H, W, C] of a known width are seen as rows of W*C values, with the
        statistics tiled to one row: the same arithmetic per value, but TensorFlow's CPU
        kernels broadcast a long row much faster than a 3-vector (64 images at 224x224x3,
        2 cores: 6.3 against 17.6 ms, cast included; equal outputs). Traced for any width,
        that form cost the first training step 0.6 s more, so those keep the 3-vector."""
        x = keras.ops.cast(inputs, self.compute_dtype)
        mean = keras.ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        scale = keras.ops.convert_to_tensor([1.0 / s for s in self.std], dtype=self.compute_dtype)
        width = x.shape[-2]
        if width is None:
            return (x - mean) * scale
        rows = keras.ops.reshape(x, (-1, width * len(self.mean)))
        rows = (rows - keras.ops.tile(mean, [width])) * keras.ops.tile(scale, [width])
        return keras.ops.reshape(rows, keras.ops.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def _copy(values: list | None) -> list | None:
    """A config's own copy: editing it must not change the model."""
    return None if values is None else list(values)


@keras.saving.register_keras_serializable(package="resnet_builder")
class ResNetV2Classifier(keras.Model):
    """Images (raw pixel values) -> class probabilities (``task="multilabel"``: one
    independent sigmoid probability per class).

    ``head="gap"``: global average pooling, optional dropout, Dense.
    ``head="tutorial"``: the tutorial's head after the backbone's own BN-ReLU:
    pooling, Dense(512, relu), BN, Dropout (``dropout`` or 0.5), Dense.
    The head's layers are listed in ``head.py``.
    """

    def __init__(
        self,
        backbone: ResNetV2Backbone,
        num_classes: int,
        *,
        head: str = "gap",
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        resize: str = "stretch",
        crop_pct: float = 0.875,
        task: str = "multiclass",
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        check_keywords(kwargs, ResNetV2Classifier)  # keras.Model would drop a misspelling
        check_classifier_args(num_classes, head, dropout, mean, std, class_names,
                              channels=backbone.input_shape[-1], resize=resize,
                              crop_pct=crop_pct, task=task, threshold=threshold)
        num_classes = int(num_classes)  # NumPy's integers too (Keras' Dense refuses them)
        inputs = keras.Input(shape=backbone.input_shape[1:], name="images")
        x = inputs
        if mean is not None or std is not None:
            x = Normalize(mean, std, name="normalize")(x)
        x = backbone(x)
        for op in head_layers(x.shape[-1], num_classes, head, dropout, task=task):
            x = make_layer(op)(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = head
        self.dropout = float(dropout)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.resize = resize
        self.crop_pct = float(crop_pct)
        self.task = task
        self.threshold = float(threshold)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "head": self.head,
            "dropout": self.dropout,
            "mean": _copy(self.mean),
            "std": _copy(self.std),
            "class_names": _copy(self.class_names),
            "resize": self.resize,
            "crop_pct": self.crop_pct,
            "task": self.task,
            "threshold": self.threshold,
        }

    @classmethod
    def from_config(cls, config: dict) -> ResNetV2Classifier:
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return with_trainable_flag(cls, config)

    @property
    def image_shape(self) -> tuple:
        """(height, width, channels) the model expects; ``predict`` resizes to it."""
        return tuple(self.backbone.input_shape[1:])

    def labels(self) -> list[str]:
        return self.class_names or [str(i) for i in range(self.num_classes)]


def build_backbone(arch: Architecture) -> ResNetV2Backbone:
    return ResNetV2Backbone(input_shape=arch.input_shape, **arch.backbone)


def build_model(
    depth: int | None = None,
    preset: str | None = None,
    block_type: str | None = None,
    *,
    num_classes: int = 10,
    input_shape: Sequence[int | None] | None = None,
    stackwise_filters: Sequence[int] | None = None,
    stackwise_blocks: Sequence[int] | None = None,
    stackwise_strides: Sequence[int] | None = None,
    stackwise_dilations: Sequence[int] | None = None,
    stem_filters: int | None = None,
    include_rescaling: bool | None = None,
    bn_momentum: float | None = None,
    head: str = "gap",
    dropout: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    resize: str = "stretch",
    crop_pct: float = 0.875,
    task: str = "multiclass",
    threshold: float = 0.5,
    load_weights: bool = False,
    weights_file: str | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> ResNetV2Classifier:
    """A classifier from a depth, a preset or stackwise lists (exactly one of them).

    ``load_weights=True`` loads a preset's pretrained backbone weights
    (``weights_file`` points at a local copy). See ``resolve_architecture``.
    ``resize``/``crop_pct``: how commands turn an image into the input (stretch, crop or
    pad; see ``resnet_builder.data.resizing``), stored with the model.
    ``task``: multiclass (softmax) or multilabel (a sigmoid per class; ``threshold`` is the
    probability from which predict and evaluate count a label as present), stored too.
    ``mean``/``std`` take the place of the backbone's ``include_rescaling`` (off with them).
    ``**kwargs`` only catches a misspelled keyword, to refuse it with a suggestion.
    """
    check_keywords(kwargs, build_model, extra=())
    check_one_rescaling(include_rescaling, mean, std)
    arch = with_normalization(resolve_architecture(
        depth, preset, block_type, stackwise_filters=stackwise_filters,
        stackwise_blocks=stackwise_blocks, stackwise_strides=stackwise_strides,
        stackwise_dilations=stackwise_dilations, stem_filters=stem_filters,
        input_shape=input_shape, include_rescaling=include_rescaling, bn_momentum=bn_momentum,
    ), mean, std)
    backbone = build_backbone(arch)
    if load_weights:
        if arch.preset is None:
            raise ArgumentError("load_weights=True needs a preset with weights. "
                                f"Received: preset={preset!r}")
        load_preset_weights(backbone, arch.preset, weights_file)
    named = {"name": name} if name else {}
    return ResNetV2Classifier(backbone, num_classes, head=head, dropout=dropout, mean=mean,
                              std=std, class_names=class_names, resize=resize,
                              crop_pct=crop_pct, task=task, threshold=threshold, **named)
