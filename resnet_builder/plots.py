"""Figures for run folders: training curves and the confusion matrix (matplotlib, no display)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.files import atomic_save


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 90) -> None:
    """Save a matplotlib figure as a PNG atomically, then free it."""
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        _pyplot().close(fig)


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch, train and validation."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in rows], marker=".", label="train")
        val = [r.get(f"val_{key}") for r in rows]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], marker=".", label="val")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[2].plot(epochs, [r["lr"] for r in rows], marker=".")
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(int), predictions.astype(int)), 1)
    return matrix


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path,
                          title: str = "confusion matrix (validation)") -> None:
    """Counts with row-normalised colours; labels thinned out for many classes."""
    plt = _pyplot()
    n = len(class_names)
    size = min(14, 3 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(matrix / rows, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(n) if n <= 40 else np.arange(0, n, max(1, n // 20))
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=90)
    ax.set_yticks(ticks, [class_names[i] for i in ticks])
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > rows[i, 0] / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
