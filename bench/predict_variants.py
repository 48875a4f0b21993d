"""Inference speed of the same ResNet-56: ``model.predict`` vs compiled calls, side by side.

    PYTHONPATH=. python bench/predict_variants.py --rounds 5

Every variant classifies the same ``--images`` in-memory float32 images per
round; rounds alternate the variants (see ``_common.round_robin``). Ratios are
to ``predict`` (``model.predict``, batch 128, as the predictor would call it).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

DESCRIPTIONS = {
    "predict": "model.predict(x, batch_size=128)",
    "predict_b512": "model.predict(x, batch_size=512)",
    "call_fn": "tf.function(model(x, training=False)) over batches of 128",
    "call_fn_b512": "the same, batches of 512",
    "call_xla": "the same with jit_compile=True, batches of 128",
    "call_bf16": "a mixed_bfloat16 copy of the model (same weights), batches of 128",
    "predict_bf16": "model.predict on the mixed_bfloat16 copy, batch 128",
    "predict_fbn": "model.predict after batchnorm.fuse_batch_norm (fused inference BN)",
    "call_fbn": "tf.function call after batchnorm.fuse_batch_norm, batches of 128",
    "call_fbn_bf16": "mixed_bfloat16 copy with fused BN, tf.function, batches of 128",
}


def make(name: str, model, x) -> C.Variant:
    import tensorflow as tf

    from resnet_builder.training import batchnorm

    n = len(x)
    parts = set(name.split("_")[1:])
    if "bf16" in parts:
        target = bf16_copy(model)
    elif "fbn" in parts:
        target = keras_copy(model)
    else:
        target = model
    if "fbn" in parts:
        batchnorm.fuse_batch_norm(target)
    if name.startswith("predict"):
        batch = 512 if name.endswith("b512") else 128

        def run(rounds_steps: int):
            start = C.timer()
            target.predict(x, batch_size=batch, verbose=0)
            return n, C.timer() - start
    else:
        batch = 512 if name.endswith("b512") else 128
        fn = tf.function(lambda t: target(t, training=False), jit_compile=name == "call_xla",
                         reduce_retracing=True)
        batches = [tf.constant(x[i:i + batch]) for i in range(0, n, batch)]

        def run(rounds_steps: int):
            start = C.timer()
            outs = [fn(b) for b in batches]
            outs[-1].numpy()
            return n, C.timer() - start

    run(1)
    return C.Variant(name, DESCRIPTIONS[name], run)


def keras_copy(model):
    from resnet_builder.benchmark import machine

    return machine.with_dtype_policy(model, "float32")


def bf16_copy(model):
    from resnet_builder.benchmark import machine

    return machine.with_dtype_policy(model, "mixed_bfloat16")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=",".join(DESCRIPTIONS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np

    model = C.build()
    x = np.random.default_rng(0).normal(size=(args.images, *C.SHAPE)).astype("float32")
    variants = [make(name, model, x) for name in args.variants.split(",")]
    table = C.round_robin(variants, args.rounds, 1, "predict", log=lambda s: print(s, flush=True))
    flops = 2 * C.macs_per_image()
    print(f"\nResNet-56 bottleneck inference, {args.images} images per round, "
          f"{flops / 1e6:.0f} MFLOP/image")
    print(f"{'variant':16s} {'img/s':>8s} {'GFLOP/s':>8s} {'x predict':>9s}")
    for name, row in table.items():
        print(f"{name:16s} {row['per_s']:8.1f} {row['per_s'] * flops / 1e9:8.1f} "
              f"{row['ratio_to_baseline']:9.2f}")
    C.write_json(args.json, {"args": vars(args), "table": table})
    return table


if __name__ == "__main__":
    main()
