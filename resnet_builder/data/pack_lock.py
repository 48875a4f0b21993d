"""Who may touch a local pack folder: ``pack`` writes it alone, training runs read it together.

A ``pack --overwrite`` into a folder a run was training from replaced its shards under it:
the run read the new records from its next epoch on, with other labels, and finished with
exit 0 (a review re-packed with one class more: 32 of 40 digits then came out as the digit
+ 1). Two packs into one folder at once left a mix of both. So ``pack`` holds an exclusive
``flock`` on ``OUT/.pack.lock`` while it writes, and a run reading the pack holds a shared one
for as long as its data bundle lives; whichever comes second is refused, naming the other.
``gs://`` and other URLs have no such lock (their readers check shard sizes at start).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import IO

from resnet_builder.data.pack_format import is_url
from resnet_builder.errors import UserError

LOCK_FILE = ".pack.lock"


def _open_lock(folder: str, create: bool, shared: bool = False) -> IO[bytes] | None:
    """The folder's lock file, opened (with ``create`` made if missing, where allowed); None
    when it cannot be, e.g. a pack on a read-only disk, where nobody can write either."""
    path = os.path.join(folder, LOCK_FILE)
    for mode in (("rb",) if shared else ()) + (("ab",) if create else ()):
        try:
            return open(path, mode)
        except OSError:
            continue
    return None


@contextlib.contextmanager
def writing_pack(out: str) -> Iterator[None]:
    """Hold ``out`` for ``pack`` alone, or refuse: a run reads it, or another pack writes it.
    A pack that fails removes the lock file it made (a refused pack left it in the folder)."""
    made = not is_url(out) and not os.path.exists(os.path.join(out, LOCK_FILE))
    lock = None if is_url(out) else _open_lock(out, create=True)
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{out} is in use: a training run reads this pack, or another "
                                "pack is writing it", hint="wait for it to end, or pack into "
                                "another folder", exit_code=2) from None
        yield
    except BaseException:
        if made and lock is not None:
            os.remove(os.path.join(out, LOCK_FILE))
        raise
    finally:
        if lock is not None:
            lock.close()


def reading_pack(folder: str, create: bool) -> IO[bytes] | None:
    """A shared hold on ``folder`` for a run reading it (kept open by its data bundle until
    the run closes it), or a refusal while ``pack`` writes it. None for URLs, for folders
    no lock file can be made in, and without ``create`` where there is none yet."""
    lock = None if is_url(folder) else _open_lock(folder, create=create, shared=True)
    if lock is None:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(f"{folder} is being written by resnet-builder pack",
                        hint="wait for the pack to finish, then train", exit_code=2) from None
    return lock
