"""Writing files atomically: the one writer every room uses.

A file is written under a temporary name in its own folder, flushed to disk and
renamed over the target (``os.replace``), so a process killed at any instant
leaves the old file or the new one, never half of one. The temporary file is
removed when writing fails. Pure Python: the model writer, the config dumper,
the trainer's run folder, plots and predict all write through here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); renamed onto ``path`` on success.

    The caller writes the temporary file however it likes (``model.save``,
    ``fig.savefig``, a streaming CSV writer); on any exception it is deleted and
    ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{os.urandom(3).hex()}{path.suffix}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # name the file the user asked for, not our temporary one
        if exc.filename is None or os.fspath(exc.filename) != os.fspath(tmp):
            raise
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
    finally:
        if tmp.is_file():
            tmp.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing, atomically: the file appears whole when the block ends."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def temporary_for(name: str) -> str | None:
    """The file a temporary ``name`` was to become (``atomic_path``'s ``.stem.tmpPID-HEX.suffix``,
    or ``name.tmpPID-HEX`` where pack writes a URL), else None: what a writer killed by
    kill -9 leaves behind, which nothing else would ever remove."""
    found = re.fullmatch(r"\.(.+)\.tmp\d+-[0-9a-f]{6}(\.\w+)?", name)
    if found:
        return found.group(1) + (found.group(2) or "")
    found = re.fullmatch(r"(.+)\.tmp\d+-[0-9a-f]{6}", name)
    return found.group(1) if found else None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, save: Callable[[str], None]) -> None:
    """Let ``save(temp_path)`` write (same suffix, same folder), then rename onto ``path``."""
    with atomic_path(path) as tmp:
        save(str(tmp))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
