"""The export formats: SavedModel, TFLite (float and int8) and ONNX, each written and run.

Every export takes **raw pixels** (0..255, the model's channels): the model's own
normalisation layer is part of the exported graph. ``write_export`` writes one
format; ``open_export`` loads one as a function of raw images, which ``run_export``
(for ``export.py`` to compare with the Keras model) and ``exported.py`` (``predict`` and
``evaluate`` with an exported model) use. The converters' log lines are hidden unless
``RESNET_BUILDER_DEBUG`` is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.errors import UserError
from resnet_builder.files import atomic_write_bytes
from resnet_builder.inference.loading import InferenceModel

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx")
FILES = {"savedmodel": "saved_model", "tflite": "model.tflite",
         "tflite-int8": "model_int8.tflite", "onnx": "model.onnx"}
ONNX_HINT = "pip install 'resnet-builder[onnx]' (tf2onnx, onnx and onnxruntime)"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the converters' C++ log lines and Python warnings (unless RESNET_BUILDER_DEBUG)."""
    if os.environ.get("RESNET_BUILDER_DEBUG"):
        yield
        return
    from resnet_builder.runtime import _stderr_silenced

    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _stderr_silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _serving_function(im: InferenceModel) -> Callable:
    """Raw images of any size (and dtype) -> probabilities, and the class index and label
    (multilabel: ``positive``, every class at or above the threshold).

    Images of another size are resized by the model's own rule (``data.resizing``: stretch,
    crop or pad), as training and ``predict`` prepare them.
    """
    import tensorflow as tf

    from resnet_builder.data.resizing import fit_image

    size, channels, model, how = im.image_size, im.channels, im.model, im.resizing
    labels = tf.constant(im.labels)
    fitted = tf.TensorSpec([size, size, channels], tf.uint8)

    def fit(image: tf.Tensor) -> tf.Tensor:
        return fit_image(tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8), how)

    def fit_batch(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.map_fn(fit, x, fn_output_signature=fitted), tf.float32)

    def serve(images):
        x = tf.cast(images, tf.float32)
        if how.mode == "crop":  # crops every image, the model's size too, as predict does
            x = fit_batch(x)
        else:  # stretching or padding a model-size image leaves it as it is
            shape = tf.shape(x)
            same = tf.logical_and(tf.equal(shape[1], size), tf.equal(shape[2], size))
            x = tf.cond(same, lambda: x, lambda: fit_batch(x))
        x = tf.ensure_shape(x, [None, size, size, channels])
        probs = tf.cast(model(x, training=False), tf.float32)
        if im.task == "multilabel":  # independent sigmoids: every label at the threshold
            return {"probabilities": probs, "positive": probs >= im.threshold}
        index = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_index": index, "label": tf.gather(labels, index)}

    return serve


def serving_outputs(im: InferenceModel) -> list[str]:
    """The SavedModel's outputs: a multilabel model's ``positive`` [B, K] (bool: probability
    >= threshold) in place of a multiclass model's argmax ``class_index`` and ``label``."""
    if im.task == "multilabel":
        return ["probabilities", "positive"]
    return ["probabilities", "class_index", "label"]


def export_savedmodel(im: InferenceModel, path: Path) -> dict[str, Any]:
    """saved_model/ with float32 and uint8 raw-image signatures of any size."""
    import keras
    import tensorflow as tf

    serve = _serving_function(im)
    archive = keras.export.ExportArchive()
    archive.track(im.model)
    spec = [None, None, None, im.channels]
    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec(spec, tf.float32, name="images")])
    archive.add_endpoint("serve_uint8", serve,
                         input_signature=[tf.TensorSpec(spec, tf.uint8, name="images")])
    with _quiet():
        archive.write_out(str(path), verbose=False)
    return {"input": {"signature": "serving_default", "name": "images", "dtype": "float32",
                      "shape": spec, "values": "raw pixels 0..255, any size (resized inside)"},
            "signatures": ["serving_default", "serve_uint8"],
            "outputs": serving_outputs(im)}


class SavedModelRunner:
    """Probabilities from a SavedModel's serving_default signature (loaded once)."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        with _quiet():
            self._loaded = tf.saved_model.load(str(path))  # keeps the signature's variables
        self._serve = self._loaded.signatures["serving_default"]

    def __call__(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        import tensorflow as tf

        out = [self._serve(images=tf.constant(images[i:i + batch], tf.float32))
               ["probabilities"].numpy() for i in range(0, len(images), batch)]
        return np.concatenate(out).astype(np.float32)


def _fixed_size_savedmodel(im: InferenceModel, path: Path) -> None:
    """A SavedModel of just the model at its size: what the TFLite converter reads."""
    import keras

    model = im.model
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: model(x, training=False),
                         input_signature=[im.input_spec()])
    with _quiet():
        archive.write_out(str(path), verbose=False)


def convert_tflite(saved_model: Path, calibration: np.ndarray | None = None) -> bytes:
    """Float TFLite, or full-integer (uint8 in/out) when calibration images are given."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if calibration is not None:
        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with _quiet():
        return converter.convert()


def _interpreter(content: bytes) -> Any:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's move-to-LiteRT notice
        return tf.lite.Interpreter(model_content=content)


def tflite_io(content: bytes) -> dict[str, Any]:
    """Input and output dtype, shape and quantisation of a TFLite model."""
    interp = _interpreter(content)

    def describe(d: dict) -> dict[str, Any]:
        scale, zero = d["quantization"]
        info = {"name": d["name"], "dtype": np.dtype(d["dtype"]).name,
                "shape": [int(v) for v in d["shape_signature"]]}
        if scale:
            info.update(scale=float(scale), zero_point=int(zero))
        return info

    return {"input": describe(interp.get_input_details()[0]),
            "output": describe(interp.get_output_details()[0])}


class TFLiteRunner:
    """Probabilities (float32) from a TFLite model for raw images, quantising if needed.

    One interpreter, resized only when the batch size changes.
    """

    def __init__(self, content: bytes) -> None:
        self._interp = _interpreter(content)
        self._inp = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._allocated: int | None = None

    @property
    def input_shape(self) -> list[int]:
        """[B, H, W, C] as the model declares it (B is -1 when resizable)."""
        return [int(v) for v in self._inp["shape_signature"]]

    def __call__(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        return np.concatenate([self._run(images[i:i + batch])
                               for i in range(0, len(images), batch)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        interp, inp, out = self._interp, self._inp, self._out
        x = x.astype(np.float32)
        if self._allocated != len(x):
            interp.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
            interp.allocate_tensors()
            self._allocated = len(x)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        with _quiet():  # the first invoke logs which delegate it created
            interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


def export_onnx(im: InferenceModel, path: Path) -> dict[str, Any]:
    """model.onnx through Keras' exporter (tf2onnx), float32 input ``images``."""
    with _quiet():
        im.model.export(str(path), format="onnx", input_signature=[im.input_spec()],
                        verbose=False)
    return {"input": {"name": "images", "dtype": "float32",
                      "shape": [None, im.image_size, im.image_size, im.channels],
                      "values": "raw pixels 0..255"}}


class OnnxRunner:
    """Probabilities from onnxruntime on the CPU (one session)."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"running {path} needs onnxruntime, which is not installed",
                            hint=ONNX_HINT) from None
        self._session = onnxruntime.InferenceSession(str(path),
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]

    @property
    def input_shape(self) -> list[int | None]:
        """[B, H, W, C] as the model declares it (None where open)."""
        return [v if isinstance(v, int) else None for v in self._input.shape]

    def __call__(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        out = [self._session.run(None, {self._input.name: images[i:i + batch]
                                        .astype(np.float32)})[0]
               for i in range(0, len(images), batch)]
        return np.concatenate(out).astype(np.float32)


def write_export(fmt: str, im: InferenceModel, target: Path, calibration: np.ndarray | None,
                 workdir: Path) -> dict[str, Any]:
    """Write ``fmt`` to ``target``; returns what export.json says of its inputs and outputs.

    The TFLite converters read a fixed-size SavedModel, made once in ``workdir``;
    int8 is calibrated on ``calibration``.
    """
    if fmt == "savedmodel":
        return export_savedmodel(im, target)
    if fmt == "onnx":
        return export_onnx(im, target)
    fixed = workdir / "fixed_size_saved_model"
    if not fixed.exists():
        _fixed_size_savedmodel(im, fixed)
    content = convert_tflite(fixed, calibration if fmt == "tflite-int8" else None)
    atomic_write_bytes(target, content)
    return tflite_io(content)


def run_export(fmt: str, target: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities (float32 [N, K]) of the export written at ``target`` for raw images."""
    return open_export(fmt, target)(images)


def open_export(fmt: str, target: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function raw images (float32 [N, H, W, C]) -> probabilities, for the export at target."""
    if fmt == "savedmodel":
        return SavedModelRunner(target)
    if fmt == "onnx":
        return OnnxRunner(target)
    return TFLiteRunner(target.read_bytes())


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def agreement(result: dict[str, Any]) -> tuple[str, float]:
    """(what was compared, its share) of one export's check."""
    if "label_agreement" in result:
        return "label-set agreement", result["label_agreement"]
    return "top-1 agreement", result.get("top1_agreement", 0.0)
