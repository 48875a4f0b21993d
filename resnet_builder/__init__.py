"""resnet-builder: pre-activation ResNets (ResNetV2) of any depth in Keras 3.

The package's rooms (see ARCHITECTURE.md): ``model`` (the network), ``config``
(the YAML schema), ``data`` (sources -> tf.data), ``training`` (the loop and
its callbacks), ``inference`` (predict, evaluate, export) and ``benchmark``.
The names below are the Python API; each is imported on first use.

``import resnet_builder`` first asks TensorFlow for its oneDNN CPU kernels on any x86 CPU
(``runtime.prefer_onednn``; it must come before TensorFlow's import), then registers the
model classes with Keras, so
``keras.models.load_model`` reads our ``.keras`` files with no
``custom_objects``. The one exception is the ``resnet-builder`` command itself
(and ``python -m resnet_builder``): it imports Keras only in the commands that
need it, so ``--help``, ``depths``, ``presets`` and ``build --output`` answer
without starting TensorFlow.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
from importlib import metadata as _metadata
from typing import Any

from resnet_builder.runtime import prefer_onednn

prefer_onednn()  # before anything imports TensorFlow: its oneDNN switch is read only then

try:  # the installed distribution's version (setup.cfg), not a second copy of it
    __version__ = _metadata.version("resnet-builder")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "ResNetV2Backbone": "model.backbone",
    "ResNet18V2Backbone": "model.backbone",
    "ResNet34V2Backbone": "model.backbone",
    "ResNet50V2Backbone": "model.backbone",
    "ResNet101V2Backbone": "model.backbone",
    "ResNet152V2Backbone": "model.backbone",
    "ResNetV2Classifier": "model.classifier",
    "Normalize": "model.classifier",
    "build_model": "model.classifier",
    "resolve_architecture": "model.architecture",
    "backbone_plan": "model.architecture",
    "resolve_depth": "depth",
    "valid_depths": "depth",
    "PRESETS": "model.presets",
    "UserError": "errors",
    "load_config": "config",
    "train": "training.api",
    "resume": "training.api",
    "TrainResult": "training.api",
    "predict": "inference.predict",
    "Prediction": "inference.predict",
    "evaluate": "inference.evaluate",
    "export": "inference.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'resnet_builder' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazily imported API too, so a notebook's tab completion offers train, predict..."""
    return sorted({*globals(), *_EXPORTS})


def running_cli() -> bool:
    """Whether this process is the ``resnet-builder`` command (console script or ``-m``)."""
    if sys.argv and os.path.basename(sys.argv[0]) == "resnet-builder":
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(flag == "-m" and module in ("resnet_builder", "resnet_builder.cli")
               for flag, module in itertools.pairwise(argv))


if not running_cli():
    from resnet_builder.model import backbone as _backbone  # noqa: F401 - registers the classes
    from resnet_builder.model import classifier as _classifier  # noqa: F401
