"""resnet-builder: pre-activation ResNets (ResNetV2) of any depth in Keras 3.

The names below load lazily, so ``import resnet_builder`` (and the CLI's
``--help``, ``depths`` and ``presets``) does not start TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ResNetV2Backbone": "backbone",
    "ResNet18V2Backbone": "backbone",
    "ResNet34V2Backbone": "backbone",
    "ResNet50V2Backbone": "backbone",
    "ResNet101V2Backbone": "backbone",
    "ResNet152V2Backbone": "backbone",
    "ResNetV2Classifier": "classifier",
    "Normalize": "classifier",
    "build_model": "classifier",
    "resolve_architecture": "architecture",
    "backbone_plan": "architecture",
    "resolve_depth": "depth",
    "valid_depths": "depth",
    "PRESETS": "presets",
    "UserError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'resnet_builder' has no attribute {name!r}")
