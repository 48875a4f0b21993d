"""Classification metrics, tallied batch by batch: the definitions evaluate reports.

Rows of the confusion matrix are true classes, columns predicted ones;
precision = tp / predicted (0 when a class with support was never predicted),
recall = tp / support, F1 their harmonic mean (0 when both are 0). Metrics
undefined for a class without support are null, and the macro averages are over
the classes with support. Ties in the probabilities go to the lower class index,
as ``numpy.argmax``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from resnet_builder.plots import confusion_matrix


class Tally:
    """Confusion matrix and top-k hits, added to batch by batch (nothing else kept)."""

    def __init__(self, num_classes: int, top_k: int = 5) -> None:
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.top_k = min(top_k, num_classes)
        self.top_k_hits = 0

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def add(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        labels = np.asarray(labels, np.int64)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :self.top_k]
        self.confusion += confusion_matrix(labels, order[:, 0], len(self.confusion))
        self.top_k_hits += int((order == labels[:, None]).any(axis=1).sum())

    def metrics(self, class_names: Sequence[str]) -> dict[str, Any]:
        """What metrics.json holds (less where the model and data came from)."""
        cm = self.confusion
        support = cm.sum(axis=1)
        per_class = {name: _class_metrics(cm, c) for c, name in enumerate(class_names)}
        present = [per_class[n] for c, n in enumerate(class_names) if support[c] > 0]
        total = self.count

        def macro(key: str) -> float | None:
            return _num(float(np.mean([p[key] for p in present]))) if present else None

        return {
            "images": total,
            "accuracy": _num(np.trace(cm) / total) if total else None,
            "top_k": self.top_k,
            f"top{self.top_k}_accuracy": _num(self.top_k_hits / total) if total else None,
            "macro_precision": macro("precision"),
            "macro_recall": macro("recall"),
            "macro_f1": macro("f1"),
            "class_names": list(class_names),
            "per_class": per_class,
            "confusion_matrix": cm.tolist(),
        }


def _class_metrics(cm: np.ndarray, c: int) -> dict[str, Any]:
    """Precision, recall, F1, support and times predicted of class ``c``."""
    tp, support, predicted = cm[c, c], cm[c].sum(), cm[:, c].sum()
    has = support > 0
    precision = None if not (has or predicted) else (tp / predicted if predicted else 0.0)
    recall = tp / support if has else None
    f1 = None
    if has:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": _num(precision), "recall": _num(recall), "f1": _num(f1),
            "support": int(support), "predicted": int(predicted)}


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)
