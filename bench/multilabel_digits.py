"""Multi-label example from scikit-learn's digits: two digits side by side, labels = both.

Each image puts two 8x8 digits of the real dataset next to each other (8x16, gray);
its labels are the set of the two digits (one label when both are the same digit).
The pairs are written as PNGs with a labels.csv (``path,labels`` as ``3;7``) to a
temporary folder, a small network is trained on them with ``data.source: csv`` and
``model.task: multilabel``, and the best epoch's validation mAP and micro / macro F1
at the threshold are printed, then ``evaluate`` on held-out pairs (pairs built from
digits the training pairs never used).

The model takes square inputs: ``data.resize: pad`` puts the 8x16 image into 16x16
(the longer side to 16, the rest filled), so no digit is squeezed.

    .venv/bin/python bench/multilabel_digits.py [--epochs 15] [--pairs 4000]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_pairs(folder: Path, images: np.ndarray, digits: np.ndarray, count: int,
                rng: np.random.Generator, name: str) -> Path:
    """``count`` side-by-side pairs as PNGs under folder/name, listed in folder/name.csv."""
    (folder / name).mkdir(parents=True)
    rows = []
    for i in range(count):
        a, b = rng.integers(0, len(images), 2)
        pixels = np.concatenate([images[a], images[b]], axis=1)  # 8 x 16
        Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8)).save(
            folder / name / f"{i}.png")
        rows.append([f"{name}/{i}.png", ";".join(sorted({str(digits[a]), str(digits[b])}))])
    path = folder / f"{name}.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "labels"], *rows])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=4000, help="training + validation pairs")
    args = parser.parse_args()

    from resnet_builder import evaluate, train

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.images))
    held = order[:360]  # digits only the test pairs use
    kept = order[360:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_csv = write_pairs(folder, digits.images[kept], digits.target[kept], args.pairs,
                                rng, "pairs")
        test_csv = write_pairs(folder, digits.images[held], digits.target[held], 1000, rng,
                               "test")
        config = folder / "config.yaml"
        config.write_text(
            "model: {depth: 14, block_type: basic, task: multilabel, bn_momentum: 0.9}\n"
            f"data: {{source: csv, path: {train_csv}, image_size: 16, channels: 1, "
            "resize: pad, batch_size: 64, validation_split: 0.2}\n"
            "augment: {random_crop_padding: 1}\n"
            "optim: {optimizer: adam, lr: 0.003, weight_decay: 0.0001}\n"
            "schedule: {type: cosine, warmup: 1}\n"
            f"train: {{epochs: {args.epochs}, monitor: val_map}}\n"
            "predict: {threshold: 0.5}\n"
            f"run: {{project: {folder / 'runs'}, progress: line, plots: false, "
            "loggers: [csv]}\n"
            "hardware: {seed: 0}\n")
        start = time.perf_counter()
        result = train(str(config))
        seconds = time.perf_counter() - start
        best = next(r for r in result.history if r["epoch"] == result.summary["best_epoch"])
        print(f"\ntrain: {args.pairs} pairs (80/20 split), depth 14 basic, 16x16 (pad), "
              f"{args.epochs} epochs, {seconds:.0f} s")
        print(f"validation, best epoch {best['epoch']}: mAP {best['val_map']:.4f}, "
              f"micro F1 {best['val_micro_f1']:.4f}, macro F1 {best['val_macro_f1']:.4f} "
              "(threshold 0.5)")
        held_out = evaluate(run=result.run_dir, data=test_csv).metrics
        print(f"held-out pairs (unseen digits, {held_out['images']}): mAP "
              f"{held_out['map']:.4f}, micro F1 {held_out['micro_f1']:.4f}, macro F1 "
              f"{held_out['macro_f1']:.4f}, exact match {held_out['exact_match']:.4f}")


if __name__ == "__main__":
    main()
