"""Training input pipeline images/s with each augmentation policy on vs off, in one run.

    python bench/augment_policies.py [--size 32] [--batch 128] [--images 2048] [--rounds 3]

Synthetic in-memory images (data.source synthetic, 3 channels), one epoch of
``DataBundle.train_dataset`` per variant (clock started after its first batch, which
carries the epoch's tracing), alternating the variants in every round (this machine is
shared; see bench/README.md). Prints the median images/s per variant, its ratio to ``off``
(no augmentation) of the same round and the seconds to an epoch's first batch. The
pipeline only, no model: what the policy costs on its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
    "off": {},
    "flip+crop (baseline recipe)": {"horizontal_flip": True, "random_crop_padding": 4},
    "random_resized_crop": {"random_resized_crop": {"scale": [0.08, 1.0],
                                                    "ratio": [0.75, 1.3333]}},
    "rand_augment n2 m9": {"rand_augment": {"num_ops": 2, "magnitude": 9.0}},
    "color_jitter 0.4x3+0.1": {"color_jitter": [0.4, 0.4, 0.4, 0.1]},
    "random_erasing 0.25": {"random_erasing": 0.25},
    "mixup 0.2": {"mixup": 0.2},
    "cutmix 1.0": {"cutmix": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data

    data = DataConfig(source="synthetic", image_size=args.size, channels=3,
                      synthetic_samples=args.images, validation_split=0.0)
    bundles = {name: load_data(data, AugmentConfig(**aug), seed=0)
               for name, aug in VARIANTS.items()}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    firsts: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for epoch in range(args.rounds + 1):  # epoch 0 warms up (traces every pipeline)
        for name, bundle in bundles.items():
            begin = time.perf_counter()
            batches = iter(bundle.train_dataset(epoch, args.batch))
            next(batches)  # each epoch's pipeline is traced anew: timed apart (first batch)
            start = time.perf_counter()
            count = sum(int(x.shape[0]) for x, _ in batches)
            if epoch:
                rates[name].append(count / (time.perf_counter() - start))
                firsts[name].append(start - begin)
    print(f"{args.images} images of {args.size}x{args.size}x3, batch {args.batch}, "
          f"{args.rounds} rounds: median images/s after the first batch (ratio to off in "
          "the same round), seconds to the first batch of an epoch")
    for name, values in rates.items():
        ratio = statistics.median(v / o for v, o in zip(values, rates["off"], strict=True))
        print(f"  {name:30s} {statistics.median(values):9.0f}  {ratio:5.2f}x  "
              f"{statistics.median(firsts[name]):6.2f} s")


if __name__ == "__main__":
    main()
