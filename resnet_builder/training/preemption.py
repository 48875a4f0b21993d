"""Mid-epoch checkpoints: when one is due (``train.checkpoint_every``) and SIGTERM.

Spot GPUs and Kubernetes send SIGTERM and expect the job to save and leave. The
handler only raises a flag; the loop sees it at the next step boundary (several
workers: at the next read, where they agree, see ``StopPoints``), writes a
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
from resnet_builder.interrupts import interrupt_pending, terminate_pending
from resnet_builder.training.strategy import StrategyInfo, any_worker

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


class Diverged(Exception):
    """The loss, or the weights about to be saved, became NaN or infinite."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"epoch {epoch} step {step}")
        self.epoch, self.step = epoch, step


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

        self.requested = self.requested or terminate_pending()  # one dropped in the set-up
        previous = signal.signal(signal.SIGTERM, request)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


class StopPoints:
    """Where the loop reads its totals, writes a mid-epoch checkpoint and stops.

    One worker reads at once for SIGTERM or a due checkpoint. Several workers read only
    where all of them do (every ``run.log_every`` steps, the epoch's end, a checkpoint
    every N steps) and agree there on a stop and on a timed checkpoint, so all save or
    leave at one step: one worker's SIGTERM alone used to leave the others waiting in their
    next collective until they reported it lost.
    """

    def __init__(self, clock: CheckpointClock, stop: StopFlag, dist: StrategyInfo,
                 log_every: int) -> None:
        self.clock, self.stop, self.dist, self.log_every = clock, stop, dist, log_every

    def after_call(self, global_step: int, since_read: int, epoch_end: bool
                   ) -> tuple[bool, bool, bool]:
        """(read the totals, checkpoint due, stop) after a call, ``since_read`` steps
        after the last read. Raises a Ctrl-C that Python dropped (``interrupt_pending``)."""
        if interrupt_pending():
            raise KeyboardInterrupt
        due = self.clock.due(global_step)
        every_worker_reads = since_read >= self.log_every or epoch_end
        if self.dist.workers == 1:
            return every_worker_reads or due or self.stop.requested, due, self.stop.requested
        if not (every_worker_reads or (due and self.clock.steps is not None)):
            return False, False, False
        due, stopping = any_worker(self.dist, [due, self.stop.requested])
        return True, due, stopping

    def stop_agreed(self) -> bool:
        """SIGTERM here (several workers: on any of them; each must ask at the same point)."""
        if self.dist.workers == 1:
            return self.stop.requested
        return any_worker(self.dist, [self.stop.requested])[0]

    def stop_in_evaluation(self, batch: int) -> bool:
        """Whether to leave before evaluation batch ``batch`` (0-based). Several workers
        agree every ``log_every`` batches: each evaluates the same number."""
        if self.dist.workers == 1:
            return self.stop.requested
        return batch > 0 and batch % self.log_every == 0 and self.stop_agreed()
