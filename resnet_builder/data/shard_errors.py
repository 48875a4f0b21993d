"""A packed shard TensorFlow's record reader cannot read (truncated or corrupt, e.g. a
partial copy): the user's to fix, so a ``UserError`` rather than a crash. Kept apart from
``tfrecord`` so the CLI's error sorting and the loop import it without the source itself."""

from __future__ import annotations

import re

import tensorflow as tf

from resnet_builder.data.pack_format import SHARD_PATTERN
from resnet_builder.errors import UserError


def damaged_shard_error(exc: BaseException, folder: str | None = None) -> UserError | None:
    """TensorFlow's record reader failing on a shard (``DataLossError``: truncated or
    corrupt, e.g. a partial copy) as a ``UserError``, since the fix is the user's: copy or
    pack again; ``folder``: the packed folder, named in the message. None for anything else
    (other data-loss errors, e.g. a damaged checkpoint)."""
    text = str(getattr(exc, "message", exc))
    reason = re.search(r"(?:truncated|corrupted) record at \d+", text)
    if not isinstance(exc, tf.errors.DataLossError) or reason is None:
        return None
    shard = re.search(SHARD_PATTERN, text)
    where = f"shard {shard.group(0)}" if shard else "shard"
    return UserError(f"a packed {where} under {folder or 'data.path'} is damaged (truncated "
                     "or corrupt): "
                     f"TensorFlow reports {reason.group(0)}",
                     hint="copy the whole packed folder again, or re-run `resnet-builder pack "
                          "FOLDER OUT --overwrite`")
