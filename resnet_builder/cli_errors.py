"""Failures the CLI recognises as the user's or the machine's, not bugs in resnet-builder.

``known_failure`` is asked about any exception that is not a ``UserError``: a packed shard
cut short, a path the system refused, memory that ran out. ``None`` means a bug.
"""

from __future__ import annotations

import errno
import re
import sys

from resnet_builder.errors import UserError


def known_failure(exc: Exception) -> UserError | None:
    """The message and hint for an exception that is not a bug, else None."""
    return damaged_shard(exc) or machine_problem(exc) or unknown_file_system(exc)


def machine_problem(exc: Exception) -> UserError | None:
    """A file the system refused (read-only, missing folder, no permission, disk full) or
    memory that ran out: the machine's answer to what was asked, not a bug."""
    if isinstance(exc, MemoryError):
        return UserError(f"out of memory ({exc or 'MemoryError'})",
                         hint="ask for a smaller model, batch or image size")
    denied = "tensorflow" in sys.modules and isinstance(
        exc, sys.modules["tensorflow"].errors.PermissionDeniedError)
    if (isinstance(exc, OSError) and exc.filename is not None) or denied:
        where = exc.message if denied else f"{exc.filename}: {exc.strerror}"
        return UserError(f"cannot use {where}", hint=path_hint(None if denied else exc.errno))
    return None


def unknown_file_system(exc: Exception) -> UserError | None:
    """A URL whose scheme TensorFlow has no file system for (``s3://``, a typo): the path
    the user gave, not a bug. TensorFlow itself opens local paths and ``gs://``."""
    found = re.search(r"File system scheme '([^']*)' not implemented", str(exc))
    if found is None:
        return None
    return UserError(f"TensorFlow cannot open {found.group(1)}:// paths here ({exc})",
                     hint="use a local path or a gs:// URL (copy the data there); other "
                          "schemes need a TensorFlow file-system plugin", exit_code=2)


def path_hint(code: int | None, argument: str | None = None) -> str:
    """What to do about a path the system refused, by why it refused it. ``argument`` names
    the command-line argument the path was given as (pack's OUT): then where it came from is
    plain, and the place to change is that argument, not --project or a config key."""
    debug = "" if argument else "; RESNET_BUILDER_DEBUG=1 shows where the path came from"
    if code in (errno.ENOENT, errno.ENOTDIR):
        files = ", as folders (a file stands in the way)" if code == errno.ENOTDIR else ""
        return f"check that the path and its folders exist{files}{debug}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        elsewhere = f"another {argument}" if argument else "--project, --output, run.project"
        return f"free some space on that disk, or write elsewhere ({elsewhere})"
    if argument:
        return f"write somewhere you may (another {argument})"
    return ("write somewhere you may (--project, --output, run.project, or another current "
            "folder); if the path looks wrong, RESNET_BUILDER_DEBUG=1 shows where the path "
            "came from")


def damaged_shard(exc: Exception) -> UserError | None:
    """A truncated or corrupt packed shard is the user's to fix, not a bug. It surfaces from
    inside the training step (tf.data), so it is recognised here, where errors are sorted."""
    if "tensorflow" not in sys.modules:  # no TensorFlow error then; never import it for this
        return None
    from resnet_builder.data.shard_errors import damaged_shard_error

    return damaged_shard_error(exc)
