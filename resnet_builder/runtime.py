"""Starting TensorFlow: with oneDNN on every x86 CPU, quietly (the CLI imports it only for
the commands that need it); and how many cores this process may use.

TensorFlow 2.21 logs several lines from C++ (oneDNN notes, missing CUDA) at
import and first device use, before its log level can apply; the CLI hides
them by pointing file descriptor 2 at /dev/null for just that moment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from collections.abc import Callable, MutableMapping

ONEDNN_SWITCH = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow's own switch, read once, at its import
X86_MACHINES = ("x86_64", "amd64", "i686", "i386")


def prefer_onednn(environ: MutableMapping[str, str] = os.environ,
                  machine: str | None = None) -> bool:
    """Ask TensorFlow for its oneDNN CPU kernels on any x86 CPU, unless the user chose.

    TensorFlow turns oneDNN on by itself only on CPUs with AVX512-VNNI, AVX-VNNI, BF16 or
    AMX; elsewhere (an AVX2 AMD EPYC here) its Eigen kernels train ResNet-20 (16x16x1,
    batch 64) at 532 images/s against 813 with oneDNN, and a tiny net at 224x224 at 113
    against 654 (its stem's filter gradient: 53% of the step). Must run before TensorFlow
    is imported (``import resnet_builder`` does it first); a value the user set, 0
    included, is kept. Returns whether the switch now asks for oneDNN.
    """
    machine = (machine if machine is not None else platform.machine()).lower()
    if ONEDNN_SWITCH not in environ and machine in X86_MACHINES:
        environ[ONEDNN_SWITCH] = "1"
    return environ.get(ONEDNN_SWITCH, "").strip().lower() in ("1", "true")


def onednn_in_force() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


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


def starts_tensorflow(callback: Callable) -> Callable:
    """A command that imports TensorFlow quietly before it runs: after its arguments are
    parsed, so ``--help`` and a mistyped path answer at once (~8-10 s sooner here)."""
    @functools.wraps(callback)
    def started(*args, **kwargs):
        import_tensorflow_quietly()
        return callback(*args, **kwargs)
    return started


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
