"""Named networks: keras-cv's ResNetV2 presets and the paper's CIFAR networks.

The table is plain data, read in one place; this module builds nothing (the
backbone's ``from_preset`` does) and imports no Keras until a download. Parameter
counts are the backbone's (keras-cv counts batch-norm moving statistics too) and
are checked by the tests against the built model. The ImageNet weights are
keras.applications' ResNet50V2 / 101V2 / 152V2 weights, in keras.applications' own
network (its strides and padding; the layer names stay keras-cv's), fetched with an MD5
check into the Keras cache; with no network, the error says which file to put where.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any

from resnet_builder.depth import BASIC, BOTTLENECK, units_for
from resnet_builder.errors import ArgumentError, UserError

_IMAGENET = {"stackwise_filters": [64, 128, 256, 512], "stackwise_strides": [1, 2, 2, 2],
             "include_rescaling": True}
_V2_DOC = ("ResNet model with {} layers where the batch normalization and ReLU activation "
           "precede the convolution layers (v2 style).")
KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# keras.applications' ResNetV2: stages 1-3 stride in their last unit (keras-cv: stages 2-4),
# strided windows read explicit zero padding, and pixels are scaled to [-1, 1] (its
# preprocess_input). Its ImageNet weights give its features only in this network; in
# keras-cv's, stages 2-4 would run at twice the resolution they were trained at, for 3.3x
# the multiply-adds (ResNet50V2 at 224: 3.48 G against 11.56 G).
KERAS_APPLICATIONS_LAYOUT = {"stackwise_strides": [2, 2, 2, 1], "padding": "symmetric",
                             "rescale_to": [-1.0, 1.0]}


def cifar_backbone(depth: int, block_type: str, width: int = 16) -> dict[str, Any]:
    """He et al.'s CIFAR network of a valid ``depth``, as backbone arguments.

    A 3x3 stem of ``width`` filters, three stages of widths w/2w/4w with the
    stride in each stage's first unit. The depth way and the ``*_cifar`` presets
    both come from here.
    """
    n = units_for(depth, block_type)
    return {"stackwise_filters": [width, 2 * width, 4 * width], "stackwise_blocks": [n, n, n],
            "stackwise_strides": [1, 2, 2], "stackwise_dilations": None,
            "include_rescaling": False, "block_type": block_type, "stem": "cifar",
            "stem_filters": width, "stride_position": "first"}


def imagenet_preset(layers: int, blocks: list[int], params: int, md5: str) -> dict[str, Any]:
    """A bottleneck ImageNet preset with keras.applications' ResNet{layers}V2 notop weights,
    in the network they were trained in (``KERAS_APPLICATIONS_LAYOUT``).

    File name, URL and MD5 are the ones keras.applications' ``resnet.py`` downloads
    (``WEIGHTS_HASHES[...][1]``, the notop file); the layers match ours by name.
    """
    file = f"resnet{layers}v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    description = (_V2_DOC.format(layers) + " Trained on Imagenet 2012 classification task; "
                   f"keras.applications' ResNet{layers}V2 network and weights.")
    return {"config": {**_IMAGENET, **KERAS_APPLICATIONS_LAYOUT, "stackwise_blocks": blocks,
                       "block_type": BOTTLENECK},
            "params": params, "description": description,
            "weights": {"file": file, "url": KERAS_APPS_URL + file, "md5": md5,
                        "layout": "keras_applications"}}


PRESETS: dict[str, dict[str, Any]] = {
    "resnet18_v2": {"config": {**_IMAGENET, "stackwise_blocks": [2, 2, 2, 2],
                               "block_type": BASIC},
                    "params": 11_183_488, "description": _V2_DOC.format(18)},
    "resnet34_v2": {"config": {**_IMAGENET, "stackwise_blocks": [3, 4, 6, 3],
                               "block_type": BASIC},
                    "params": 21_299_072, "description": _V2_DOC.format(34)},
    "resnet50_v2": {"config": {**_IMAGENET, "stackwise_blocks": [3, 4, 6, 3],
                               "block_type": BOTTLENECK},
                    "params": 23_564_800, "description": _V2_DOC.format(50)},
    "resnet101_v2": {"config": {**_IMAGENET, "stackwise_blocks": [3, 4, 23, 3],
                                "block_type": BOTTLENECK},
                     "params": 42_626_560, "description": _V2_DOC.format(101)},
    "resnet152_v2": {"config": {**_IMAGENET, "stackwise_blocks": [3, 8, 36, 3],
                                "block_type": BOTTLENECK},
                     "params": 58_331_648, "description": _V2_DOC.format(152)},
    "resnet50_v2_imagenet": imagenet_preset(50, [3, 4, 6, 3], 23_564_800,
                                            "fac2f116257151a9d068a22e544a4917"),
    "resnet101_v2_imagenet": imagenet_preset(101, [3, 4, 23, 3], 42_626_560,
                                             "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152_v2_imagenet": imagenet_preset(152, [3, 8, 36, 3], 58_331_648,
                                             "ed17cf2e0169df9d443503ef94b23b33"),
    "resnet20_cifar": {"config": cifar_backbone(20, BASIC), "params": 273_120,
                       "description": "He et al. 2015/2016 CIFAR ResNet-20, basic units (6n+2, "
                                      "n=3), pre-activation."},
    "resnet56_cifar": {"config": cifar_backbone(56, BASIC), "params": 859_104,
                       "description": "CIFAR ResNet-56, basic units (6n+2, n=9), "
                                      "pre-activation."},
    "resnet110_cifar": {"config": cifar_backbone(110, BASIC), "params": 1_738_080,
                        "description": "CIFAR ResNet-110 of He et al. 2016, basic units "
                                       "(6n+2, n=18): 1.7M parameters."},
    "resnet164_cifar": {"config": cifar_backbone(164, BOTTLENECK), "params": 1_733_440,
                        "description": "CIFAR pre-activation ResNet-164 of He et al. 2016, "
                                       "bottleneck units (9n+2, n=18): 1.7M parameters."},
    "resnet1001_cifar": {"config": cifar_backbone(1001, BOTTLENECK), "params": 10_524_544,
                         "description": "CIFAR pre-activation ResNet-1001 of He et al. 2016, "
                                        "bottleneck units (9n+2, n=111): 10.2M parameters."},
}


def get_preset(name: str) -> dict[str, Any]:
    """The preset's table entry, or an ``ArgumentError`` that suggests the closest names."""
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name).lower(), list(PRESETS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ArgumentError(f"Unknown preset {name!r}.{hint} Available presets: "
                            f"{', '.join(PRESETS)}. Received: preset={name!r}")
    return PRESETS[name]


def presets_with_weights() -> list[str]:
    """The presets that have pretrained weights."""
    return [name for name, entry in PRESETS.items() if "weights" in entry]


def cache_dir() -> Path:
    """Where downloaded weights live: $KERAS_HOME/models (default ~/.keras/models)."""
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(root) / "models"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(preset: str, weights_file: str | os.PathLike | None = None) -> Path:
    """Find the preset's weights: the given file, else the cache, else download.

    A cached or given file must match the preset's MD5; a failed download
    raises ``UserError`` naming the URL and the exact path to put the file at.
    """
    spec = get_preset(preset).get("weights")
    if not spec:
        raise UserError(f"preset {preset!r} has no pretrained weights",
                        hint="use load_weights=False, or a preset ending in _imagenet")
    target = cache_dir() / spec["file"]
    candidate = Path(weights_file) if weights_file else target
    if candidate.exists():
        if _md5(candidate) != spec["md5"]:
            # a file the user named may be another model's: not ours to tell them to delete
            hint = (f"check that it is {spec['file']} from {spec['url']}" if weights_file
                    else f"delete it and download {spec['url']} again")
            raise UserError(f"weights file {candidate} does not match the MD5 checksum of "
                            f"{preset} ({spec['md5']})", hint=hint)
        return candidate
    if weights_file:
        raise UserError(f"weights file {weights_file} does not exist",
                        hint=f"download {spec['url']} and pass its path")
    try:
        from keras.utils import get_file  # Keras (and its backend) only when downloading

        return Path(get_file(spec["file"], spec["url"], file_hash=spec["md5"],
                             cache_dir=str(target.parent.parent), cache_subdir="models"))
    except Exception as exc:  # any download failure means the same to the user
        raise UserError(
            f"could not download the weights of {preset} ({type(exc).__name__}: {exc})",
            hint=f"download {spec['url']} on a machine with network access and put it at "
                 f"{target} (or set KERAS_HOME, or in Python pass its path as "
                 f"from_preset(..., weights_file=...)), then run again",
        ) from None


def backbone_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The preset's constructor arguments with the caller's overriding them."""
    return {**get_preset(preset)["config"], **overrides}
