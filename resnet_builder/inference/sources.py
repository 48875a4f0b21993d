"""Which files to predict: files, folders (recursive) and globs, and the files left out.

* ``path`` in the outputs is relative to the source it was found through (a folder
  or the fixed part of a glob), or absolute for a file named on its own, so files
  of the same name in different sub-folders stay distinct. When two sources would
  still give the same ``path`` (``"a/*.jpg" "a/sub/*.jpg"`` both give ``x.jpg``), every
  relative ``path`` becomes relative to the common parent folder of those files
  (``x.jpg``, ``sub/x.jpg``), so each row names one file.
* Inside a folder, files without an image extension are skipped with that reason
  (hidden files are ignored). A file named explicitly is tried whatever its
  extension.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from resnet_builder.data.images import (
    NAME_NOT_UTF8,
    NOT_A_FILE,
    folder_left_out,
    has_utf8_name,
    shown_path,
    walk_names,
    why_not_readable,
)
from resnet_builder.runs import write_skipped_csv


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


def write_skipped(path: Path, skipped: Sequence[Skipped]) -> None:
    """skipped.csv: path, reason (predict and evaluate write it)."""
    write_skipped_csv(path, [(s.path, s.reason) for s in skipped])


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard ("imgs/**/*.png" -> imgs)."""
    fixed = []
    for part in Path(pattern).parts:
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
    others: list[str] = []  # pipes, sockets, devices: never read (a pipe waited forever)
    left_out: list[OSError] = []  # no permission, a link back up the tree: said, not silent
    files = sorted(walk_names(folder, left_out.append, others.append))
    for full in sorted(others):
        yield Skipped(shown_path(_rel(Path(full), base)), NOT_A_FILE)
    for error in left_out:
        yield Skipped(shown_path(_rel(Path(error.filename or "?"), base)), folder_left_out(error))
    for _, full in files:
        file = Path(full)
        rel = _rel(file, base)
        reason = why_not_readable(file)
        if reason is None:
            yield ImageSource(file, rel)
        else:
            yield Skipped(shown_path(rel), reason)


def _glob_files(pattern: str) -> Iterator[ImageSource | Skipped]:
    """The files a glob matches (folders it matches, recursively), relative to its fixed part."""
    given, pattern = pattern, os.path.expanduser(pattern)  # the base and matches both expanded
    base = _glob_base(pattern)
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        yield Skipped(given, "no file matches this pattern")
    for match in map(Path, matches):
        if match.is_dir():
            yield from _folder_files(match, base)
        elif not has_utf8_name(match):
            yield Skipped(shown_path(_rel(match, base)), NAME_NOT_UTF8)
        elif not match.name.startswith("."):
            yield _named_file(match, _rel(match, base))


def _named_file(path: Path, shown: str) -> ImageSource | Skipped:
    """A file named by a glob or on its own; a pipe, socket or device is never read (a pipe
    named x.png waited forever, also behind a link)."""
    if path.is_file() or not path.exists():  # a missing link target: the read says so
        return ImageSource(path, shown)
    return Skipped(shown, NOT_A_FILE)


def _source_files(source: str | os.PathLike) -> Iterator[ImageSource | Skipped]:
    """What one source names: a folder's files, a file, a glob's matches, or a skip."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        yield from _folder_files(path, path)
    elif path.is_file() and not has_utf8_name(path.resolve()):
        yield Skipped(shown_path(text), NAME_NOT_UTF8)
    elif path.is_file() or path.exists():
        yield _named_file(path, os.path.abspath(path))  # a link as given, not its target
    elif glob.has_magic(text):
        yield from _glob_files(text)
    else:
        yield Skipped(text, "file or folder not found")


def _distinct_paths(found: list[ImageSource]) -> list[ImageSource]:
    """Relabel relative paths against their common parent if two sources gave the same one.

    Compared case-insensitively, as the Grad-CAM file names that mirror them are.
    """
    relative = [i for i, s in enumerate(found) if not os.path.isabs(s.path)]
    names = [found[i].path.lower() for i in relative]
    if len(set(names)) == len(names):
        return found  # no collision: keep each source's own relative paths
    files = {i: os.path.abspath(found[i].file) for i in relative}
    try:
        base = os.path.commonpath(list(files.values()))
    except ValueError:  # different drives: absolute paths are distinct anyway
        return [replace(s, path=files.get(i, s.path)) for i, s in enumerate(found)]
    return [replace(s, path=_rel(Path(files[i]), Path(base))) if i in files else s
            for i, s in enumerate(found)]


def collect_images(sources: str | os.PathLike | Iterable[str | os.PathLike]
                   ) -> tuple[list[ImageSource], list[Skipped]]:
    """Files to predict from files, folders (recursive) and globs, in the order given.

    A file reached twice (a folder and a glob inside it) is predicted once (two links to
    one file are two files, as the user named them: one of them vanished); file names
    that two sources share are told apart (``_distinct_paths``).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[ImageSource] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for source in sources:
        for item in _source_files(source):
            if isinstance(item, Skipped):
                skipped.append(item)
            elif (key := os.path.abspath(item.file)) not in seen:  # links stay apart
                seen.add(key)
                found.append(item)
    return _distinct_paths(found), skipped
