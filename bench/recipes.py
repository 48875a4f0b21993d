"""Each training recipe's effect on accuracy and speed, side by side in one run (real data).

    python bench/recipes.py [--epochs 15] [--seeds 1] [--only mixup,ema]

Trains configs/digits.yaml (scikit-learn's handwritten digits, ResNet-20 at 16x16x1, Adam,
cosine, pad-crop 2) once per recipe with one key changed, and prints the best and last
val_accuracy, the training images/s (from summary.json, validation excluded) and the ratio
of images/s to the plain run of the same seed. Digits are tiny and upright: a recipe made
for photos (a flip, a 0.08-area crop) can only hurt here; the table says what it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES: dict[str, list[str]] = {
    "plain (configs/digits.yaml)": [],
    "random_resized_crop {scale: [0.35, 1]}": [
        "augment.random_resized_crop={scale: [0.35, 1.0]}"],
    "rand_augment {num_ops: 2, magnitude: 9}": ["augment.rand_augment={}"],
    "color_jitter [0.4, 0.4, 0, 0]": ["augment.color_jitter=[0.4, 0.4, 0.0, 0.0]"],
    "random_erasing 0.25": ["augment.random_erasing=0.25"],
    "mixup 0.2": ["augment.mixup=0.2"],
    "cutmix 1.0": ["augment.cutmix=1.0"],
    "optim.ema 0.99": ["optim.ema=0.99"],
    "optim.clipnorm 1.0": ["optim.clipnorm=1.0"],
    "optim.accumulate_steps 2": ["optim.accumulate_steps=2"],
}


def run(number: int, overrides: list[str], seed: int, epochs: int, project: str) -> dict:
    import resnet_builder

    result = resnet_builder.train(str(ROOT / "configs" / "digits.yaml"), overrides=[
        *overrides, f"hardware.seed={seed}", f"train.epochs={epochs}", "run.progress=none",
        "run.plots=false", "run.loggers=[csv]", f"run.project={project}",
        f"run.name=recipe{number}-seed{seed}"])
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    return {"best": result.best_val_accuracy, "last": result.history[-1]["val_accuracy"],
            "images_per_second": summary["train_images_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated words a recipe must contain")
    args = parser.parse_args()
    chosen = {k: v for k, v in RECIPES.items()
              if not args.only or k.startswith("plain")
              or any(word in k for word in args.only.split(","))}
    rows: dict[str, list[dict]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory() as project:
        run(-1, [], 0, 1, project)  # warm-up: the first run of a process pays TF's start-up
        for seed in range(args.seeds):  # recipes alternate within each seed: same conditions
            for number, (name, overrides) in enumerate(chosen.items()):
                rows[name].append(run(number, overrides, seed, args.epochs, project))
    plain = rows["plain (configs/digits.yaml)"]
    print(f"digits, ResNet-20 16x16x1, {args.epochs} epochs, median of {args.seeds} seed(s):")
    print("| recipe | best val_accuracy | last val_accuracy | train images/s | vs plain |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        ratio = statistics.median(r["images_per_second"] / p["images_per_second"]
                                  for r, p in zip(results, plain, strict=True))
        print(f"| {name} | {statistics.median(r['best'] for r in results):.4f} | "
              f"{statistics.median(r['last'] for r in results):.4f} | "
              f"{statistics.median(r['images_per_second'] for r in results):.0f} | "
              f"{ratio:.2f}x |")


if __name__ == "__main__":
    main()
