"""Our ResNet50V2 against Keras' own on a GPU, through Keras 3's JAX backend.

    KERAS_BACKEND=jax python bench/gpu_model_check.py [--batch 128] [--steps 30] [--out F]

For a GPU machine that has JAX but no TensorFlow (the machine lent to this project had no
TensorFlow, and its wheel does not fit what can be carried there): the model package builds
without TensorFlow, so this compares ``build_model(preset="resnet50_v2_imagenet")``
(keras.applications' network) and ``build_model(preset="resnet50_v2")`` (keras-cv's layout,
3.3x the multiply-adds) with ``keras.applications.ResNet50V2`` on the same synthetic
batches, each trained with
``fit`` (XLA-compiled by JAX), in float32 and ``mixed_bfloat16``, after a warm-up pass,
in ``--rounds`` alternating timed passes. It prints one JSON line per model and policy:
parameters, the median training images/s and the GPU's busy share per pass (from
``nvidia-smi``, when there is one). The trainer's own input path (tf.data) needs
TensorFlow and is not part of this check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path


def busy_sampler(path: str) -> subprocess.Popen | None:
    """nvidia-smi writing the GPU's utilisation every 200 ms to ``path`` (None: no GPU)."""
    try:
        return subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-lms", "200"], stdout=open(path, "w"), stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return None


def busy_share(path: str, start_line: int) -> float | None:
    lines = [line.strip() for line in Path(path).read_text().splitlines()[start_line:]]
    values = [float(v) for v in lines if v.replace(".", "", 1).isdigit()]
    return round(sum(values) / len(values) / 100, 3) if values else None


def prepared(make, policy: str, args: argparse.Namespace):
    """A compiled model under ``policy``, warmed up (compiled by XLA), and its data."""
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    model = make()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                  jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch * args.steps, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 1000, len(x)).astype("int32")
    model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)  # compile, autotune, warm
    return model, x, y


def timed(model, x, y, batch: int, sampler_log: str) -> tuple[float, float | None]:
    """(training images/s of one pass, the GPU's busy share during it)."""
    first = len(Path(sampler_log).read_text().splitlines()) if os.path.exists(sampler_log) else 0
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    busy = busy_share(sampler_log, first) if os.path.exists(sampler_log) else None
    return len(x) / seconds, busy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed passes")
    parser.add_argument("--out", default=None, help="also append the JSON lines here")
    args = parser.parse_args()
    import keras

    from resnet_builder import build_model

    shape = (args.size, args.size, 3)
    models = {
        # keras.applications' network (its strides and padding), as its ImageNet weights need
        "ours resnet50_v2_imagenet": lambda: build_model(preset="resnet50_v2_imagenet",
                                                         num_classes=1000, input_shape=shape),
        # keras-cv's layout: stages 2-4 stride in their last unit, 3.3x the multiply-adds
        "ours resnet50_v2": lambda: build_model(preset="resnet50_v2", num_classes=1000,
                                                input_shape=shape),
        "keras.applications.ResNet50V2": lambda: keras.applications.ResNet50V2(
            weights=None, classes=1000, input_shape=shape, classifier_activation="softmax"),
    }
    log = os.path.join(os.environ.get("OUT", "/tmp"), "gpu_busy.log")
    sampler = busy_sampler(log)
    import jax
    import numpy as np

    try:
        for policy in ("float32", "mixed_bfloat16"):
            ready = {name: prepared(make, policy, args) for name, make in models.items()}
            passes: dict[str, list] = {name: [] for name in ready}
            for _ in range(args.rounds):  # alternating: the same conditions for both
                for name, (model, x, y) in ready.items():
                    passes[name].append(timed(model, x, y, args.batch, log))
            for name, found in passes.items():
                line = json.dumps({
                    "model": name, "policy": policy, "params": ready[name][0].count_params(),
                    "batch": args.batch, "steps": args.steps,
                    "train_images_per_second": round(float(np.median([r for r, _ in found])), 1),
                    "passes": [round(r, 1) for r, _ in found],
                    "gpu_busy_share": [b for _, b in found], "backend": keras.backend.backend(),
                    "device": str(jax.devices()[0])})
                print(line, flush=True)
                if args.out:
                    with open(args.out, "a") as out:
                        out.write(line + "\n")
            del ready
    finally:
        if sampler is not None:
            sampler.terminate()


if __name__ == "__main__":
    main()
