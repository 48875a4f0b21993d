"""Training speed of ResNet-56 (bottleneck, CIFAR shape): plain ``fit`` vs our step, side by side.

    PYTHONPATH=. python bench/train_variants.py --rounds 5 --steps 8 \
        --variants fit,step1,step8,step8_bf16 --json /tmp/out.json

All variants are built and warmed up first, then alternated round by round in
this one process (see ``_common.round_robin``); the table gives the median
images/s, GFLOP/s (training = 3 x forward FLOPs) and the median per-round
ratio to the baseline (``fit`` unless ``--baseline``). ``matmul`` is not a
training variant: its "rate" is float32 GFLOP/s of a 2048^3 tf.matmul,
measured in the same rounds, so "% of matmul" compares like with like.

Process-wide settings (threads, TF_ENABLE_ONEDNN_OPTS) cannot change inside a
process: ``bench/process_variants.py`` runs this script once per setting.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

DESCRIPTIONS = {
    "fit": "model.fit, SGD momentum, sparse CE, accuracy metric (Keras default path)",
    "fit_nometric": "model.fit without the accuracy metric",
    "fit_spe8": "model.fit with steps_per_execution=8",
    "fit_fbn": "model.fit after batchnorm.fuse_batch_norm(model)",
    "fit_bf16": "model.fit, model built under mixed_bfloat16 (Keras BN)",
    "fit_fbn_bf16": "model.fit, fused BN, model built under mixed_bfloat16",
    "step1": "step.make_train_function, 1 step per call",
    "step8": "step.make_train_function, 8 steps per call (tf.range loop)",
    "step1_fbn_bf16": "fused BN + mixed_bfloat16, 1 step per call",
    "step32_fbn_bf16": "fused BN + mixed_bfloat16, 32 steps per call",
    "step8_onehot": "as step8, one-hot labels + CategoricalCrossentropy",
    "step8_xla": "as step8, per-replica step jit_compile=True",
    "step8_bf16": "as step8, model built under mixed_bfloat16",
    "step8_bf16_xla": "as step8_bf16, XLA",
    "step8_fbn": "as step8, BN through FusedBatchNormV3 (batchnorm.fuse_batch_norm)",
    "step8_fbn_bf16": "fused BN + mixed_bfloat16",
    "step8_nchw": "as step8, channels_first model from the same plan",
    "step8_nchw_fbn": "channels_first + fused BN",
    "step8_nchw_bf16": "channels_first + mixed_bfloat16",
    "step8_nchw_fbn_bf16": "channels_first + fused BN + mixed_bfloat16",
    "step8_pipeline": "as step8, fed by DataBundle synthetic (crop 4 + flip) instead of the pool",
    "pipeline_only": "DataBundle synthetic pipeline alone, images/s it delivers",
    "matmul": "tf.matmul 2048x2048 float32, GFLOP/s (not images/s)",
    "matmul_bf16": "tf.matmul 2048x2048 bfloat16, GFLOP/s (not images/s)",
}


def fit_variant(name: str, batch: int, metrics: bool = True, spe: int = 1) -> C.Variant:
    import keras

    from resnet_builder.training import batchnorm

    parts = set(name.split("_")[1:])
    model = C.build("mixed_bfloat16" if "bf16" in parts else None)
    if "fbn" in parts:
        batchnorm.fuse_batch_norm(model)
    model.compile(optimizer=C.sgd(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"] if metrics else None, steps_per_execution=spe)
    if keras.backend.backend() == "tensorflow":
        assert not model.jit_compile, "fit on CPU should not use XLA by default"
    data = C.pool_dataset(batch)

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.marks = []

        def on_train_batch_end(self, step, logs=None):
            self.marks.append((step, C.timer()))

    clock = Clock()

    def run(steps: int):
        # One execution more than timed: the clock starts at the end of the first one,
        # so fit's per-call set-up (iterator, callbacks) is not counted against it.
        steps = spe * max(1, round(steps / spe))
        model.fit(data, steps_per_epoch=steps + spe, epochs=1, verbose=0, callbacks=[clock])
        (s0, t0), (s1, t1) = clock.marks[0], clock.marks[-1]
        return (s1 - s0) * batch, t1 - t0

    run(spe)
    return C.Variant(name, DESCRIPTIONS[name], run)


def step_variant(name: str, batch: int) -> C.Variant:
    import keras
    import tensorflow as tf

    from resnet_builder.training import batchnorm, step

    parts = set(name.split("_")[1:])
    spc = int(name.split("_")[0][4:])
    policy = "mixed_bfloat16" if "bf16" in parts else None
    model = C.build_channels_first(policy) if "nchw" in parts else C.build(policy)
    if "fbn" in parts:
        batchnorm.fuse_batch_norm(model)
    if "onehot" in parts:
        loss = keras.losses.CategoricalCrossentropy(reduction=None)
        data = C.pool_dataset(batch).map(lambda x, y: (x, tf.one_hot(y, C.CLASSES)))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        data = C.pool_dataset(batch)
    if "pipeline" in parts:
        data = bundle_dataset(batch)
    fn = step.make_train_function(model, C.sgd(), loss, steps_per_call=spc,
                                   jit_compile="xla" in parts)
    iterator = iter(data)

    def run(steps: int):
        calls = max(1, math.ceil(steps / spc))
        start = C.timer()
        images = 0
        for _ in range(calls):
            _, _, count = fn(iterator)
            images += int(count.numpy())
        return images, C.timer() - start

    run(spc)
    return C.Variant(name, DESCRIPTIONS[name], run)


def bundle_dataset(batch: int):
    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data

    bundle = load_data(DataConfig(source="synthetic", synthetic_samples=4096, batch_size=batch),
                       AugmentConfig(random_crop_padding=4, horizontal_flip=True))
    return bundle.train_dataset(0, batch).repeat()


def pipeline_variant(name: str, batch: int) -> C.Variant:
    iterator = iter(bundle_dataset(batch))

    def run(steps: int):
        start = C.timer()
        for _ in range(steps * 4):
            x, _ = next(iterator)
        x.numpy()
        return steps * 4 * batch, C.timer() - start

    run(2)
    return C.Variant(name, DESCRIPTIONS[name], run)


def matmul_variant(name: str, batch: int) -> C.Variant:
    import tensorflow as tf

    n = 2048
    dtype = tf.bfloat16 if name.endswith("bf16") else tf.float32
    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=dtype)
    b = tf.random.stateless_normal((n, n), seed=(3, 4), dtype=dtype)

    @tf.function
    def product(a, b):
        return tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32))

    def run(steps: int):
        rates = []
        for _ in range(4 * steps):
            start = C.timer()
            product(a, b).numpy()
            rates.append(2 * n ** 3 / (C.timer() - start) / 1e9)
        rates.sort()
        return rates[len(rates) // 2], 1.0  # "per second" = median GFLOP/s

    run(1)
    return C.Variant(name, DESCRIPTIONS[name], run)


def make_variant(name: str, batch: int) -> C.Variant:
    if name == "fit":
        return fit_variant(name, batch)
    if name == "fit_nometric":
        return fit_variant(name, batch, metrics=False)
    if name == "fit_spe8":
        return fit_variant(name, batch, spe=8)
    if name.startswith(("fit_fbn", "fit_bf16")):
        return fit_variant(name, batch)
    if name.startswith("step"):
        return step_variant(name, batch)
    if name == "pipeline_only":
        return pipeline_variant(name, batch)
    if name.startswith("matmul"):
        return matmul_variant(name, batch)
    raise SystemExit(f"unknown variant {name!r}; known: {', '.join(DESCRIPTIONS)}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="fit,step1,step8,step8_bf16,matmul")
    p.add_argument("--baseline", default="fit")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="training steps per variant per round")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--intra", type=int, default=None)
    p.add_argument("--inter", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--serve", action="store_true",
                   help="build the variants, print READY, then run 'VARIANT STEPS' lines from "
                        "stdin, answering one JSON line each (for process_variants.py)")
    args = p.parse_args(argv)

    from resnet_builder.benchmark import machine

    threads = machine.configure_cpu_threads(args.intra, args.inter)
    names = args.variants.split(",")
    flops = C.train_flops_per_image()
    variants = []
    for name in names:
        start = C.timer()
        variants.append(make_variant(name, args.batch))
        print(f"built+warmed {name} in {C.timer() - start:.0f}s", flush=True)
    if args.serve:
        return serve({v.name: v for v in variants}, threads)
    table = C.round_robin(variants, args.rounds, args.steps, args.baseline,
                          log=lambda s: print(s, flush=True))
    mm = table.get("matmul", {}).get("per_s")
    print(f"\nResNet-56 bottleneck, batch {args.batch}, {flops / 1e6:.0f} MFLOP/image "
          f"to train; threads (intra, inter) = {threads}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(default)')}")
    print(f"{'variant':22s} {'img/s':>8s} {'GFLOP/s':>8s} {'x base':>7s} {'%matmul':>8s}")
    for name, row in table.items():
        if name.startswith("matmul"):
            print(f"{name:22s} {'':8s} {row['per_s']:8.1f} {'':7s}")
            continue
        gflops = row["per_s"] * flops / 1e9
        row["gflops"] = gflops
        ratio = row["ratio_to_baseline"]
        pct = f"{100 * gflops / mm:7.0f}%" if mm and not name.startswith("pipeline") else ""
        print(f"{name:22s} {row['per_s']:8.1f} {gflops:8.1f} "
              f"{ratio if ratio is not None else float('nan'):7.2f} {pct:>8s}")
    payload = {"args": vars(args), "threads": threads, "train_flops_per_image": flops,
               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "table": table}
    C.write_json(args.json, payload)
    return payload


def serve(variants: dict, threads) -> dict:
    import json

    print("READY " + json.dumps({"threads": threads}), flush=True)
    for line in sys.stdin:
        name, steps = line.split()
        images, seconds = variants[name].run(int(steps))
        print("RESULT " + json.dumps({"variant": name, "images": images, "seconds": seconds}),
              flush=True)
    return {}


if __name__ == "__main__":
    main()
