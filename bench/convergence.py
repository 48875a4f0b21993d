"""Do the fast settings still learn the same? A short training run per setting, same seed.

    PYTHONPATH=. python bench/convergence.py --depth 20 --epochs 6

Trains ``build_model(depth, "bottleneck")`` on the learnable synthetic source
(``DataBundle``, crop+flip) with ``step.make_train_function``: plain float32,
fused BN, fused BN + mixed_bfloat16. Reports the last epoch's training loss
and the validation accuracy of the float32 model the weights end up in (what
would be saved). A sanity check, not a convergence study.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C


def run(setting: str, depth: int, epochs: int, bundle, batch: int) -> dict:
    import keras
    import numpy as np

    from resnet_builder import build_model
    from resnet_builder.benchmark import machine
    from resnet_builder.training import batchnorm, step

    keras.utils.set_random_seed(0)
    model = build_model(depth, block_type="bottleneck", num_classes=bundle.num_classes,
                        input_shape=(bundle.image_size, bundle.image_size, 3),
                        mean=bundle.mean, std=bundle.std)
    net = machine.with_dtype_policy(model, "mixed_bfloat16") if "bf16" in setting else model
    if "fbn" in setting:
        batchnorm.fuse_batch_norm(net)
    fn = step.make_train_function(net, keras.optimizers.SGD(0.05, momentum=0.9),
                                   keras.losses.SparseCategoricalCrossentropy(reduction=None),
                                   steps_per_call=8)
    start = C.timer()
    for epoch in range(epochs):
        it = iter(bundle.train_dataset(epoch, batch))
        total = correct = count = 0.0
        while True:
            loss_sum, c, n = fn(it)
            if float(n) == 0:
                break
            total, correct, count = total + float(loss_sum), correct + float(c), count + float(n)
    seconds = C.timer() - start
    model.set_weights(net.get_weights())
    xs, ys = zip(*bundle.val_dataset(256), strict=True)
    probs = model.predict(np.concatenate(xs), verbose=0)
    val = float(np.mean(probs.argmax(-1) == np.concatenate(ys)))
    return {"setting": setting, "train_loss": total / count, "train_acc": correct / count,
            "val_acc": val, "seconds": seconds}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--samples", type=int, default=2560)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--settings", default="float32,fbn,fbn_bf16")
    args = p.parse_args(argv)

    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data

    bundle = load_data(DataConfig(source="synthetic", synthetic_samples=args.samples,
                                  batch_size=args.batch),
                       AugmentConfig(random_crop_padding=4, horizontal_flip=True))
    for setting in args.settings.split(","):
        r = run(setting, args.depth, args.epochs, bundle, args.batch)
        print(f"{r['setting']:10s} last-epoch loss {r['train_loss']:.4f} acc {r['train_acc']:.3f}"
              f"  val acc (float32 model) {r['val_acc']:.3f}  {r['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
