"""What a confusion matrix says: the one definition of the scores training and evaluate report.

Rows are true classes, columns predicted ones. Per class: recall = tp / support,
precision = tp / predicted (0 when a class with support was never predicted), F1
their harmonic mean (0 when both are 0); each is NaN where it is undefined (recall
and F1 of a class without support). The macro scores average over the classes with
support: balanced accuracy is scikit-learn's ``balanced_accuracy_score`` (mean
recall), macro F1 its ``f1_score(average="macro", labels=<classes with support>)``,
which is its default whenever every class occurs in the data (a validation split).
Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    """Per-class float64 arrays [K]; NaN where a score is undefined."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true images of the class
    predicted: np.ndarray  # images predicted as the class


def class_scores(confusion: np.ndarray) -> ClassScores:
    """Precision, recall, F1, support and times predicted of every class."""
    cm = np.asarray(confusion, np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        both = precision + recall
        f1 = np.where(support > 0, np.where(both > 0, 2 * precision * recall / both, 0.0),
                      np.nan)
    return ClassScores(precision, recall, f1, support.astype(np.int64),
                       predicted.astype(np.int64))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] (int64)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels).astype(int), np.asarray(predictions).astype(int)), 1)
    return matrix


def accuracy(confusion: np.ndarray) -> float | None:
    """Correct / all; None for an empty matrix."""
    cm = np.asarray(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else None


def balanced_accuracy(confusion: np.ndarray) -> float | None:
    """Mean recall over the classes with support (= macro recall); None without any."""
    return _macro(class_scores(confusion).recall)


def macro_f1(confusion: np.ndarray) -> float | None:
    """Mean F1 over the classes with support; None without any."""
    return _macro(class_scores(confusion).f1)


def macro_precision(confusion: np.ndarray) -> float | None:
    """Mean precision over the classes with support (a class predicted but absent from the
    data does not count); None without any."""
    scores = class_scores(confusion)
    return _macro(scores.precision[scores.support > 0])


def _macro(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else None


# ----------------------------------------------------------------------------- multilabel
# Each class is its own yes/no question: truth is a 0/1 matrix [N, K], scores the model's
# probabilities. Average precision is scikit-learn's ``average_precision_score`` (the
# precision at each distinct score, weighted by the recall it adds; no interpolation);
# F1 at a threshold counts a label as predicted when its probability is >= the threshold.
# Macro numbers average over the classes with positives (as above); micro F1 pools the
# counts of every class.


@dataclass(frozen=True)
class LabelScores:
    """Per-class float64 arrays [K] (NaN for a class without positives) and their averages."""

    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # images carrying the label
    predicted: np.ndarray  # images the label was predicted for
    mean_ap: float | None  # mAP: mean AP over the classes with positives
    micro_f1: float | None
    macro_f1: float | None


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """AP of one class (``truth`` 0/1 [N], ``scores`` [N]); NaN without positives."""
    truth = np.asarray(truth, np.float64)
    positives = truth.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked, hits = np.asarray(scores, np.float64)[order], np.cumsum(truth[order])
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # end of each tie group
    precision, recall = hits[last] / (last + 1), hits[last] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def label_scores(truth: np.ndarray, probabilities: np.ndarray, threshold: float) -> LabelScores:
    """AP, precision, recall and F1 at ``threshold`` of every class, mAP, micro/macro F1."""
    truth = np.asarray(truth, np.float64).reshape(len(truth), -1)
    probabilities = np.asarray(probabilities, np.float64).reshape(truth.shape)
    guess = probabilities >= threshold
    tp = (guess * truth).sum(axis=0)
    support, predicted = truth.sum(axis=0), guess.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        f1 = np.where(support > 0, 2 * tp / (support + predicted), np.nan)
    pooled = support.sum() + predicted.sum()
    ap = np.array([average_precision(truth[:, k], probabilities[:, k])
                   for k in range(truth.shape[1])])
    return LabelScores(ap, precision, recall, f1, support.astype(np.int64),
                       predicted.astype(np.int64), _macro(ap),
                       float(2 * tp.sum() / pooled) if pooled else None, _macro(f1))
