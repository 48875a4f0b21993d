"""Loading weights into a backbone from the files users actually have.

Two layouts: Keras 3 ``.weights.h5`` files (ours, or saved from a keras-cv
``ResNetV2Backbone``: same layer order, so Keras loads them directly) and the
Keras 2 HDF5 files of ``keras.applications`` (the ImageNet weights), matched by
layer name: ``conv3_block2_preact_bn`` is keras-cv's
``v2_stack_1_block2_use_preactivation_bn``. A preset's weights are found (or
fetched) by ``presets.weights_path`` and loaded by ``load_preset_weights``. A classifier
starts from a user's own file (``model.weights``) through ``load_donor_weights``.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from resnet_builder.errors import ArgumentError, UserError
from resnet_builder.model.presets import get_preset, presets_with_weights, weights_path


def keras_applications_name(name: str) -> str:
    """keras.applications' layer name for one of our (keras-cv) layer names."""
    match = re.match(r"^v2_stack_(\d+)_block(\d+)_(.+)$", name)
    if not match:
        return name
    stack, block, rest = match.groups()
    rest = rest.replace("use_preactivation_", "preact_")
    return f"conv{int(stack) + 2}_block{block}_{rest}"


def _read_legacy_h5(path: Path) -> dict[str, list[np.ndarray]]:
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        found = {}
        for name in names:
            layer = group[name]
            weight_names = [w.decode() if isinstance(w, bytes) else w
                            for w in layer.attrs["weight_names"]]
            if weight_names:
                found[name] = [np.asarray(layer[w]) for w in weight_names]
    return found


def load_keras_applications_weights(backbone, path: str | os.PathLike) -> None:
    """Copy a keras.applications HDF5 file's weights into ``backbone`` by layer name."""
    try:
        stored = _read_legacy_h5(Path(path))
    except (OSError, KeyError) as exc:
        raise UserError(f"{path} is not a keras.applications weights file ({exc})",
                        hint="pass the *_notop.h5 file from keras-applications") from None
    for layer in backbone.layers:
        if not layer.weights:
            continue
        values = stored.get(keras_applications_name(layer.name))
        if values is None:
            raise UserError(f"{path} has no weights for layer {layer.name!r}",
                            hint="the file was made for a different network")
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise UserError(
                f"{path}: layer {layer.name!r} has weights of shapes "
                f"{[v.shape for v in values]} but this network needs {expected}",
                hint="the file was made for a different network",
            )
        layer.set_weights(values)


def load_backbone_weights(backbone, path: str | os.PathLike, layout: str = "keras") -> None:
    """Load ``path`` into ``backbone``; any mismatch becomes a clear ``UserError``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"weights file {path} does not exist", hint="check the path")
    if layout == "keras_applications":
        load_keras_applications_weights(backbone, path)
        return
    try:
        backbone.load_weights(str(path))
    except Exception as exc:  # Keras raises several types for a wrong file
        raise UserError(f"could not load weights from {path}: {exc}",
                        hint="the file must be a .weights.h5 saved from the same network "
                             "(ours or keras-cv's ResNetV2Backbone)") from None


class PresetLayoutWarning(UserWarning):
    """Pretrained weights went into a network other than the one they were trained in."""


def layout_differences(backbone, preset: str) -> dict[str, tuple]:
    """{argument: (the preset's value, the backbone's)} where ``backbone`` computes other
    features than the preset's network with the same weights (strides, padding, range)."""
    config = get_preset(preset)["config"]
    keys = ["stackwise_strides", "stride_position", "padding"]
    if backbone.include_rescaling:
        keys.append("rescale_to")
    return {key: (config[key], getattr(backbone, key)) for key in keys
            if key in config and config[key] != getattr(backbone, key)}


def load_preset_weights(backbone, preset: str,
                        weights_file: str | os.PathLike | None = None) -> None:
    """Load the preset's pretrained weights (found or fetched by ``weights_path``); warn
    when the backbone is not the network they were trained in (they load all the same)."""
    spec = get_preset(preset).get("weights")
    if spec is None:
        raise ArgumentError(f"Preset {preset!r} has no pretrained weights; presets with "
                            f"weights: {presets_with_weights()}.")
    load_backbone_weights(backbone, weights_path(preset, weights_file), layout=spec["layout"])
    differences = layout_differences(backbone, preset)
    if differences:
        said = ", ".join(f"{key} {theirs} (this network: {ours})"
                         for key, (theirs, ours) in differences.items())
        warnings.warn(f"{preset}'s weights were trained in a network with {said}: they load, "
                      f"but compute other features here. Build the network from the preset "
                      f"(model.preset: {preset}, or from_preset({preset!r})) to get theirs.",
                      PresetLayoutWarning, stacklevel=2)


def load_donor_weights(model, path: str | os.PathLike) -> None:
    """Start a classifier from a user's file: a saved ``.keras`` model, or a ``.weights.h5``
    of a classifier (any class count) or of a backbone. The backbone always comes over, the
    head too when its shapes and class names match this model's."""
    path = Path(path)
    before = model.get_weights()
    with warnings.catch_warnings():
        # Keras warns of every layer it skips while a layout is tried: 77 lines saying layers
        # "will retain their freshly-initialized weights" before a backbone file loaded whole.
        warnings.simplefilter("ignore")
        try:
            if path.suffix == ".keras":
                _load_saved_model(model, path)
            else:
                _load_weights_file(model, path)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            model.set_weights(before)  # Keras assigns what fits before it raises
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")
            raise UserError(f"model.weights {path} does not fit this model ({reason[:300]})",
                            hint="the file must come from a network with the same backbone "
                                 "(depth, widths, block type, stem)") from None


def _load_saved_model(model, path: Path) -> None:
    import keras

    donor = keras.models.load_model(path, compile=False)
    model.backbone.set_weights(getattr(donor, "backbone", donor).get_weights())
    if _same_head(donor, model):
        model.set_weights(donor.get_weights())


def _same_head(donor, model) -> bool:
    """The donor's head fits: the same weight shapes, and the same classes when both name
    them (a cat/dog head in a dog/cat model would swap every answer)."""
    theirs, ours = getattr(donor, "class_names", None), model.class_names
    return ([tuple(w.shape) for w in donor.weights] == [tuple(w.shape) for w in model.weights]
            and (theirs is None or ours is None or list(theirs) == list(ours)))


def _load_weights_file(model, path: Path) -> None:
    """A classifier's file of this model's shape, a backbone's file, then the backbone
    inside a classifier's file of another class count or head. Keras' ``load_weights``
    assigns every layer that fits before it raises, which loaded half a head of another
    class count: each failed try is undone."""
    before = model.get_weights()
    for target in (model, model.backbone):
        try:
            target.load_weights(path)
            return
        except ValueError:
            model.set_weights(before)
    import h5py

    with h5py.File(path, "r") as stored, tempfile.TemporaryDirectory() as scratch:
        groups = stored.get("layers", {})
        inner = [name for name in groups if "backbone" in name and "layers" in groups[name]]
        if len(inner) != 1:
            raise ValueError("it holds neither this classifier's weights nor a backbone's")
        backbone_file = Path(scratch) / "backbone.weights.h5"
        with h5py.File(backbone_file, "w") as out:
            for key in groups[inner[0]]:
                groups[inner[0]].copy(key, out)
        model.backbone.load_weights(backbone_file)
