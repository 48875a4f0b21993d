"""Shared by the predict, evaluate and export tests: one small trained model and its images.

The model is trained once per test session (``trained``, cached here rather than in a
fixture so several test modules share it): a ResNet-8 on scikit-learn's digits at
16x16x1, about 99% validation accuracy. ``write_images`` writes validation digits as
PNG files in several modes, so prediction is checked on images the model has not
seen, read through every conversion path.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Batch 32, Adam decayed to 0 along a cosine: 97.8-98.9% validation accuracy over seeds 0-2.
# A constant 3e-3 ended where the last epoch's noise left it: 84% on an AVX2 machine where an
# AVX512 one had given ~99% (the float sums differ), under the tests' 90% bar.
EPOCHS = 8
KINDS = ("L", "RGBA", "I16", "RGB", "P", "L32")  # how image i is written: KINDS[i % 6]


@dataclass
class Trained:
    root: Path
    model_file: Path  # best.keras of a fake run folder
    run: Path  # runs/train/exp with config.yaml and best.keras
    val_images: np.ndarray  # uint8 [N, 16, 16, 1] the model's validation split
    val_labels: np.ndarray


_CACHE: dict[str, Trained] = {}


def trained(base: Path) -> Trained:
    """Train (once per session) and lay out ``base/runs/train/exp``."""
    if "t" in _CACHE:
        return _CACHE["t"]
    from resnet_builder.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from resnet_builder.config import DataConfig, config_from_dict, dump_config
    from resnet_builder.data import load_data
    from resnet_builder.model.classifier import build_model

    keras.utils.set_random_seed(0)
    bundle = load_data(DataConfig(source="digits", image_size=16, channels=1), seed=0)
    model = build_model(depth=8, block_type="basic", num_classes=10, input_shape=(16, 16, 1),
                        mean=bundle.mean, std=bundle.std, class_names=bundle.class_names)
    decay = keras.optimizers.schedules.CosineDecay(3e-3, EPOCHS * bundle.batches_per_epoch(32))
    model.compile(optimizer=keras.optimizers.Adam(decay),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for epoch in range(EPOCHS):
        model.fit(bundle.train_dataset(epoch, 32), epochs=1, verbose=0, shuffle=False)
    run = base / "runs" / "train" / "exp"
    run.mkdir(parents=True)
    model.save(run / "best.keras")
    cfg = config_from_dict({"model": {"depth": 8, "block_type": "basic"},
                            "data": {"source": "digits", "image_size": 16, "channels": 1},
                            "hardware": {"seed": 0}})
    dump_config(cfg, run / "config.yaml")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.val_dataset(128)], strict=True)
    result = Trained(base, run / "best.keras", run, np.concatenate(xs).astype(np.uint8),
                     np.concatenate(ys))
    _CACHE["t"] = result
    return result


def save_as(pixels: np.ndarray, path: Path, kind: str) -> None:
    """Write a uint8 16x16x1 digit as PNG in one of KINDS, with the same gray values."""
    gray = pixels[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "L":
        Image.fromarray(gray, "L").save(path)
    elif kind == "RGBA":
        rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
        Image.fromarray(rgba, "RGBA").save(path)
    elif kind == "I16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # I;16, full 16-bit range
    elif kind == "RGB":
        Image.fromarray(np.dstack([gray] * 3), "RGB").save(path)
    elif kind == "P":
        img = Image.fromarray(gray, "P")
        img.putpalette([v for i in range(256) for v in (i, i, i)])
        img.save(path)
    elif kind == "L32":  # a larger image: predict resizes it back to 16x16
        Image.fromarray(gray, "L").resize((32, 32), Image.Resampling.BILINEAR).save(path)
    else:
        raise ValueError(kind)


def write_images(t: Trained, folder: Path, count: int = 36) -> dict[str, int]:
    """``count`` validation digits in a/ and b/ (same file names in both), every kind.

    Returns {relative path: true label}. Also writes a corrupt PNG and a text file.
    """
    truth = {}
    for i in range(count):
        rel = f"{'ab'[i % 2]}/{i // 2:03d}.png"
        save_as(t.val_images[i], folder / rel, KINDS[i % len(KINDS)])
        truth[rel] = int(t.val_labels[i])
    whole = (folder / "a" / "000.png").read_bytes()
    (folder / "a" / "corrupt.png").write_bytes(whole[: len(whole) // 2])
    (folder / "b" / "readme.txt").write_text("not an image\n")
    return truth


def copy_run(t: Trained, dest: Path) -> Path:
    """A copy of the fake run folder (config.yaml, best.keras) at ``dest``."""
    shutil.copytree(t.run, dest)
    return dest
