"""Training from a big JPEG folder: ``resnet-builder train`` vs the plain Keras script, one run.

    python bench/train_folder.py [--files 3000] [--size 224] [--epochs 3] [--repeats 1]

Makes ``--files`` photo-size JPEGs (500x375) in 4 class folders, then runs, alternately
and each in a fresh process (imports included):
  plain: bench/plain_keras_folder.py (image_dataset_from_directory + fit)
  ours:  resnet-builder train with data.source folder, data.cache false (streaming)
on the same tiny network, batch, split share and epochs, and prints wall seconds,
training images/s (validation excluded) and the ratios ours / plain. Each process gets the
environment this script was started with, so each starts TensorFlow as it would for a user:
on an x86 CPU without AVX512-VNNI/AMX, the plain script on TensorFlow's Eigen kernels and
ours on oneDNN (``import resnet_builder`` asks for it). ``--plain-onednn`` runs the plain
script with ``TF_ENABLE_ONEDNN_OPTS=1`` too, to compare on the same kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # before anything imports resnet_builder
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from plain_keras_folder import TINY  # noqa: E402


def _run(cmd: list[str], cwd: str, env: dict[str, str] = USER_ENV) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - start, out.stdout


def _ours(cli: str, folder: Path, args: argparse.Namespace, cwd: str) -> dict:
    config = {
        "model": {"preset": None, **TINY},
        "data": {"source": "folder", "path": str(folder), "image_size": args.size,
                 "cache": False, "batch_size": args.batch, "validation_split": 0.2},
        "augment": {"horizontal_flip": True},
        "optim": {"lr": 0.05}, "schedule": {"type": "constant"},
        "train": {"epochs": args.epochs},
        "run": {"progress": "none", "plots": False, "exist_ok": True,
                "project": str(Path(cwd) / "runs"), "name": "exp"},
    }
    path = Path(cwd) / "folder.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    wall, _ = _run([cli, "train", str(path)], cwd)
    summary = json.loads((Path(cwd) / "runs" / "exp" / "summary.json").read_text())
    return {"wall_seconds": wall, "train_images_per_second": summary["train_images_per_second"],
            "val_accuracy": summary.get("best_val_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plain-onednn", action="store_true",
                        help="run the plain script with TF_ENABLE_ONEDNN_OPTS=1 as well")
    args = parser.parse_args()
    plain_env = {**USER_ENV, "TF_ENABLE_ONEDNN_OPTS": "1"} if args.plain_onednn else USER_ENV
    from resnet_builder.benchmark.pipelines import make_jpegs

    cli = str(Path(sys.executable).with_name("resnet-builder"))
    plain_script = str(ROOT / "bench" / "plain_keras_folder.py")
    results: dict[str, list[dict]] = {"plain": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_jpegs(folder, args.files)
        for _ in range(args.repeats):
            wall, out = _run([sys.executable, plain_script, str(folder), "--size",
                              str(args.size), "--epochs", str(args.epochs), "--batch",
                              str(args.batch)], tmp, plain_env)
            plain = json.loads(out.strip().splitlines()[-1])
            results["plain"].append({**plain, "wall_seconds": wall})
            results["ours"].append(_ours(cli, folder, args, tmp))
    print(f"{args.files} JPEGs 500x375 -> {args.size}, {args.epochs} epochs, batch "
          f"{args.batch}, data.cache false, tiny network (median of {args.repeats}); plain "
          f"TF_ENABLE_ONEDNN_OPTS={plain_env.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}:")
    median = {name: {key: statistics.median(r[key] for r in runs)
                     for key in ("wall_seconds", "train_images_per_second")}
              for name, runs in results.items()}
    for name, m in median.items():
        print(f"  {name:6s} wall {m['wall_seconds']:7.1f} s   train "
              f"{m['train_images_per_second']:7.0f} img/s")
    for k, (plain, ours) in enumerate(zip(results["plain"], results["ours"], strict=True), 1):
        print(f"  round {k}: plain {plain['wall_seconds']:.1f} s, ours {ours['wall_seconds']:.1f}"
              f" s; wall {ours['wall_seconds'] / plain['wall_seconds']:.2f}x, images/s "
              f"{ours['train_images_per_second'] / plain['train_images_per_second']:.2f}x")
    o, p = median["ours"], median["plain"]
    print(f"  ours/plain: wall {o['wall_seconds'] / p['wall_seconds']:.2f}x, images/s "
          f"{o['train_images_per_second'] / p['train_images_per_second']:.2f}x")


if __name__ == "__main__":
    main()
