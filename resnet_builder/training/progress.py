"""Epoch progress: a tqdm bar on a terminal, one plain line per epoch elsewhere.

``auto`` picks the bar only when stdout is a terminal, so CI logs, SLURM
files and ``| tee`` get one readable line per epoch instead of carriage
returns.
"""

from __future__ import annotations

import sys
from typing import Any

import click


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "line"
    return mode


class EpochProgress:
    """Reports one epoch; call ``update`` per step and ``close`` with the epoch's results."""

    def __init__(self, mode: str, epoch: int, epochs: int, steps: int) -> None:
        self.mode = resolve_mode(mode)
        self.prefix = f"epoch {epoch}/{epochs}"
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=self.prefix, unit="step", leave=True,
                            dynamic_ncols=True, file=sys.stdout)

    def update(self, steps: int, loss: float, accuracy: float, images_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.4f}",
                                 img_s=f"{images_per_second:.0f}", refresh=False)

    def close(self, row: dict[str, Any], images_per_second: float, note: str = "") -> None:
        score = ("val_map", "val_map") if "val_map" in row else ("val_acc", "val_accuracy")
        text = (f"{self.prefix}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}"
                + (f"  val_loss {row['val_loss']:.4f}  {score[0]} {row[score[1]]:.4f}"
                   if row.get("val_loss") is not None else "")
                + f"  lr {row['lr']:.3g}  {images_per_second:.0f} img/s  {row['time']:.1f}s"
                + (f"  {note}" if note else ""))
        if self.bar is not None:
            self.bar.close()
        if self.mode != "none":
            click.echo(text)


def say(mode: str, message: str) -> None:
    """A run-level message (start, resume, end), shown unless progress is ``none``."""
    if resolve_mode(mode) != "none":
        click.echo(message)
