"""Pictures predict draws: the contact sheet (grid.png) and Grad-CAM overlays (cam/).

Files written per image (Grad-CAM) mirror the relative paths of the outputs, so
files of the same name in different sub-folders stay distinct.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_builder.data.images import ImageError, load_image
from resnet_builder.files import atomic_write_bytes
from resnet_builder.plots import literal, new_figure, save_figure

if TYPE_CHECKING:
    from resnet_builder.data.resizing import Resize
    from resnet_builder.inference.predict import Prediction
    from resnet_builder.inference.sources import ImageSource


class MirroredNames:
    """Output file names mirroring the relative paths, never the same name twice.

    An image whose name ends in ``suffix`` keeps it (``a.png``); another gets the suffix
    added (``a.jpg.png``), unless that is the name of one of ``images`` too: then
    ``a.jpg~2.png``, so ``a.jpg.png`` never holds the picture of ``a.jpg``."""

    def __init__(self, root: Path, images: Iterable[ImageSource] = (),
                 suffix: str = ".png") -> None:
        self.root = root
        self.suffix = suffix
        self.used: set[str] = set()
        self.own = {name.lower() for name in map(self._mirrored, (i.path for i in images))
                    if name.lower().endswith(suffix)}

    @staticmethod
    def _mirrored(rel: str) -> str:
        given = Path(rel)
        parts = [given.name] if given.is_absolute() else [
            p for p in given.parts if p not in ("", ".", "..")]
        return "/".join(parts) or "image"

    def __call__(self, rel: str) -> Path:
        name = self._mirrored(rel)
        keeps = name.lower().endswith(self.suffix)
        if not keeps:
            name += self.suffix
        stem, n, candidate = name[:-len(self.suffix)], 2, name
        while candidate.lower() in self.used or (not keeps and candidate.lower() in self.own):
            candidate = f"{stem}~{n}{self.suffix}"
            n += 1
        self.used.add(candidate.lower())
        return self.root / candidate


def display_pixels(file: Path, channels: int, lo: int = 160, hi: int = 512, *,
                   with_source_shape: bool = False):
    """The image as RGB uint8 for viewing: small ones enlarged (nearest), big ones shrunk
    (and, ``with_source_shape``, the file's own height and width beside them)."""
    from PIL import Image

    pixels = load_image(file, 3 if channels == 3 else 1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    h, w = pixels.shape[:2]
    side = max(h, w)
    if side < lo:
        f = max(1, lo // side)
        pixels = np.repeat(np.repeat(pixels, f, axis=0), f, axis=1)
    elif side > hi:
        scale = hi / side
        img = Image.fromarray(pixels).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                             Image.Resampling.BILINEAR)
        pixels = np.asarray(img)
    return (pixels, (h, w)) if with_source_shape else pixels


def cam_overlay(pixels: np.ndarray, heatmap: np.ndarray, how: Resize | None = None,
                source_shape: tuple[int, int] | None = None, alpha: float = 0.45) -> np.ndarray:
    """A jet-coloured heatmap blended over RGB pixels where the model looked.

    The heatmap is over the model's input, so it goes back through the resize rule the
    model was trained with (``how``, of an image of ``source_shape``): stretched over the
    whole image, over the centre square a crop kept (the rest, unseen, dimmed), or with a
    pad's borders cut off first. Stretching it over the whole image put a crop model's
    heat on parts it never saw.
    """
    from matplotlib import colormaps

    h, w = pixels.shape[:2]
    heat, seen = _placed_heat(heatmap, how, source_shape or (h, w), (h, w))
    colour = colormaps["jet"](heat)[..., :3] * 255.0
    weight = np.where(seen, alpha, 0.0)[..., None]
    blended = (1.0 - weight) * pixels.astype(np.float32) + weight * colour
    blended = np.where(seen[..., None], blended, blended * 0.5)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _stretched(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """float [0, 1] values resized bilinearly to (height, width)."""
    from PIL import Image

    image = Image.fromarray(np.clip(values * 255.0, 0, 255).astype(np.uint8))
    resized = image.resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.float32) / 255.0


def _placed_heat(heatmap: np.ndarray, how: Resize | None, source: tuple[int, int],
                 shown: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(heat [h, w], seen [h, w] bool) over the shown image, by the model's resize rule
    (``resizing``'s ``pad_box`` and ``centre_window``, on the source's height and width)."""
    h, w = shown
    seen = np.ones((h, w), bool)
    if how is None or how.mode == "stretch":
        return _stretched(heatmap, h, w), seen
    import tensorflow as tf  # the rule itself (resizing), not a copy of its arithmetic

    from resnet_builder.data.resizing import centre_window, pad_box

    heat = _stretched(heatmap, how.size, how.size)
    src_h, src_w = source
    if how.mode == "pad":
        out_h, out_w, top, left = (int(v) for v in pad_box(src_h, src_w, how))
        return _stretched(heat[top:top + out_h, left:left + out_w], h, w), seen
    start, extent = centre_window(tf.constant([src_h, src_w]), how)
    (top, left), side = (int(v) for v in start), int(extent[0])
    y0, y1 = round(top * h / src_h), round((top + side) * h / src_h)
    x0, x1 = round(left * w / src_w), round((left + side) * w / src_w)
    placed = np.zeros((h, w), np.float32)
    placed[y0:y1, x0:x1] = _stretched(heat, y1 - y0, x1 - x0)[:y1 - y0, :x1 - x0]
    seen[:] = False
    seen[y0:y1, x0:x1] = True
    return placed, seen


def write_cam(path: Path, file: Path, heatmap: np.ndarray, channels: int,
              how: Resize | None = None) -> None:
    """The Grad-CAM overlay of one image file as a PNG (folders created as needed)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels, source_shape = display_pixels(file, channels, with_source_shape=True)
    image = Image.fromarray(cam_overlay(pixels, heatmap, how, source_shape))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def contact_sheet(path: Path, records: Sequence[Prediction], channels: int,
                  total: int | None = None) -> None:
    """A grid PNG of the images titled with the predicted label and probability."""
    n = len(records)
    cols = min(10, max(1, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(cols * 1.6, rows * 1.8 + 0.4)
    for i, rec in enumerate(records):
        ax = fig.add_subplot(rows, cols, i + 1)
        try:
            pixels = display_pixels(rec.file, channels, lo=1, hi=256)
        except ImageError:
            pixels = np.zeros((8, 8, 3), np.uint8)
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(literal(_title(rec)), fontsize=8)
        ax.set_xlabel(literal(_short(rec.path)), fontsize=5)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = f"{n} of {total} images" if total and total > n else f"{n} images"
    fig.suptitle(f"predictions ({shown}): label probability", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _title(rec: Prediction) -> str:
    """The tile's answer: the top class, or a multilabel model's labels at the threshold
    (the top class alone showed a label predictions.csv did not give)."""
    if rec.labels is None:
        return f"{rec.label} {rec.probability:.2f}"
    shown = ", ".join(f"{label} {p:.2f}" for label, p in rec.labels[:2])
    more = f" +{len(rec.labels) - 2}" if len(rec.labels) > 2 else ""
    return shown + more if shown else "(no label)"


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
