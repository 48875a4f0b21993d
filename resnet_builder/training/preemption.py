"""Mid-epoch checkpoints: when one is due (``train.checkpoint_every``) and SIGTERM.

Spot GPUs and Kubernetes send SIGTERM and expect the job to save and leave. The
handler only raises a flag; the loop sees it at the next step boundary, writes a
checkpoint there and exits with code 143 (128 + SIGTERM), printing the resume
command. ``kill -9`` cannot be caught: it loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from resnet_builder.config.schema import DURATION, DURATION_SECONDS

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


class CheckpointClock:
    """Says when the next mid-epoch checkpoint is due: every N steps or every N minutes."""

    def __init__(self, every: int | str | None) -> None:
        self.steps: int | None = None
        self.seconds: float | None = None
        if isinstance(every, int):
            self.steps = every
        elif isinstance(every, str):
            time_ = re.fullmatch(DURATION, every)
            if time_ is None:  # the config checks the form; this is a bug if reached
                raise ValueError(f"checkpoint_every {every!r} is neither steps nor a time")
            self.seconds = float(time_.group(1)) * DURATION_SECONDS[time_.group(2).lower()]
        self.last_step, self.last_time = 0, time.monotonic()

    def due(self, global_step: int) -> bool:
        """Whether a checkpoint is due after ``global_step`` steps of the run."""
        if self.steps is not None:
            return global_step - self.last_step >= self.steps
        if self.seconds is not None:
            return time.monotonic() - self.last_time >= self.seconds
        return False

    def written(self, global_step: int) -> None:
        self.last_step, self.last_time = global_step, time.monotonic()


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written at ``step`` of ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step = epoch, step


class StopFlag:
    """Set by SIGTERM while training runs; read by the loop at each step boundary."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def catching_sigterm(self) -> Iterator[StopFlag]:
        """Turn SIGTERM into this flag for the duration (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def request(signum, frame) -> None:
            self.requested = True

        previous = signal.signal(signal.SIGTERM, request)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
