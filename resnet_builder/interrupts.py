"""Ctrl-C, remembered for the training loop: Python drops a KeyboardInterrupt raised inside
a garbage-collector callback (JAX registers one when Keras imports it), and 3 of 4 Ctrl-C
sent 4-5.5 s into ``train`` were lost that way: the run trained to its end. The command
installs ``remembering_interrupts``; the loop raises a lost one again at its next step
(``training.preemption.StopPoints.after_call``). No TensorFlow here: the command installs
it before anything is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Interrupts:
    pending = False  # a Ctrl-C arrived during this command


@contextmanager
def remembering_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered until the block
    ends. Main thread only, else a no-op."""
    _Interrupts.pending = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        _Interrupts.pending = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _Interrupts.pending = False


def interrupt_pending() -> bool:
    """Whether a Ctrl-C arrived that nothing has ended the command for."""
    return _Interrupts.pending
