"""Write a ``.keras`` file for ``build_model(...)`` without importing Keras.

A Keras 3 model file is a zip of three members: ``metadata.json``,
``config.json`` (the model's ``serialize_keras_object`` record) and
``model.weights.h5`` (one HDF5 group per layer holding its variables). The config is
the constructor arguments and the plan knows every layer and weight shape, so all three
are written from the plan: no TensorFlow start-up, no 3,300 layer objects and variables
to walk. ResNet-1001 takes about a second instead of tens of seconds.

What must match Keras exactly, and how it is matched:

* ``config.json``: what ``ResNetV2Classifier.get_config`` and
  ``ResNetV2Backbone.get_config`` return, wrapped as
  ``keras.saving.serialize_keras_object`` wraps them.
* The HDF5 tree: ``saving_lib`` visits a Functional model's ``layers`` and
  names each layer's group by its snake-cased class name plus a counter
  (``conv2d``, ``conv2d_1``, ...) in the order of ``model.layers``. That order
  is ``keras/src/ops/function.py``'s ``map_graph``: layers sorted by depth
  (longest path to the output, deepest first), ties by the order a depth-first
  search from the output first reaches them. ``functional_layer_order``
  repeats that on the plan's graph; it is not the plan's creation order (a
  unit's ``_0_conv`` projection lands after its ``_2_relu``).
* The initial values follow Keras's defaults: Glorot-uniform kernels, zero
  biases, batch-norm gamma 1, beta 0, moving mean 0, moving variance 1.

``tests/test_keras_file.py`` compares our files with ``build_model(...).save``
member by member. The layout was verified with Keras ``VERIFIED_KERAS``; with
another Keras version ``build --output`` saves with Keras itself instead
(``saving.save_model_file`` asks ``unverified_keras``), and a direct call here
still writes, with a warning; the tests say whether the layout still matches.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from resnet_builder.depth import BOTTLENECK, normalize_block_type
from resnet_builder.errors import ArgumentError
from resnet_builder.files import atomic_open
from resnet_builder.model.architecture import (
    IMAGENET_LAYOUT,
    Architecture,
    check_classifier_args,
    input_range,
    with_normalization,
)
from resnet_builder.model.head import head_layers
from resnet_builder.model.plan import Op, Plan

VERIFIED_KERAS = "3.15"  # major.minor whose file layout this module reproduces

BACKBONE_NAME = "res_net_v2_backbone"  # Keras's automatic name for ResNetV2Backbone
CLASSIFIER_NAME = "res_net_v2_classifier"
BACKBONE_INPUT_NAME = "input_layer"  # the backbone's unnamed keras.Input

# Keras's group name for each layer class: naming.to_snake_case(cls.__name__).
GROUP_NAMES = {
    "input": "input_layer",  # InputLayer
    "conv": "conv2d",  # Conv2D
    "bn": "batch_normalization",  # BatchNormalization
    "relu": "activation",  # Activation
    "max_pool": "max_pooling2d",  # MaxPooling2D
    "pad": "zero_padding2d",  # ZeroPadding2D
    "add": "add",  # Add
    "rescaling": "rescaling",  # Rescaling
    "normalize": "normalize",  # resnet_builder's Normalize
    "backbone": BACKBONE_NAME,  # ResNetV2Backbone
    "gap": "global_average_pooling2d",  # GlobalAveragePooling2D
    "dense": "dense",  # Dense
    "dropout": "dropout",  # Dropout
}


def keras_version() -> str:
    """The installed Keras version, read from package metadata (Keras is not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:
        return VERIFIED_KERAS + ".0"


def major_minor(version: str) -> str:
    """``"3.15"`` for ``"3.15.1"``."""
    return ".".join(version.split(".")[:2])


def unverified_keras() -> str | None:
    """The installed Keras major.minor when this writer was not verified on it, else None."""
    installed = major_minor(keras_version())
    return None if installed == VERIFIED_KERAS else installed


def _check_keras_version(installed: str) -> None:
    if major_minor(installed) != VERIFIED_KERAS:
        warnings.warn(
            f"resnet_builder's fast .keras writer was verified with Keras {VERIFIED_KERAS}.x; "
            f"Keras {installed} is installed. The file is written anyway (`resnet-builder "
            f"build --output` saves with Keras itself instead); run "
            f"tests/test_keras_file.py to check that Keras {installed} still saves the same "
            "layout.",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- layer order


def functional_layer_order(inputs_of: dict[str, Sequence[str]], output: str) -> list[str]:
    """Names in the order a Keras Functional model lists its layers.

    ``inputs_of`` maps each layer to the layers it reads, in call order (an
    input layer maps to nothing). Mirrors ``keras/src/ops/function.py``:
    ``_build_map`` walks depth-first from the output, numbering each layer the
    first time it is reached (inputs in call order) and finishing it after its
    inputs; ``map_graph`` then gives each layer the longest distance to the
    output as its depth and sorts by depth, deepest first, ties by that
    number. Iterative, as a 3,000-layer chain would exceed Python's recursion
    limit.
    """
    index: dict[str, int] = {output: 0}
    finished: list[str] = []  # post-order: inputs before the layers reading them
    done: set[str] = set()
    stack = [(output, iter(inputs_of[output]))]
    while stack:
        name, pending = stack[-1]
        for parent in pending:
            if parent not in done:
                index.setdefault(parent, len(index))
                stack.append((parent, iter(inputs_of[parent])))
                break
        else:
            stack.pop()
            done.add(name)
            finished.append(name)
    depth: dict[str, int] = {}
    for name in reversed(finished):  # every reader of a layer comes before it
        d = depth.setdefault(name, 0)
        for parent in inputs_of[name]:
            if depth.get(parent, 0) < d + 1:
                depth[parent] = d + 1
    return sorted(finished, key=lambda n: (-depth[n], index[n]))


def backbone_layer_order(plan: Plan) -> list[str]:
    """The backbone's ``layers`` by name (``plan.input_name`` for its input layer)."""
    inputs_of: dict[str, Sequence[str]] = {plan.input_name: ()}
    for op in plan.ops:
        inputs_of[op.name] = op.inputs
    return functional_layer_order(inputs_of, plan.output)


# --------------------------------------------------------------------------- config


def _serialized(module: str, class_name: str, config: dict) -> dict:
    """``keras.saving.serialize_keras_object``'s record for a registered model."""
    return {
        "module": module,
        "class_name": class_name,
        "config": config,
        "registered_name": f"resnet_builder>{class_name}",
        "build_config": {"input_shape": None},
        "compile_config": {},
    }


def model_config(arch: Architecture, plan: Plan, *, num_classes: int, head: str = "gap",
                 dropout: float = 0.0, mean=None, std=None, class_names=None,
                 resize: str = "stretch", crop_pct: float = 0.875,
                 task: str = "multiclass", threshold: float = 0.5,
                 name: str | None = None) -> dict:
    """What Keras writes to ``config.json`` for ``build_model(...)`` with these arguments."""
    # The constructor's defaults first, for an Architecture made by hand.
    bb = {**IMAGENET_LAYOUT, "block_type": BOTTLENECK, **arch.backbone}
    dilations = bb["stackwise_dilations"]
    backbone = {
        "name": BACKBONE_NAME,
        "trainable": True,
        "stackwise_filters": list(bb["stackwise_filters"]),
        "stackwise_blocks": list(bb["stackwise_blocks"]),
        "stackwise_strides": list(bb["stackwise_strides"]),
        "include_rescaling": bool(bb["include_rescaling"]),
        "stackwise_dilations": None if dilations is None else list(dilations),
        "input_shape": list(plan.input_shape),
        "input_tensor": None,
        "block_type": normalize_block_type(bb["block_type"]),
        "stem": bb["stem"],
        "stem_filters": bb["stem_filters"],
        "stride_position": bb["stride_position"],
        "bn_momentum": plan.bn_momentum,
        "padding": bb["padding"],
        "rescale_to": list(input_range(bb["rescale_to"])),
    }
    classifier = {
        "name": name or CLASSIFIER_NAME,
        "trainable": True,
        "backbone": _serialized("resnet_builder.model.backbone", "ResNetV2Backbone", backbone),
        "num_classes": num_classes,
        "head": head,
        "dropout": float(dropout),
        "mean": None if mean is None else [float(m) for m in mean],
        "std": None if std is None else [float(s) for s in std],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "resize": resize,
        "crop_pct": float(crop_pct),
        "task": task,
        "threshold": float(threshold),
    }
    return _serialized("resnet_builder.model.classifier", "ResNetV2Classifier", classifier)


# --------------------------------------------------------------------------- weights


class _Initial:
    """Keras's default initial values, drawn from one generator."""

    def __init__(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        self._const: dict[tuple, np.ndarray] = {}

    def glorot(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform on [-limit, limit), limit = sqrt(6 / (fan_in + fan_out)), as Keras."""
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w = self.rng.random(shape, dtype=np.float32)
        w *= np.float32(2.0 * limit)
        w -= np.float32(limit)
        return w

    def const(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        key = (shape, value)
        if key not in self._const:
            self._const[key] = np.full(shape, value, dtype=np.float32)
        return self._const[key]

    def weight(self, kind: str, weight: str, shape: tuple[int, ...]) -> np.ndarray:
        if weight == "kernel":
            return self.glorot(shape)
        if weight in ("gamma", "moving_variance"):
            return self.const(shape, 1.0)
        return self.const(shape, 0.0)  # bias, beta, moving_mean


# (group path, layer name, [(weight name, shape), ...], kind)
Entry = tuple[str, str, Sequence[tuple[str, tuple[int, ...]]], str]


def _unique(group: str, used: dict[str, int]) -> str:
    """saving_lib._get_unique_name: ``conv2d``, ``conv2d_1``, ..."""
    if group in used:
        used[group] += 1
        return f"{group}_{used[group]}"
    used[group] = 0
    return group


def weight_entries(plan: Plan, *, num_classes: int, head: str, dropout: float,
                   normalize: bool, name: str) -> list[Entry]:
    """Every group of ``model.weights.h5`` with a ``vars`` subgroup, in Keras's visit order."""
    entries: list[Entry] = [("", name, (), "model")]
    used: dict[str, int] = {}

    def top(kind: str, layer: str, weights=()) -> None:
        entries.append((f"layers/{_unique(GROUP_NAMES[kind], used)}", layer, weights, kind))

    top("input", "images")
    if normalize:
        top("normalize", "normalize")
    bb_path = f"layers/{_unique(GROUP_NAMES['backbone'], used)}"
    entries.append((bb_path, BACKBONE_NAME, (), "backbone"))
    ops: dict[str, Op] = {op.name: op for op in plan.ops}
    bb_used: dict[str, int] = {}
    for layer in backbone_layer_order(plan):
        if layer == plan.input_name:
            kind, weights, layer = "input", (), BACKBONE_INPUT_NAME
        else:
            kind, weights = ops[layer].kind, ops[layer].weights
        entries.append((f"{bb_path}/layers/{_unique(GROUP_NAMES[kind], bb_used)}", layer,
                        weights, kind))
    for op in head_layers(plan.shape(plan.output)[2], num_classes, head, dropout):
        top(op.kind, op.name, op.weights)
    return entries


def _h5_image(entries: Sequence[Entry], init: _Initial) -> bytes:
    """The bytes of ``model.weights.h5``, built in memory with h5py's low-level API.

    The high-level API costs about twice as much per group and dataset, which
    adds up over ~7,000 groups and ~6,000 datasets for ResNet-1001.
    """
    import h5py
    from h5py import h5a, h5d, h5g, h5s, h5t

    f = h5py.File(f"resnet_builder-{os.getpid()}-{id(entries)}.h5", "w", driver="core",
                  backing_store=False)
    try:
        str_type = h5t.py_create(h5py.string_dtype(), logical=True)
        scalar = h5s.create(h5s.SCALAR)
        float32 = h5t.IEEE_F32LE
        spaces: dict[tuple[int, ...], Any] = {}
        groups = {"": f.id}

        def group(path: str):
            gid = groups.get(path)
            if gid is None:
                parent, _, leaf = path.rpartition("/")
                gid = groups[path] = h5g.create(group(parent), leaf.encode())
            return gid

        for path, layer, weights, kind in entries:
            vars_id = h5g.create(group(path), b"vars")
            attr = h5a.create(vars_id, b"name", str_type, scalar)
            attr.write(np.array(layer.encode(), dtype=h5py.string_dtype()))
            for i, (weight, shape) in enumerate(weights):
                space = spaces.get(shape)
                if space is None:
                    space = spaces[shape] = h5s.create_simple(shape)
                dset = h5d.create(vars_id, str(i).encode(), float32, space)
                dset.write(h5s.ALL, h5s.ALL, init.weight(kind, weight, shape))
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


# --------------------------------------------------------------------------- the file


def _zip_info(name: str, date_time) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_STORED  # as Keras: members are stored, not deflated
    info.external_attr = 0o600 << 16
    return info


def write_model_file(
    path: str | os.PathLike,
    arch: Architecture,
    *,
    num_classes: int,
    head: str = "gap",
    dropout: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    resize: str = "stretch",
    crop_pct: float = 0.875,
    task: str = "multiclass",
    threshold: float = 0.5,
    name: str | None = None,
    seed: int | None = None,
) -> None:
    """Write the ``.keras`` file ``build_model(...).save(path)`` would, without Keras.

    The arguments are ``build_model``'s: the architecture (``resolve_architecture``)
    and the classifier's. ``keras.models.load_model(path)`` gives a
    ``ResNetV2Classifier`` whose config equals the built model's, with freshly initialised
    weights drawn as Keras draws them (``seed`` makes them repeatable). Written to a
    temporary name and renamed, so ``path`` never holds half a file. Raises
    ``ArgumentError`` for arguments ``build_model`` would refuse.
    """
    path = os.fspath(path)
    if not str(path).endswith(".keras"):
        raise ArgumentError(f"Invalid `filepath` argument: expected a `.keras` extension. "
                            f"Received: filepath={path}")
    arch = with_normalization(arch, mean, std)  # as build_model: they replace the rescaling
    plan, _ = arch.plan()  # checks the backbone arguments
    check_classifier_args(num_classes, head, dropout, mean, std, class_names,
                          plan.input_shape[2], resize, crop_pct, task, threshold)
    installed = keras_version()
    _check_keras_version(installed)
    name = name or CLASSIFIER_NAME
    config = model_config(arch, plan, num_classes=num_classes, head=head, dropout=dropout,
                          mean=mean, std=std, class_names=class_names, resize=resize,
                          crop_pct=crop_pct, task=task, threshold=threshold, name=name)
    now = datetime.datetime.now()
    metadata = {"keras_version": installed, "date_saved": now.strftime("%Y-%m-%d@%H:%M:%S")}
    entries = weight_entries(plan, num_classes=num_classes, head=head, dropout=dropout,
                             normalize=mean is not None, name=name)
    weights = _h5_image(entries, _Initial(seed))

    with atomic_open(path, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
        zf.writestr(_zip_info("metadata.json", (1980, 1, 1, 0, 0, 0)), json.dumps(metadata))
        zf.writestr(_zip_info("config.json", (1980, 1, 1, 0, 0, 0)), json.dumps(config))
        zf.writestr(_zip_info("model.weights.h5", now.timetuple()[:6]), weights)
