"""What the streaming decoders remember about files between batches.

The files that could not be decoded (named at each epoch's end and in ``skipped.csv``) and
the ones Pillow had to read (``guarded``: the fast path hands them to Pillow directly,
``stream.misnamed_to_pillow`` adds PNGs named .jpg). Keys are the split's file indices.
"""

from __future__ import annotations

import threading

import numpy as np


class SkipLog:
    """Thread-safe record of (key, reason) for elements that could not be decoded, and of
    the keys Pillow was asked for (``guarded``: the fast path gives them to Pillow)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[int, str]] = []
        self._pillow: set[int] = set()

    def note_pillow(self, key: int) -> None:  # one set.add: atomic under the GIL
        self._pillow.add(key)

    def needed_pillow(self, keys: np.ndarray) -> np.ndarray:
        """bool per key: whether it went to Pillow before (broken, or only Pillow reads it)."""
        return np.array([key in self._pillow for key in keys.tolist()], bool)

    def add(self, key: int, reason: str) -> None:
        with self._lock:
            self._entries.append((key, reason))

    def take(self) -> list[tuple[int, str]]:
        """Everything recorded since the last call, in the order it happened."""
        with self._lock:
            entries, self._entries = self._entries, []
        return entries
