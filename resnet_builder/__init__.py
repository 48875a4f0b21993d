"""resnet-builder: pre-activation ResNets (ResNetV2) of any depth in Keras 3.

``import resnet_builder`` registers the model classes with Keras, so
``keras.models.load_model`` reads our ``.keras`` files with no
``custom_objects``. The one exception is the ``resnet-builder`` command itself:
it imports Keras only in the commands that need it, so ``--help``, ``depths``,
``presets`` and ``build --output`` answer without starting TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
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
    "predict": "predict",
    "Prediction": "predict",
    "export_model": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'resnet_builder' has no attribute {name!r}")


def _running_cli() -> bool:
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "resnet-builder"


if not _running_cli():
    from . import backbone as _backbone  # noqa: F401 - registers ResNetV2Backbone
    from . import classifier as _classifier  # noqa: F401 - registers ResNetV2Classifier
