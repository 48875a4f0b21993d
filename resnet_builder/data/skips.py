"""What the streaming decoders remember about files between batches.

The files that could not be decoded (named at each epoch's end and in ``skipped.csv``) and
the ones Pillow had to read (``guarded``: the fast path hands them to Pillow directly), PNGs
named .jpg among them (``note_redone``). Keys are the split's file indices.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np


class SkipLog:
    """Thread-safe record of (key, reason) for elements that could not be decoded, and of
    the keys Pillow was asked for (``guarded``: the fast path gives them to Pillow)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[int, str]] = []
        self._pillow: set[int] = set()
        # Set by ``stream.fast_file_images`` when it decodes these files as JPEGs only.
        self.jpeg_only_files: list[str] | None = None

    def note_pillow(self, key: int) -> None:  # one set.add: atomic under the GIL
        self._pillow.add(key)

    def needed_pillow(self, keys: np.ndarray) -> np.ndarray:
        """bool per key: whether it went to Pillow before (broken, or only Pillow reads it)."""
        return np.array([key in self._pillow for key in keys.tolist()], bool)

    def note_redone(self, keys: np.ndarray) -> None:
        """``guarded_batches``' ``on_redo``: the keys of a batch the fast path failed on. Where
        it decodes only JPEGs, the files whose bytes are not one (a PNG saved as .jpg) go to
        Pillow from then on, so each fails the fast path once. Reads 3 bytes a file, and
        only for a batch that failed."""
        from resnet_builder.data.decode import is_jpeg_bytes  # decode imports this module

        files = self.jpeg_only_files
        if files is None:  # the format branch decodes such a file natively
            return
        for key in np.asarray(keys).reshape(-1).tolist():
            if 0 <= key < len(files):
                with contextlib.suppress(OSError), open(files[key], "rb") as file:
                    if not is_jpeg_bytes(file.read(3)):
                        self.note_pillow(key)

    def add(self, key: int, reason: str) -> None:
        with self._lock:
            self._entries.append((key, reason))

    def take(self) -> list[tuple[int, str]]:
        """Everything recorded since the last call, in the order it happened."""
        with self._lock:
            entries, self._entries = self._entries, []
        return entries


def all_skipped(split, class_names: list[str], skipped: set[str]) -> list[str]:
    """Names of the classes whose every file in a streamed ``split`` (``bundle.Split``) is
    in ``skipped``: the model cannot learn them. Streaming finds bad files as it meets
    them, where ``data.verify`` refused such a folder up front; this tells the user at the
    epoch end instead of training on in silence. One pass over the file names, only in an
    epoch that found new unreadable files."""
    if split is None or split.files is None or split.labels.ndim != 1 or not skipped:
        return []
    labels = np.asarray(split.labels)
    bad = np.fromiter((name in skipped for name in split.files), bool, len(split.files))
    total = np.bincount(labels, minlength=len(class_names))
    readable = np.bincount(labels[~bad], minlength=len(class_names))
    return [class_names[k] for k in np.flatnonzero((total > 0) & (readable == 0))]
