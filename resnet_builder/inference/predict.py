"""Predicting classes for image files: sources, a streaming pipeline, records and outputs.

``predict(model, paths)`` is the Python entry point; ``predict_to_folder`` is what
``resnet-builder predict`` runs (CSV/JSON, skipped.csv, contact sheet, Grad-CAM).

Choices, stated once:

* Pixels are prepared by ``images.prepare_image`` with the size and channels stored
  in the model, exactly as training prepared them; the normalisation is a layer
  inside the model, so the model is fed raw 0..255 values.
* Files are decoded in a parallel ``tf.data`` map (``tf.numpy_function`` around
  ``prepare_image``) and batched, so only a few batches are in memory at a time.
  A file that cannot be decoded becomes a skip record (file, reason); it never
  stops the run.
* ``path`` in the outputs is relative to the source it was found through (a folder
  or the fixed part of a glob), or absolute for a file named on its own, so files
  of the same name in different sub-folders stay distinct. Files written per
  image (Grad-CAM) mirror those relative paths.
* Inside a folder, files without an image extension are skipped with that reason
  (hidden files are ignored). A file named explicitly is tried whatever its
  extension.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.data.images import (
    ImageError,
    is_image_file,
    load_image,
    prepare_image,
    walk_files,
)
from resnet_builder.errors import UserError
from resnet_builder.files import atomic_open, atomic_write_bytes
from resnet_builder.runs import latest_run, model_path, new_run_dir

DEFAULT_PROJECT = "runs/predict"
TRAIN_PROJECT = "runs/train"
GRID_MAX = 100


# ----------------------------------------------------------------------------- model


@dataclass(eq=False)
class InferenceModel:
    """A loaded classifier plus the facts prediction needs (size, channels, labels)."""

    model: Any  # keras.Model
    source: str  # where it came from, for messages and outputs
    image_size: int
    channels: int
    labels: list[str]
    _functions: dict[str, Callable] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def probabilities(self, images: Any) -> np.ndarray:
        """float32 [B, K] for a batch of raw 0..255 images [B, S, S, C]."""
        if "probs" not in self._functions:
            import tensorflow as tf

            spec = tf.TensorSpec([None, self.image_size, self.image_size, self.channels],
                                 tf.float32)
            model = self.model
            self._functions["probs"] = tf.function(
                lambda x: model(x, training=False), input_signature=[spec])
        return np.asarray(self._functions["probs"](_as_float(images)), np.float32)

    def gradcam(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [B, K], heatmaps [B, h, w] in 0..1) for the top class of each image."""
        if "cam" not in self._functions:
            self._functions["cam"] = _gradcam_function(self)
        probs, heat = self._functions["cam"](_as_float(images))
        return np.asarray(probs, np.float32), np.asarray(heat, np.float32)


def _as_float(images: Any) -> Any:
    import tensorflow as tf

    return tf.cast(images, tf.float32)


def load_inference_model(model: Any = None, *, project: str | os.PathLike = TRAIN_PROJECT
                         ) -> InferenceModel:
    """A model object, a ``.keras`` file or a run folder; None = the newest run's best model."""
    from resnet_builder.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from resnet_builder.model import backbone as _backbone  # noqa: F401 - registers the model classes
    from resnet_builder.model import classifier as _classifier  # noqa: F401

    if model is None:
        run = latest_run(project)
        path = model_path(run)
        source = str(path)
        model = _load_keras_file(path)
    elif isinstance(model, keras.Model):
        source = f"<{type(model).__name__} {model.name}>"
    else:
        path = model_path(model)
        source = str(path)
        model = _load_keras_file(path)
    return _describe(model, source)


def _load_keras_file(path: Path) -> Any:
    import keras

    if path.suffix != ".keras":
        raise UserError(f"model {path} is not a .keras file",
                        hint="pass a .keras model file or a run folder (runs/train/exp)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # a corrupt zip, a foreign model, missing classes...
        raise UserError(f"cannot load model {path}: {type(exc).__name__}: {exc}",
                        hint="pass a .keras file written by resnet-builder") from None


def _describe(model: Any, source: str) -> InferenceModel:
    """Size, channels and labels of a model; checks it is a square image classifier."""
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else ()
    if len(shape) != 3 or shape[0] is None or shape[0] != shape[1] or shape[2] not in (1, 3):
        raise UserError(f"model {source} takes input shape {shape}; prediction needs a fixed "
                        "square size with 1 or 3 channels (H, H, C)",
                        hint="build the model with input_shape like (32, 32, 3)")
    outputs = model.output_shape[-1]
    labels = model.labels() if hasattr(model, "labels") else [str(i) for i in range(outputs)]
    return InferenceModel(model=model, source=source, image_size=int(shape[0]),
                          channels=int(shape[2]), labels=list(labels))


def _split_classifier(model: Any) -> tuple[list, Any, list]:
    """(layers before the backbone, the backbone, layers after it) of a ResNetV2Classifier."""
    backbone = getattr(model, "backbone", None)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if backbone is None or backbone not in layers:
        raise UserError("Grad-CAM needs a resnet-builder classifier (a model with a backbone)",
                        hint="run without --cam for other models")
    at = layers.index(backbone)
    return layers[:at], backbone, layers[at + 1:]


def _gradcam_function(im: InferenceModel) -> Callable:
    """A tf.function: images -> (probabilities, Grad-CAM heatmaps of the top class).

    The classifier nests its backbone, so the last feature map is reached by
    applying the layers before it (normalisation), the backbone, then the head.
    The class score is the last Dense layer's pre-softmax logit (Selvaraju et al.
    use the score before the softmax, whose gradient vanishes when p is near 1).
    """
    import tensorflow as tf

    before, backbone, head = _split_classifier(im.model)
    last = head[-1]
    softmax_dense = (hasattr(last, "kernel") and getattr(last, "activation", None) is not None
                     and getattr(last.activation, "__name__", "") == "softmax")
    spec = tf.TensorSpec([None, im.image_size, im.image_size, im.channels], tf.float32)

    @tf.function(input_signature=[spec])
    def cam(images):
        x = images
        for layer in before:
            x = layer(x, training=False)
        with tf.GradientTape() as tape:
            features = backbone(x, training=False)
            tape.watch(features)
            h = features
            for layer in head[:-1]:
                h = layer(h, training=False)
            if softmax_dense:
                h32 = tf.cast(h, tf.float32)
                logits = tf.matmul(h32, tf.cast(last.kernel, tf.float32))
                if last.bias is not None:
                    logits += tf.cast(last.bias, tf.float32)
                probs = tf.nn.softmax(logits)
            else:
                probs = tf.cast(last(h, training=False), tf.float32)
                logits = probs
            top = tf.argmax(probs, axis=-1, output_type=tf.int32)
            score = tf.reduce_sum(tf.gather(logits, top, batch_dims=1))
        features = tf.cast(features, tf.float32)
        grads = tf.cast(tape.gradient(score, features), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        heat = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
        peak = tf.reduce_max(heat, axis=(1, 2), keepdims=True)
        heat = tf.math.divide_no_nan(heat, peak)
        return probs, heat

    return cam


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ImageSource:
    """One file to predict: where it is and what to call it in outputs."""

    file: Path
    path: str


@dataclass(frozen=True)
class Skipped:
    """A file (or source) that gave no prediction, with why."""

    path: str
    reason: str


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard ("imgs/**/*.png" -> imgs)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _rel(file: Path, base: Path) -> str:
    try:
        return file.relative_to(base).as_posix()
    except ValueError:
        return os.path.relpath(file, base).replace(os.sep, "/")


def _folder_files(folder: Path, base: Path) -> Iterator[ImageSource | Skipped]:
    """Image files below ``folder`` (sorted); other files as skips."""
    files = sorted(walk_files(folder), key=lambda p: p.relative_to(folder).as_posix())
    for file in files:
        rel = _rel(file, base)
        if is_image_file(file):
            yield ImageSource(file, rel)
        else:
            yield Skipped(rel, f"not an image file (extension {file.suffix or 'none'!r})")


def collect_images(sources: str | os.PathLike | Iterable[str | os.PathLike]
                   ) -> tuple[list[ImageSource], list[Skipped]]:
    """Files to predict from files, folders (recursive) and globs, in the order given.

    A file reached twice (a folder and a glob inside it) is predicted once.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[ImageSource] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()

    def add(item: ImageSource | Skipped) -> None:
        if isinstance(item, Skipped):
            skipped.append(item)
            return
        key = os.path.realpath(item.file)
        if key not in seen:
            seen.add(key)
            found.append(item)

    for source in sources:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            for item in _folder_files(path, path):
                add(item)
        elif path.is_file():
            add(ImageSource(path, str(path.resolve())))
        elif glob.has_magic(text):
            base = _glob_base(text)
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                skipped.append(Skipped(text, "no file matches this pattern"))
            for match in map(Path, matches):
                if match.is_dir():
                    for item in _folder_files(match, base):
                        add(item)
                elif not match.name.startswith("."):
                    add(ImageSource(match, _rel(match, base)))
        else:
            skipped.append(Skipped(text, "file or folder not found"))
    return found, skipped


# --------------------------------------------------------------------------- pipeline


def _unexpected(exc: BaseException) -> str:
    return f"cannot decode ({type(exc).__name__}: {exc})"


def decoded_batches(files: Sequence[os.PathLike | str], size: int, channels: int,
                    batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Batches of (indices of good files, uint8 images [b, S, S, C], [(index, reason)]).

    Files are decoded in a parallel tf.data map, in order; at most a few batches
    are in memory at once.
    """
    import tensorflow as tf

    if not files:
        return
    files = list(files)
    blank = np.zeros((size, size, channels), np.uint8)

    def load(index: np.ndarray) -> tuple[np.ndarray, np.bool_, bytes]:
        try:
            return prepare_image(files[int(index)], size, channels), np.bool_(True), b""
        except ImageError as exc:
            return blank, np.bool_(False), exc.reason.encode("utf-8", "replace")
        except Exception as exc:  # anything a decoder throws must skip only this file
            return blank, np.bool_(False), _unexpected(exc).encode("utf-8", "replace")

    def element(index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        image, ok, reason = tf.numpy_function(load, [index], [tf.uint8, tf.bool, tf.string],
                                              stateful=False)
        image.set_shape((size, size, channels))
        ok.set_shape(())
        reason.set_shape(())
        return index, image, ok, reason

    dataset = tf.data.Dataset.range(len(files))
    dataset = dataset.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    for index, image, ok, reason in dataset.as_numpy_iterator():
        good = ok.astype(bool)
        bad = [(int(i), r.decode("utf-8", "replace")) for i, r in
               zip(index[~good], reason[~good], strict=True)]
        yield index[good], image[good], bad


# --------------------------------------------------------------------------- records


@dataclass
class Prediction:
    """One image's prediction: the top class and the top-k (label, probability) pairs."""

    path: str
    label: str
    probability: float
    top_k: list[tuple[str, float]]
    class_index: int
    file: Path | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "probability": self.probability,
                "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k]}


class Predictions(list):
    """A list of ``Prediction``; ``skipped`` lists the files that gave none, with reasons."""

    def __init__(self, records: Iterable[Prediction] = (), skipped: Iterable[Skipped] = (),
                 seconds: float = 0.0, model: str = "") -> None:
        super().__init__(records)
        self.skipped = list(skipped)
        self.seconds = seconds
        self.model = model

    @property
    def images_per_second(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else 0.0


def iter_predictions(im: InferenceModel, images: Sequence[ImageSource], *, top_k: int = 5,
                     batch_size: int = 64, cam: bool = False
                     ) -> Iterator[Prediction | Skipped]:
    """Predictions (and skips) in file order, batch by batch."""
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be >= 1, got {top_k}, {batch_size}")
    k = min(top_k, im.num_classes)
    files = [s.file for s in images]
    for good, pixels, bad in decoded_batches(files, im.image_size, im.channels, batch_size):
        pending: dict[int, Prediction | Skipped] = {
            i: Skipped(images[i].path, reason) for i, reason in bad}
        if len(good):
            if cam:
                probs, heat = im.gradcam(pixels)
            else:
                probs, heat = im.probabilities(pixels), None
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for row, i in enumerate(good):
                top = [(im.labels[c], float(probs[row, c])) for c in order[row]]
                pending[int(i)] = Prediction(
                    path=images[i].path, label=top[0][0], probability=top[0][1], top_k=top,
                    class_index=int(order[row, 0]), file=images[i].file,
                    heatmap=None if heat is None else heat[row])
        for i in sorted(pending):
            yield pending[i]


def predict(model: Any, paths: str | os.PathLike | Iterable[str | os.PathLike], top_k: int = 5,
            batch_size: int = 64) -> Predictions:
    """Predict image files (files, folders, globs) with a model object, file or run folder.

    Returns a list of ``Prediction`` records (path, label, probability, top_k);
    ``result.skipped`` lists unreadable files with the reason.
    """
    im = model if isinstance(model, InferenceModel) else load_inference_model(model)
    images, skipped = collect_images(paths)
    start = time.perf_counter()
    records = []
    for item in iter_predictions(im, images, top_k=top_k, batch_size=batch_size):
        (skipped if isinstance(item, Skipped) else records).append(item)
    return Predictions(records, skipped, time.perf_counter() - start, im.source)


# ---------------------------------------------------------------------------- outputs


def csv_columns(k: int) -> list[str]:
    """path, label, probability, then top1_label, top1_probability, ... topk_probability."""
    columns = ["path", "label", "probability"]
    for i in range(1, k + 1):
        columns += [f"top{i}_label", f"top{i}_probability"]
    return columns


def csv_row(p: Prediction) -> list[Any]:
    row: list[Any] = [p.path, p.label, f"{p.probability:.6f}"]
    for label, prob in p.top_k:
        row += [label, f"{prob:.6f}"]
    return row


def write_skipped(path: Path, skipped: Sequence[Skipped]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows([s.path, s.reason] for s in skipped)
    atomic_write_bytes(path, buf.getvalue().encode())


class _Names:
    """Output file names mirroring the relative paths, never the same name twice."""

    def __init__(self, root: Path, suffix: str = ".png") -> None:
        self.root = root
        self.suffix = suffix
        self.used: set[str] = set()

    def __call__(self, rel: str) -> Path:
        given = Path(rel)
        parts = [given.name] if given.is_absolute() else [
            p for p in given.parts if p not in ("", ".", "..")]
        name = "/".join(parts) or "image"
        if not name.lower().endswith(self.suffix):
            name += self.suffix
        stem, n, candidate = name[:-len(self.suffix)], 2, name
        while candidate.lower() in self.used:
            candidate = f"{stem}~{n}{self.suffix}"
            n += 1
        self.used.add(candidate.lower())
        return self.root / candidate


def _display_pixels(file: Path, channels: int, lo: int = 160, hi: int = 512) -> np.ndarray:
    """The image as RGB uint8 for viewing: small ones enlarged (nearest), big ones shrunk."""
    from PIL import Image

    pixels = load_image(file, 3 if channels == 3 else 1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    h, w = pixels.shape[:2]
    side = max(h, w)
    if side < lo:
        f = max(1, lo // side)
        return np.repeat(np.repeat(pixels, f, axis=0), f, axis=1)
    if side > hi:
        scale = hi / side
        img = Image.fromarray(pixels).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                             Image.Resampling.BILINEAR)
        return np.asarray(img)
    return pixels


def cam_overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A jet-coloured heatmap (stretched to the image, bilinear) blended over RGB pixels."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = pixels.shape[:2]
    heat = Image.fromarray(np.clip(heatmap * 255.0, 0, 255).astype(np.uint8))
    heat = np.asarray(heat.resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255.0
    colour = colormaps["jet"](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * pixels.astype(np.float32) + alpha * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def write_cam(path: Path, file: Path, heatmap: np.ndarray, channels: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(cam_overlay(_display_pixels(file, channels), heatmap))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def contact_sheet(path: Path, records: Sequence[Prediction], channels: int,
                  total: int | None = None) -> None:
    """A grid PNG of the images titled with the predicted label and probability."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(records)
    cols = min(10, max(1, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cols * 1.6, rows * 1.8 + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, rec in enumerate(records):
        ax = fig.add_subplot(rows, cols, i + 1)
        try:
            pixels = _display_pixels(rec.file, channels, lo=1, hi=256)
        except ImageError:
            pixels = np.zeros((8, 8, 3), np.uint8)
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(f"{rec.label} {rec.probability:.2f}", fontsize=8)
        ax.set_xlabel(_short(rec.path), fontsize=5)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = f"{n} of {total} images" if total and total > n else f"{n} images"
    fig.suptitle(f"predictions ({shown}): label probability", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


@dataclass
class PredictReport:
    """What ``predict_to_folder`` did."""

    folder: Path
    model: str
    predicted: int
    skipped: list[Skipped]
    seconds: float
    output: Path
    grid: Path | None = None
    cam_folder: Path | None = None
    shown: list[Prediction] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def predict_to_folder(sources: Sequence[str], model: Any = None, *, top_k: int = 5,
                      batch_size: int = 64, fmt: str = "csv", grid: bool = False,
                      grid_max: int = GRID_MAX, cam: bool = False,
                      project: str | os.PathLike = DEFAULT_PROJECT, name: str = "exp",
                      exist_ok: bool = False, show: int = 20,
                      on_model: Callable[[InferenceModel], None] | None = None
                      ) -> PredictReport:
    """Predict ``sources`` into a new run folder; raises UserError if nothing was predicted."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    im = load_inference_model(model)
    if on_model is not None:
        on_model(im)
    if cam:
        _split_classifier(im.model)  # fail before any work when Grad-CAM cannot apply
    images, skipped = collect_images(sources)
    folder = new_run_dir(project, name, exist_ok)
    k = min(top_k, im.num_classes)
    out_file = folder / f"predictions.{fmt}"
    cam_names = _Names(folder / "cam") if cam else None
    for_grid: list[Prediction] = []
    shown: list[Prediction] = []
    predicted = 0
    start = time.perf_counter()
    with atomic_open(out_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n") if fmt == "csv" else None
        if writer:
            writer.writerow(csv_columns(k))
        else:
            f.write("[")
        for item in iter_predictions(im, images, top_k=k, batch_size=batch_size, cam=cam):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            if writer:
                writer.writerow(csv_row(item))
            else:
                f.write(("," if predicted else "") + "\n  " + json.dumps(item.as_dict()))
            if cam_names is not None and item.heatmap is not None and item.file:
                write_cam(cam_names(item.path), item.file, item.heatmap, im.channels)
                item.heatmap = None
            if grid and len(for_grid) < grid_max:
                for_grid.append(item)
            if len(shown) < show:
                shown.append(item)
            predicted += 1
        if not writer:
            f.write("\n]\n" if predicted else "]\n")
    seconds = time.perf_counter() - start
    write_skipped(folder / "skipped.csv", skipped)
    report = PredictReport(folder=folder, model=im.source, predicted=predicted, skipped=skipped,
                           seconds=seconds, output=out_file, shown=shown,
                           cam_folder=folder / "cam" if cam and predicted else None)
    if predicted == 0:
        raise UserError(_nothing_message(skipped, folder),
                        hint="pass image files, folders or globs (jpg, png, bmp, gif)")
    if grid:
        report.grid = folder / "grid.png"
        contact_sheet(report.grid, for_grid, im.channels, total=predicted)
    return report


def _nothing_message(skipped: Sequence[Skipped], folder: Path, shown: int = 10) -> str:
    if not skipped:
        return "nothing could be predicted: no files were found"
    lines = [f"nothing could be predicted: all {len(skipped)} file(s) were skipped "
             f"(listed in {folder / 'skipped.csv'}):"]
    lines += [f"  {s.path}: {s.reason}" for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)
