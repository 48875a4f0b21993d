"""Finding images in class folders: the one scanner for training, evaluation and export.

``ROOT/<class>/...images`` (sub-folders of a class folder included) is the
layout every command reads; the class name is the folder name. The scanner only
lists; each caller applies its own rules (training needs two or more classes,
each with an image; evaluation matches names against a model's classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from resnet_builder.data.images import (
    NOT_A_FILE,
    folder_left_out,
    has_utf8_name,
    shown_path,
    walk_names,
    why_not_readable,
)
from resnet_builder.errors import UserError


@dataclass
class ClassFolders:
    """Image files per class (classes and files in a stable, sorted order) and what was left out."""

    root: Path
    classes: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)

    @property
    def names(self) -> list[str]:
        return list(self.classes)

    def unreadable_folder(self, error: OSError) -> None:
        """A folder that cannot be listed: its files are left out, and said so."""
        self.skipped.append((Path(shown_path(error.filename or "?")), folder_left_out(error)))


    def not_a_file(self, path: str) -> None:
        """A named pipe, socket or device among the images: skipped, never read."""
        self.skipped.append((Path(shown_path(path)), NOT_A_FILE))


def scan_class_folders(root: str | os.PathLike) -> ClassFolders:
    """Every class folder of ``root`` with its image files; loose and non-image files skipped.

    Hidden entries are ignored. A class folder with no images is kept with an
    empty list, so the caller can say which one it is.
    """
    root = Path(root)
    found = ClassFolders(root)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            found.skipped.append((Path(shown_path(entry)), "not inside a class folder"))
            continue
        if not has_utf8_name(entry.name):
            raise UserError(f"class folder {shown_path(entry)}: its name is not valid UTF-8",
                            hint="rename the folder: class names are stored in the model")
        images: list[Path] = []
        for _, full in sorted(walk_names(entry, found.unreadable_folder, found.not_a_file,
                                         fence=root)):
            reason = why_not_readable(full)
            if reason is None:
                images.append(Path(full))
            else:
                found.skipped.append((Path(shown_path(full)), reason))
        found.classes[entry.name] = images
    return found
