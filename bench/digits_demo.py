"""The README's main job against a plain Keras script, timed side by side in one run.

Runs, alternately and each in a fresh process (import included):
  plain: bench/plain_digits.py (model.fit, no run folder, 15 epochs)
  ours:  resnet-builder train configs/digits.yaml (run folder, checkpoints, plots)
and prints wall seconds, validation accuracy and the ratio ours / plain.
Usage: python bench/digits_demo.py [--repeats 2]
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

ROOT = Path(__file__).resolve().parent.parent


def _timed(cmd: list[str], cwd: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("resnet-builder"))
    plain_s, ours_s, plain_acc, ours_acc = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            seconds, out = _timed([sys.executable, str(ROOT / "bench" / "plain_digits.py")], tmp)
            plain_s.append(seconds)
            plain_acc.append(float(out.strip().splitlines()[-1].split("=")[1]))
            seconds, _ = _timed([cli, "train", str(ROOT / "configs" / "digits.yaml"),
                                 "--project", f"{tmp}/runs", "--name", f"r{i}",
                                 "--progress", "none"], tmp)
            ours_s.append(seconds)
            summary = json.loads(Path(f"{tmp}/runs/r{i}/summary.json").read_text())
            ours_acc.append(summary["best_val_accuracy"])
    p, o = statistics.median(plain_s), statistics.median(ours_s)
    print(f"plain model.fit script : {p:6.1f} s  val_accuracy {max(plain_acc):.4f}  "
          f"(runs: {', '.join(f'{s:.1f}' for s in plain_s)})")
    print(f"resnet-builder train   : {o:6.1f} s  best val_accuracy {max(ours_acc):.4f}  "
          f"(runs: {', '.join(f'{s:.1f}' for s in ours_s)})")
    print(f"ratio ours / plain     : {o / p:.2f}x")


if __name__ == "__main__":
    main()
