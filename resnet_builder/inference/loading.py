"""Loading a classifier for inference: predict, evaluate and export all start here.

A model object, a ``.keras`` file or a run folder (its best, else last, model)
becomes an ``InferenceModel``: the Keras model plus the facts every use needs,
read from the model itself (input size, channels, class names). An export
(``model.tflite``, ``model.onnx``, a SavedModel folder) becomes one too, without a
Keras model (``exported.py``). The model's normalisation is a layer inside it, so it
is always fed raw 0..255 pixels.

Test-time augmentation (``tta``) averages the softmax over each image and its
horizontal mirror image, both run in one batch.
"""

from __future__ import annotations

import numbers
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.resizing import Resize
from resnet_builder.errors import UserError
from resnet_builder.inference.gradcam import gradcam_function
from resnet_builder.runs import TRAIN_PROJECT, latest_run, model_path


@dataclass(eq=False)
class InferenceModel:
    """A loaded classifier plus the facts prediction needs (size, channels, labels).

    An exported model has no Keras ``model``; its ``runner`` computes the probabilities.
    """

    model: Any  # keras.Model; None for an export
    source: str  # where it came from, for messages and outputs
    image_size: int
    channels: int
    labels: list[str]
    runner: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    kind: str = "keras"  # or the export's format: savedmodel, tflite, tflite-int8, onnx
    resize: str = "stretch"  # the model's resize rule (data.resizing): stretch, crop or pad
    crop_pct: float = 0.875
    task: str = "multiclass"  # multilabel: a sigmoid per class, labels at >= threshold
    threshold: float = 0.5
    _functions: dict[str, Callable] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def resizing(self) -> Resize:
        """How files become inputs: the rule the model was trained with."""
        return Resize(self.image_size, self.resize, self.crop_pct)

    def input_spec(self) -> Any:
        """tf.TensorSpec of a batch of raw images: float32 [None, S, S, C]."""
        import tensorflow as tf

        return tf.TensorSpec([None, self.image_size, self.image_size, self.channels],
                             tf.float32, name="images")

    def keras_model(self, purpose: str) -> Any:
        """The Keras model; an export has none, so ``purpose`` gets a UserError."""
        if self.model is None:
            raise UserError(f"{purpose} needs the Keras model, and {self.source} is a "
                            f"{self.kind} export",
                            hint="pass the .keras file or run folder the export was made from")
        return self.model

    def probabilities(self, images: Any, *, tta: bool = False) -> np.ndarray:
        """float32 [B, K] for a batch of raw 0..255 images [B, S, S, C].

        ``tta``: the mean of the image's and its horizontal flip's probabilities.
        """
        if tta:
            plain, flipped = self.flip_probabilities(images)
            return (plain + flipped) / 2
        return self._probabilities(images)

    def flip_probabilities(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities of the images, of their horizontal flips), from one batch of 2B."""
        batch = np.asarray(images)
        both = self._probabilities(np.concatenate([batch, batch[:, :, ::-1]]))
        return both[:len(batch)], both[len(batch):]

    def _probabilities(self, images: Any) -> np.ndarray:
        if self.runner is not None:
            probs = np.asarray(self.runner(np.asarray(images, np.float32)), np.float32)
            if probs.ndim != 2 or probs.shape[1] != len(self.labels):
                raise UserError(f"{self.source} gives outputs of shape {list(probs.shape)}, "
                                f"but the export.json beside it names {len(self.labels)} "
                                "classes",
                                hint="that export.json belongs to another export: export "
                                     "the model again")
            return probs
        if "probs" not in self._functions:
            self._functions["probs"] = _forward(self.model, self.input_spec())
        return _checked_probabilities(
            np.asarray(self._functions["probs"](_as_float(images)), np.float32), self.source)

    def gradcam(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [B, K], heatmaps [B, h, w] in 0..1) for the top class of each image."""
        if "cam" not in self._functions:
            model = self.keras_model("Grad-CAM (--cam)")
            self._functions["cam"] = gradcam_function(model, self.input_spec())
        probs, heat = self._functions["cam"](_as_float(images))
        return np.asarray(probs, np.float32), np.asarray(heat, np.float32)


# model -> {input spec: traced forward pass}. A tf.function per InferenceModel was traced
# again by every predict() call (0.4-0.7 s a call for a ResNet-20 in a loop, and TensorFlow's
# retracing warning); Keras' predict_on_batch would cache it too, but turns XLA on by itself
# on a GPU (compiling anew for each batch size) and drops the input-shape check. The
# function holds the model weakly, so the entry goes with the model.
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: Any, spec: Any) -> Callable[[Any], Any]:
    """``model(x, training=False)`` traced once per model and input spec."""
    import tensorflow as tf

    traced = _FORWARD.setdefault(model, {})
    key = (tuple(spec.shape), spec.dtype.name)
    if key not in traced:
        held = weakref.ref(model)
        traced[key] = tf.function(lambda x: held()(x, training=False), input_signature=[spec])
    return traced[key]


def with_threshold(im: InferenceModel, threshold: float | None) -> InferenceModel:
    """``im`` with another multilabel threshold (``--threshold``); None keeps the model's."""
    if threshold is None:
        return im
    if not 0.0 <= float(threshold) <= 1.0:
        raise UserError(f"threshold must be in [0, 1], got {threshold}", exit_code=2)
    if not im.multilabel:  # it was ignored without a word
        raise UserError(f"--threshold applies to multilabel models; {im.source} is multiclass "
                        "(one label per image, the most probable)", hint="drop --threshold",
                        exit_code=2)
    return replace(im, threshold=float(threshold))


def _as_float(images: Any) -> Any:
    import tensorflow as tf

    return tf.cast(images, tf.float32)


def load_inference_model(model: Any = None, *, project: str | os.PathLike = TRAIN_PROJECT
                         ) -> InferenceModel:
    """A model object, a ``.keras`` file, a run folder or an export (``exported.py``).

    None = the newest run's best model.
    """
    if isinstance(model, InferenceModel):
        return model
    from resnet_builder.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from resnet_builder.model import backbone as _backbone  # noqa: F401 - registers the model classes
    from resnet_builder.model import classifier as _classifier  # noqa: F401

    if isinstance(model, keras.Model):
        return _describe(model, f"<{type(model).__name__} {model.name}>")
    if model is not None:
        from resnet_builder.inference.exported import export_kind, load_exported

        if export_kind(Path(model)):
            return load_exported(Path(model))
    path = model_path(latest_run(project) if model is None else model)
    return _describe(_load_keras_file(path), str(path))


def _load_keras_file(path: Path) -> Any:
    import keras

    if path.suffix != ".keras":
        raise UserError(f"model {path} is not a .keras file",
                        hint="pass a .keras model file, a run folder (runs/train/exp) or an "
                             "export (model.tflite, model.onnx, a saved_model folder)")
    _check_keras_archive(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # a corrupt zip, a foreign model, missing classes...
        raise UserError(f"cannot load model {path}: {type(exc).__name__}: {exc}",
                        hint="pass a .keras file written by resnet-builder") from None


def _check_keras_archive(path: Path) -> None:
    """Refuse a file that is not a .keras zip before Keras calls it "File not found"."""
    import zipfile

    reason = None
    try:
        if not zipfile.is_zipfile(path):
            reason = "not a zip archive"
        else:
            with zipfile.ZipFile(path) as archive:
                if "config.json" not in archive.namelist():
                    reason = "a zip archive without the config.json of a Keras model"
    except OSError as exc:
        reason = f"cannot read it ({exc.strerror or exc})"
    if reason:
        raise UserError(f"{path} is not a Keras model file (.keras): {reason}",
                        hint="pass a run folder (runs/train/exp), its best.keras or "
                             "last.keras, or an export (model.tflite, model.onnx, a "
                             "saved_model folder)")


def _describe(model: Any, source: str) -> InferenceModel:
    """Size, channels and labels of a model; checks it is a square image classifier."""
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else ()
    if len(shape) != 3 or shape[0] is None or shape[0] != shape[1] or shape[2] not in (1, 3):
        raise UserError(f"model {source} takes input shape {shape}; prediction needs a fixed "
                        "square size with 1 or 3 channels (H, H, C)",
                        hint="build the model with input_shape like (32, 32, 3)")
    out = model.output_shape
    if not isinstance(out, tuple) or len(out) != 2 or not out[1]:
        raise UserError(f"model {source} gives outputs of shape {out}; prediction needs one "
                        "row of class probabilities per image, (batch, classes)",
                        hint="end the model with keras.layers.Dense(classes, "
                             "activation='softmax')")
    outputs = out[-1]
    labels = model.labels() if hasattr(model, "labels") else [str(i) for i in range(outputs)]
    return InferenceModel(model=model, source=source, image_size=int(shape[0]),
                          channels=int(shape[2]), labels=list(labels),
                          resize=getattr(model, "resize", "stretch"),
                          crop_pct=float(getattr(model, "crop_pct", 0.875)),
                          task=getattr(model, "task", "multiclass"),
                          threshold=float(getattr(model, "threshold", 0.5)))


def _checked_probabilities(probs: np.ndarray, source: str) -> np.ndarray:
    """A Keras model's outputs, refused when they are no probabilities (logits from a
    model without a softmax were reported as 'probability' 99.7 and -57.9)."""
    if probs.size and (probs.min() < -0.01 or probs.max() > 1.01):  # float16 rounding
        raise UserError(f"model {source} gives outputs from {probs.min():.4g} to "
                        f"{probs.max():.4g}, not probabilities (0..1)",
                        hint="end the model with a softmax (one label per image) or a "
                             "sigmoid (multilabel) activation")
    return probs


def check_counts(**counts: Any) -> None:
    """top_k, batch_size: whole numbers >= 1, named when not (0 failed deep in the pipeline
    with a ZeroDivisionError, "3" with a TypeError about '<')."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
