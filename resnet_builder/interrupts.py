"""Ctrl-C and SIGTERM, remembered for the training loop: Python drops an exception raised
inside a garbage-collector callback (JAX registers one when Keras imports it), and 3 of 4
Ctrl-C sent 4-5.5 s into ``train`` were lost that way: the run trained to its end. The
command installs ``remembering_interrupts``; the loop raises a lost Ctrl-C again at its next
step (``training.preemption.StopPoints.after_call``) and treats a lost SIGTERM as one that
arrived while it trained (a checkpoint, then exit 143). No TensorFlow here: the command
installs it before anything is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM outside the training loop, which turns it into a checkpoint and a stop
    instead. A BaseException, as KeyboardInterrupt, so ``except Exception`` lets it by."""


class _Interrupts:
    pending = False  # a Ctrl-C arrived during this command
    terminated = False  # a SIGTERM arrived during this command


@contextmanager
def remembering_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual, SIGTERM raises ``Terminated`` (the command
    says so and exits 143; its default action killed a run's set-up without a word), and
    both are remembered until the block ends. Main thread only, else a no-op."""
    _Interrupts.pending = _Interrupts.terminated = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        _Interrupts.pending = True
        raise KeyboardInterrupt

    def terminate(signum, frame) -> None:
        _Interrupts.terminated = True
        raise Terminated

    previous = signal.signal(signal.SIGINT, interrupt), signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        _Interrupts.pending = _Interrupts.terminated = False


def interrupt_pending() -> bool:
    """Whether a Ctrl-C arrived that nothing has ended the command for."""
    return _Interrupts.pending


def terminate_pending() -> bool:
    """Whether a SIGTERM arrived during this command (one raised where Python dropped it,
    in a garbage-collector callback, still stops the training loop at its first step)."""
    return _Interrupts.terminated
