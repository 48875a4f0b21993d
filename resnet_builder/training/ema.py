"""The weights' moving average (``optim.ema``), put into the model to evaluate and save it.

Keras keeps the average in optimizer variables (``use_ema``), so the checkpoint
holds it with the rest of the optimizer. At an epoch's end the loop puts the
average into the model for the evaluation and the epoch's callbacks: val_*,
last.keras, best.keras and a user's callbacks see the EMA model. The checkpoint
is written with the raw weights back in (``raw``), so a resumed run goes on
training exactly what the uninterrupted run trains.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import keras
import numpy as np


class EmaWeights:
    """Swaps the optimizer's averages of ``variables`` (the list it was built on) in and out."""

    def __init__(self, optimizer, variables: Sequence) -> None:
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer  # the average lives in the inner one
        self.optimizer = optimizer
        self.enabled = bool(optimizer.use_ema)
        self.variables = list(variables)
        self._raw: list[np.ndarray] | None = None  # the raw weights while the EMA ones are in

    def _values(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self.variables]

    def _put(self, values: list[np.ndarray]) -> None:
        for variable, value in zip(self.variables, values, strict=True):
            variable.assign(value)

    @contextmanager
    def in_model(self) -> Iterator[None]:
        """The EMA weights in the model inside the block, the raw ones again after it."""
        if not self.enabled:
            yield
            return
        self._raw = self._values()
        self.optimizer.finalize_variable_values(self.variables)  # Keras: average -> model
        try:
            yield
        finally:
            self._put(self._raw)
            self._raw = None

    @contextmanager
    def raw(self) -> Iterator[None]:
        """The raw weights in the model inside the block (what a checkpoint must hold)."""
        if self._raw is None:
            yield
            return
        averaged = self._values()
        self._put(self._raw)
        try:
            yield
        finally:
            self._put(averaged)
