"""Classification metrics, tallied batch by batch: what evaluate reports.

The scores' definitions are ``resnet_builder.scores`` (training's results.csv uses the
same): rows of the confusion matrix are true classes, columns predicted ones;
precision = tp / predicted (0 when a class with support was never predicted),
recall = tp / support, F1 their harmonic mean (0 when both are 0). Metrics
undefined for a class without support are null, and the macro averages (balanced
accuracy = macro recall, macro F1) are over the classes with support. Ties in the
probabilities go to the lower class index, as ``numpy.argmax``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from resnet_builder.scores import (
    ClassScores,
    accuracy,
    balanced_accuracy,
    class_scores,
    confusion_matrix,
    label_scores,
    macro_f1,
    macro_precision,
)


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
        scores = class_scores(cm)
        per_class = {name: _class_metrics(scores, c) for c, name in enumerate(class_names)}
        total = self.count
        return {
            "images": total,
            "accuracy": _num(accuracy(cm)),
            "top_k": self.top_k,
            f"top{self.top_k}_accuracy": _num(self.top_k_hits / total) if total else None,
            "balanced_accuracy": _num(balanced_accuracy(cm)),
            "macro_precision": _num(macro_precision(cm)),
            "macro_recall": _num(balanced_accuracy(cm)),
            "macro_f1": _num(macro_f1(cm)),
            "class_names": list(class_names),
            "per_class": per_class,
            "confusion_matrix": cm.tolist(),
        }


def _class_metrics(scores: ClassScores, c: int) -> dict[str, Any]:
    """Precision, recall, F1 (null where undefined), support and times predicted of ``c``."""
    return {"precision": _num(scores.precision[c]), "recall": _num(scores.recall[c]),
            "f1": _num(scores.f1[c]), "support": int(scores.support[c]),
            "predicted": int(scores.predicted[c])}


def _num(value: Any) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


class LabelTally:
    """Multilabel: every probability and 0/1 truth row kept (AP needs them all), scored at
    ``threshold`` (``scores.label_scores``: AP as scikit-learn's, macro over the classes
    with positives)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.truth: list[np.ndarray] = []
        self.probabilities: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return sum(len(t) for t in self.truth)

    def add(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        self.truth.append(np.asarray(labels, np.float64))
        self.probabilities.append(np.asarray(probabilities, np.float64))

    def metrics(self, class_names: Sequence[str]) -> dict[str, Any]:
        """What metrics.json holds for a multilabel model."""
        k = len(class_names)
        truth = np.concatenate(self.truth) if self.truth else np.zeros((0, k))
        probabilities = np.concatenate(self.probabilities) if self.truth else np.zeros((0, k))
        s = label_scores(truth, probabilities, self.threshold)
        exact = (probabilities >= self.threshold) == (truth > 0)
        per_class = {name: {"ap": _num(s.ap[c]), "precision": _num(s.precision[c]),
                            "recall": _num(s.recall[c]), "f1": _num(s.f1[c]),
                            "support": int(s.support[c]), "predicted": int(s.predicted[c])}
                     for c, name in enumerate(class_names)}
        return {"images": self.count, "task": "multilabel", "threshold": self.threshold,
                "map": _num(s.mean_ap), "micro_f1": _num(s.micro_f1),
                "macro_f1": _num(s.macro_f1),
                "label_accuracy": _num(exact.mean()) if exact.size else None,
                "exact_match": _num(exact.all(axis=1).mean()) if exact.size else None,
                "class_names": list(class_names), "per_class": per_class}
