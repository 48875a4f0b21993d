"""Read one image file into a uint8 array with Pillow: the reference decoder.

TensorFlow's kernels (``decode.py``) decode what they read exactly like ``load_image``;
Pillow itself reads what they cannot (16-bit, palette transparency, WebP, TIFF, EXIF
rotation) and checks files up front (``data.verify``, ``pack``). Resizing to the model's
input is ``resizing.fit_image``, the same for every source and command.

Choices, stated once:

* Transparency is composited on **white** (not dropped): the colour stored under
  fully transparent pixels is arbitrary (often black or noise), while white is what
  a viewer shows for icons and scans with a transparent background.
* 16-bit images (``I;16`` and ``I``) are scaled to 8 bit with ``round(v * 255 / 65535)``,
  so a full-range 16-bit image stays full range instead of clipping to white.
* RGB to grayscale uses ITU-R 601-2 luma with Pillow's integer rounding, in numpy, so
  arrays (CIFAR, npz) and files give identical gray values.
* The EXIF orientation of photos is applied, so phone pictures are upright.
* Decoding is forced (``Image.load``), so truncated files fail here, not mid-training.
* Hidden files and folders (names starting with ``.``) are ignored by the finders.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_builder.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IMAGE_KINDS = "jpg, png, bmp, gif, webp or tiff"  # how hints name IMAGE_EXTENSIONS

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = {"RGBA": "RGBA", "RGBa": "RGBA", "LA": "LA", "La": "LA", "PA": "RGBA"}


class ImageError(UserError):
    """One image file that cannot be used; ``reason`` is short enough for a skip list."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}",
                         hint="replace or remove the file")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def not_an_image(path: str | os.PathLike) -> str:
    """Why a file without an image extension is left out (skipped.csv's reason)."""
    extension = os.path.splitext(os.fspath(path))[1]
    return f"not an image file (extension {extension or 'none'!r})"


NAME_NOT_UTF8 = "its name is not valid UTF-8 (rename the file)"


def has_utf8_name(path: str | os.PathLike) -> bool:
    """False for a path with bytes that are not UTF-8 (Python keeps them as surrogates):
    TensorFlow's string tensors, run files and model configs cannot hold such a path."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: str | os.PathLike) -> str:
    """A path as printable UTF-8 text: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def why_not_readable(path: str | os.PathLike) -> str | None:
    """Why a listed file is left out before any decoding (skipped.csv's reason), or None."""
    if not has_utf8_name(path):
        return NAME_NOT_UTF8
    return None if is_image_file(path) else not_an_image(path)


def walk_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every non-hidden file below ``root``, following folder links once (no loops)."""
    for _, full in walk_names(root):
        yield Path(full)


def walk_names(root: str | os.PathLike, unreadable: Callable[[OSError], None] | None = None,
               irregular: Callable[[str], None] | None = None,
               fence: str | os.PathLike | None = None) -> Iterator[tuple[str, str]]:
    """(path relative to ``root`` with '/', full path) of ``walk_files``, as plain strings:
    listing 20,000 files as ``Path`` objects took 0.9 s, most of a streamed folder's start.
    ``unreadable`` hears of each folder that cannot be listed (no permission), whose files
    would otherwise be left out without a word, and of each folder link back up the tree
    (to a folder being walked or above ``root``: followed, a link in class a to the data
    folder listed class b's images as a's too), which is never followed; ``irregular`` of
    each named pipe, socket or device (its full path), which is never listed: reading a
    pipe named x.png waited forever. The entry types come with the listing
    (``os.scandir``), so this costs no ``stat`` per file, which on network storage is a
    round trip each; a folder link costs one ``realpath``. ``fence`` (the data folder, when
    ``root`` is one class folder of it): a link to anywhere else inside it is not followed
    either (from class a into class b, it listed b's images as a's too)."""
    seen: set[str] = set()
    top = os.path.realpath(root)
    outside = None if fence is None else _walled_off(os.path.realpath(fence), top)
    pending = [(os.fspath(root), "", (top,))]  # (folder, prefix, real paths walked to it)
    while pending:
        folder, prefix, chain = pending.pop()
        if chain[-1] in seen:  # reached again through a link to a sibling: listed once
            continue
        seen.add(chain[-1])
        try:
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
        except OSError as exc:
            if unreadable is not None:
                unreadable(exc)
            continue
        below = []
        for entry in entries:
            kind = _entry_kind(entry)
            if kind == "folder":
                real = os.path.join(chain[-1], entry.name)
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    why = ("a link back up the tree, to " if _above_or_in(real, chain) else
                           "a link into another class folder, " if outside and outside(real)
                           else None)
                    if why is not None:
                        if unreadable is not None:
                            unreadable(OSError(errno.ELOOP, why + shown_path(real),
                                               entry.path))
                        continue
                below.append((entry.path, prefix + entry.name + "/", (*chain, real)))
            elif kind == "file":
                yield prefix + entry.name, entry.path
            elif irregular is not None:
                irregular(entry.path)
        pending.extend(reversed(below))


def folder_left_out(error: OSError) -> str:
    """The reason given for a folder ``walk_names`` did not list (``unreadable``)."""
    return f"folder cannot be read ({error.strerror}); its files are left out"


def _walled_off(fence: str, top: str) -> Callable[[str], bool]:
    """Whether a real folder is inside ``fence`` but not inside ``top`` (one class folder
    of the data folder ``fence``): another class's images."""
    def inside(folder: str, outer: str) -> bool:
        return folder == outer or folder.startswith(outer.rstrip(os.sep) + os.sep)

    return lambda target: inside(target, fence) and not inside(target, top)


def _above_or_in(target: str, chain: tuple[str, ...]) -> bool:
    """Whether the real folder ``target`` is one of the walked folders ``chain`` (real paths,
    the root's first) or above one of them: walking it would list them again, or forever."""
    inside = target.rstrip(os.sep) + os.sep
    return any(folder == target or folder.startswith(inside) for folder in chain)


def _entry_kind(entry: os.DirEntry) -> str:
    """folder, file (a regular file, or a link whose target is missing: its read names
    the problem) or other (a pipe, socket or device, also behind a link)."""
    try:
        if entry.is_dir():
            return "folder"
        if entry.is_file():
            return "file"
        if not entry.is_symlink():
            return "other"
        entry.stat()  # a link to something that is there and is neither: a pipe, a device
        return "other"
    except OSError:  # a missing target, a link loop, an entry gone since the listing
        return "file"


NOT_A_FILE = "not a regular file (a named pipe, socket or device)"


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files below ``root`` (recursive), sorted by path; a file is returned as is."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"no such file or folder: {root}", hint="check the path")
    found = [p for p in walk_files(root) if why_not_readable(p) is None]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Decode ``path`` fully into uint8 ``H x W x channels`` (1 or 3); raises ``ImageError``."""
    _check_channels(channels)
    _check_file(path)
    return _decode(path, str(path), channels)


def decode_image_bytes(data: bytes, channels: int, name: str = "<bytes>") -> np.ndarray:
    """``load_image`` for an encoded file already in memory (a TFRecord, the tf.data fallback)."""
    _check_channels(channels)
    if not data:
        raise ImageError(name, "empty file")
    return _decode(io.BytesIO(data), name, channels)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")


def _decode(source: str | os.PathLike | io.BytesIO, name: str, channels: int) -> np.ndarray:
    """Pillow decodes ``source`` (a path or bytes) completely; failures become ``ImageError``."""
    try:
        with Image.open(source) as img:
            img.seek(0)  # first frame of animations
            img.load()
            pixels = _to_array(_upright(img))
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (or an unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageError(name, "image too large (Pillow's decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(name, _decode_reason(exc)) from None
    return to_channels(pixels, channels)


def _check_file(path: str | os.PathLike) -> None:
    """Give the obvious reasons (missing, folder, empty, unreadable) before Pillow tries."""
    try:
        if os.path.isdir(path):
            raise ImageError(path, "is a folder, not a file")
        if os.path.getsize(path) == 0:
            raise ImageError(path, "empty file")
        if not os.access(path, os.R_OK):
            raise ImageError(path, "permission denied")
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None


def _decode_reason(exc: BaseException) -> str:
    """A short reason for a decoder failure."""
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated file"
    return f"corrupt image data ({text or type(exc).__name__})"


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block only loses the rotation."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # odd EXIF must not make a good image unreadable
        return img


def _to_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to uint8 ``H x W x C`` with C = 1 (gray) or 3 (RGB), alpha removed."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _scale_16bit(np.asarray(img))[..., None]
    if mode == "P" and "transparency" in img.info:
        mode = "PA"
    if mode in _ALPHA_MODES:
        return composite_on_white(np.asarray(img.convert(_ALPHA_MODES[mode])))
    if mode in ("1", "L", "F"):
        return np.asarray(img.convert("L"))[..., None]
    return np.asarray(img.convert("RGB"))


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """16-bit range to 8 bit with rounding: 0 -> 0, 257 -> 1, 65535 -> 255."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def composite_on_white(pixels: np.ndarray) -> np.ndarray:
    """Drop the last (alpha) channel by blending onto white: ``c*a + 255*(1-a)``, rounded."""
    color = pixels[..., :-1].astype(np.uint32)
    alpha = pixels[..., -1:].astype(np.uint32)
    blended = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``... x C`` (C = 1, 3) to ``... x channels``: gray is repeated, RGB becomes luma."""
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1:
        return np.repeat(pixels, channels, axis=-1)
    if have == 3 and channels == 1:
        rgb = pixels.astype(np.uint32)
        luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    raise ValueError(f"cannot convert {have} channels to {channels}")


def resize_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bilinear resize of uint8 ``H x W x C`` to ``size x size``, stretched.

    For ``pack``'s statistics thumbnails only; model inputs go through ``resizing.fit_image``.
    """
    height, width, channels = pixels.shape
    if (height, width) == (size, size):
        return pixels
    img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    out = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
    return out.reshape(size, size, channels)
