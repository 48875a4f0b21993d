"""Starting TensorFlow quietly: the CLI imports it only for the commands that need it;
and how many cores this process may use.

TensorFlow 2.21 logs several lines from C++ (oneDNN notes, missing CUDA) at
import and first device use, before its log level can apply; the CLI hides
them by pointing file descriptor 2 at /dev/null for just that moment.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured by a runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Import TensorFlow (and list devices once) without its start-up log lines."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("RESNET_BUILDER_DEBUG"):
        import tensorflow as tf
    else:
        with _stderr_silenced():
            import keras  # noqa: F401 - imported here so its start-up is silenced too
            import tensorflow as tf

            tf.config.list_physical_devices()
    return tf


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
