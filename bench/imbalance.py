"""Class imbalance on real data: plain vs ``class_weight: balanced`` vs ``sampler: balanced``.

scikit-learn's 8x8 digits (the ``digits`` source's images), made imbalanced: a balanced
validation set of ``--val-per-class`` images per class is held out first, then training
keeps every remaining image of classes 0-4 and ``--minority`` of those of 5-9 (a small
.npz in a temporary folder, read by ``data.source: npz``). The same small ResNet trains
the three ways with the same seeds, alternating (seed 0: plain, weights, sampler; seed
1: ...), in one process. Reported per variant (medians over the seeds): macro recall
(= balanced accuracy, ``val_balanced_accuracy`` of the last epoch on the balanced
validation set), mean recall of the rare classes 5-9 and of the common ones 0-4 (from
``resnet_builder.evaluate`` on last.keras, which must agree with results.csv), accuracy,
macro F1 and training images/s.

Usage: python bench/imbalance.py [--seeds 2] [--epochs 15]   (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VARIANTS = {"plain": [], "class_weight: balanced": ["data.class_weight=balanced"],
            "sampler: balanced": ["data.sampler=balanced"]}
RARE = range(5, 10)


def imbalanced_digits(path: Path, val_per_class: int, minority: float) -> tuple[int, int]:
    """Write the .npz; returns (training images, validation images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(1234)
    train, val = [], []
    for k in range(10):
        members = rng.permutation(np.flatnonzero(labels == k))
        val.extend(members[:val_per_class])
        rest = members[val_per_class:]
        train.extend(rest[:max(1, round(minority * len(rest)))] if k in RARE else rest)
    train, val = np.sort(train), np.sort(val)
    np.savez(path, x_train=images[train], y_train=labels[train], x_val=images[val],
             y_val=labels[val], class_names=np.array([str(k) for k in range(10)]))
    return len(train), len(val)


def config_overrides(data: Path, epochs: int, seed: int, project: Path, name: str) -> list[str]:
    return ["data.source=npz", f"data.path={data}", "data.image_size=8", "data.channels=1",
            "data.batch_size=64", "model.depth=8", "model.block_type=basic",
            "model.bn_momentum=0.9", "augment.random_crop_padding=1",
            "augment.horizontal_flip=false", "optim.optimizer=adam", "optim.lr=0.003",
            "schedule.type=cosine", f"train.epochs={epochs}", "run.progress=none",
            "run.plots=false", "run.loggers=[csv]", f"hardware.seed={seed}",
            f"run.project={project}", f"run.name={name}"]


def one_run(overrides: list[str]) -> dict[str, float]:
    """Train, then evaluate last.keras on the balanced validation set."""
    import resnet_builder

    result = resnet_builder.train(resnet_builder.load_config(None, overrides))
    last = result.history[-1]
    metrics = resnet_builder.evaluate(result.run_dir / "last.keras",
                                      config=result.run_dir / "config.yaml").metrics
    recall = [metrics["per_class"][str(k)]["recall"] for k in range(10)]
    assert abs(metrics["balanced_accuracy"] - last["val_balanced_accuracy"]) < 1e-5, \
        (metrics["balanced_accuracy"], last["val_balanced_accuracy"])
    return {"macro_recall": last["val_balanced_accuracy"], "accuracy": last["val_accuracy"],
            "macro_f1": last["val_macro_f1"],
            "rare_recall": float(np.mean([recall[k] for k in RARE])),
            "common_recall": float(np.mean([recall[k] for k in range(5)])),
            "images_per_second": result.summary["train_images_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--minority", type=float, default=0.05,
                        help="fraction of the training images of classes 5-9 kept")
    args = parser.parse_args()
    start = time.perf_counter()
    found: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits_imbalanced.npz"
        n_train, n_val = imbalanced_digits(data, args.val_per_class, args.minority)
        for seed in range(args.seeds):
            for k, (name, extra) in enumerate(VARIANTS.items()):
                overrides = config_overrides(data, args.epochs, seed, Path(tmp) / "runs",
                                             f"s{seed}v{k}")
                found[name].append(one_run([*overrides, *extra]))
    print(f"digits, classes 5-9 kept at {args.minority:.0%} for training: {n_train} train / "
          f"{n_val} balanced val images; ResNet-8 basic, 8x8, {args.epochs} epochs, "
          f"medians over {args.seeds} seeds (last epoch)")
    print("| variant | macro recall (balanced acc.) | recall 5-9 (rare) | recall 0-4 | "
          "accuracy | macro F1 | train images/s |\n|---|---|---|---|---|---|---|")
    for name, rows in found.items():
        def med(key: str, rows=rows) -> float:
            return statistics.median(r[key] for r in rows)
        spread = ", ".join(f"{r['macro_recall']:.3f}" for r in rows)
        print(f"| {name} | {med('macro_recall'):.3f} ({spread}) | {med('rare_recall'):.3f} | "
              f"{med('common_recall'):.3f} | {med('accuracy'):.3f} | {med('macro_f1'):.3f} | "
              f"{med('images_per_second'):.0f} |")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
