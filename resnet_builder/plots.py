"""Figures for run folders: training curves and the confusion matrix, and the canvas
predict's contact sheet (``inference/drawing.py``) draws on.

Figures are plain ``matplotlib.figure.Figure`` objects on an Agg canvas: no
pyplot, so drawing never switches the backend of a notebook that imported us,
and nothing is kept in pyplot's registry. Every PNG is written through
``files.atomic_save``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnet_builder.files import atomic_save
from resnet_builder.runs import multilabel_rows


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib Figure (width x height inches) that draws off-screen (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 90) -> None:
    """Save a figure as a PNG atomically."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch, train and validation; a multilabel run's
    accuracy panel also shows validation mAP and macro F1 (it has no val_accuracy)."""
    epochs = [r["epoch"] for r in rows]
    fig = new_figure(13, 3.6)
    axes = fig.subplots(1, 3)
    multilabel = multilabel_rows(rows)
    panels = ((axes[0], "loss", "loss", {"val_loss": "val"}),
              (axes[1], "accuracy", "accuracy, mAP, F1" if multilabel else "accuracy",
               {"val_map": "val mAP", "val_macro_f1": "val macro F1"} if multilabel
               else {"val_accuracy": "val"}))
    for ax, key, title, val_keys in panels:
        ax.plot(epochs, [r[key] for r in rows], marker=".", label="train")
        for val_key, label in val_keys.items():
            val = [r.get(val_key) for r in rows]
            if any(v is not None for v in val):
                ax.plot(epochs, [np.nan if v is None else v for v in val], marker=".",
                        label=label)
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


def literal(text: object) -> str:
    """Text matplotlib draws as written: two "$" in a class or file name were read as a
    formula, and a name like cost_$5_to_$10 made the figure fail."""
    return str(text).replace("$", r"\$")


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path,
                          title: str = "confusion matrix (validation)") -> None:
    """The one confusion-matrix figure (training and evaluate): rows true, columns predicted.

    Colour = share of the true class (a colour bar says so), numbers = counts
    (up to 20 classes); tick labels thinned out beyond 40 classes.
    """
    matrix = np.asarray(matrix)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 16.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(n) if n <= 40 else np.arange(0, n, max(1, n // 20))
    names = [literal(class_names[i]) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
