"""Class imbalance: ``data.class_weight`` as a loss-weight vector, ``data.sampler: balanced``.

Both read the training split's label counts, which only the data room knows. The
weights follow scikit-learn's ``compute_class_weight``; the balanced order gives every
class the same number of places in an epoch, so the loop and the shards see an epoch
of the usual length and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from resnet_builder.errors import UserError


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class (int64 [num_classes]); label -1 (unreadable) counts for none."""
    labels = np.asarray(labels, np.int64)
    return np.bincount(labels[labels >= 0], minlength=num_classes)[:num_classes]


def class_weight_vector(setting: str | Mapping[str, float] | None, class_names: Sequence[str],
                        counts: np.ndarray | None) -> np.ndarray | None:
    """``data.class_weight`` -> float32 [num_classes] loss weights (None: no weighting).

    ``balanced``: n_samples / (n_classes * count), as scikit-learn, so the weights
    average to 1 over the training images and the loss keeps its scale; n_classes counts
    the classes with training images (a class without any is never weighted and keeps 1).
    A mapping names classes by name (classes left out weigh 1); a name that is not a class
    is an error.
    """
    if setting is None:
        return None
    counts = np.asarray(counts, np.float64)
    if setting == "balanced":
        present = counts > 0
        weights = np.ones(len(class_names), np.float64)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights.astype(np.float32)
    if not isinstance(setting, Mapping):
        raise UserError(f"data.class_weight must be null, balanced or a mapping, got {setting!r}",
                        exit_code=2)
    index = {name: k for k, name in enumerate(class_names)}
    unknown = [str(name) for name in setting if str(name) not in index]
    if unknown:
        shown = ", ".join(class_names[:50]) + (" ..." if len(class_names) > 50 else "")
        raise UserError(f"data.class_weight names {len(unknown)} class(es) the data does not "
                        f"have: {', '.join(unknown)}",
                        hint=f"the data's classes are: {shown}", exit_code=2)
    weights = np.ones(len(class_names), np.float32)
    for name, weight in setting.items():
        weights[index[str(name)]] = float(weight)
    return weights


def balanced_order(labels: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` indices in which every class with images appears equally often (within 1).

    Oversampling by class: a class with fewer images than its places repeats them, one
    with more draws a random subset of them. Within a class the draw is stratified
    (every image ``floor(q)`` or ``ceil(q)`` times, q = places / images) rather than
    independent, so an epoch repeats the fewest images it can. Which classes get the
    leftover places, which images fill them and the final order all come from ``rng``.
    """
    labels = np.asarray(labels, np.int64)
    classes = np.unique(labels[labels >= 0])
    if len(classes) == 0 or length == 0:
        return rng.permutation(len(labels))[:length].astype(np.int64)
    places = np.full(len(classes), length // len(classes), np.int64)
    places[rng.choice(len(classes), length % len(classes), replace=False)] += 1
    picks = []
    for k, n in zip(classes, places, strict=True):
        members = np.flatnonzero(labels == k)
        copies, rest = divmod(int(n), len(members))
        picks.append(np.repeat(members, copies))
        picks.append(rng.choice(members, rest, replace=False))
    return rng.permutation(np.concatenate(picks)).astype(np.int64)
