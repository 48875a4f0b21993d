"""Pictures predict draws: the contact sheet (grid.png) and Grad-CAM overlays (cam/).

Files written per image (Grad-CAM) mirror the relative paths of the outputs, so
files of the same name in different sub-folders stay distinct.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_builder.data.images import ImageError, load_image
from resnet_builder.files import atomic_write_bytes
from resnet_builder.plots import new_figure, save_figure

if TYPE_CHECKING:
    from resnet_builder.inference.predict import Prediction


class MirroredNames:
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


def display_pixels(file: Path, channels: int, lo: int = 160, hi: int = 512) -> np.ndarray:
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
    """The Grad-CAM overlay of one image file as a PNG (folders created as needed)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(cam_overlay(display_pixels(file, channels), heatmap))
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
        ax.set_title(f"{rec.label} {rec.probability:.2f}", fontsize=8)
        ax.set_xlabel(_short(rec.path), fontsize=5)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = f"{n} of {total} images" if total and total > n else f"{n} images"
    fig.suptitle(f"predictions ({shown}): label probability", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
