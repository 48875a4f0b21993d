"""Process-wide settings side by side: thread pools and TF_ENABLE_ONEDNN_OPTS.

    PYTHONPATH=. python bench/process_variants.py --variants fit,step8_fbn_bf16 --rounds 3

These settings are fixed when TensorFlow starts, so each one gets its own
worker process (``train_variants.py --serve``). All workers are started and
warmed up first; then the driver asks them in turn, round by round, to run a
few steps, so only one works at a time and all see the same load over the
run. Ratios are to the first setting's first variant (default threads, fit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

SETTINGS = {
    # name: (environment additions, train_variants.py thread arguments)
    "default": ({}, []),
    "intra2_inter1": ({}, ["--intra", "2", "--inter", "1"]),
    "intra1_inter2": ({}, ["--intra", "1", "--inter", "2"]),
    "intra2_inter2": ({}, ["--intra", "2", "--inter", "2"]),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    # oneDNN may run float32 convolutions/matmuls with bfloat16 arithmetic (fp32 model).
    "fpmath_bf16": ({"TF_SET_ONEDNN_FPMATH_MODE": "BF16"}, []),
    # Keras on the JAX backend (fit = XLA); jax must be importable, e.g. installed with
    # `pip install --target DIR jax jaxlib` and DIR added to PYTHONPATH. fit variants only.
    "jax": ({"KERAS_BACKEND": "jax"}, []),
}


class Worker:
    def __init__(self, setting: str, variants: str, batch: int) -> None:
        env_add, thread_args = SETTINGS[setting]
        path = os.pathsep.join(p for p in (C.ROOT, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **env_add, "PYTHONPATH": path}
        cmd = [sys.executable, os.path.join(HERE, "train_variants.py"), "--serve",
               "--variants", variants, "--batch", str(batch), *thread_args]
        self.setting = setting
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.info = json.loads(self._expect("READY"))

    def _expect(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]
        raise RuntimeError(f"worker {self.setting} ended early (exit {self.proc.wait()})")

    def run(self, variant: str, steps: int) -> float:
        self.proc.stdin.write(f"{variant} {steps}\n")
        self.proc.stdin.flush()
        result = json.loads(self._expect("RESULT"))
        return result["images"] / result["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:  # TensorFlow can take long to tear down; the results are in already
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # jax runs fit variants only and needs jax installed: named on purpose, not by default
    p.add_argument("--settings", default=",".join(k for k in SETTINGS if k != "jax"))
    p.add_argument("--variants", default="fit,step8_fbn_bf16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    workers = []
    for setting in args.settings.split(","):
        workers.append(Worker(setting, args.variants, args.batch))
        print(f"worker {setting} ready, threads {workers[-1].info['threads']}", flush=True)
    variants = args.variants.split(",")
    keys = [(w, v) for w in workers for v in variants]
    rates = {(w.setting, v): [] for w, v in keys}
    ratios = {(w.setting, v): [] for w, v in keys}
    base = (workers[0].setting, variants[0])
    for r in range(args.rounds):
        now = {}
        for w, v in keys:
            now[(w.setting, v)] = w.run(v, args.steps)
            rates[(w.setting, v)].append(now[(w.setting, v)])
            print(f"round {r + 1} {w.setting:15s} {v:20s} {now[(w.setting, v)]:7.1f} img/s",
                  flush=True)
        for k in now:
            ratios[k].append(now[k] / now[base])
    print(f"\n{'setting':15s} {'variant':20s} {'img/s':>7s} {'x ' + '/'.join(base):>22s}")
    table = {}
    for k in rates:
        table["/".join(k)] = {"per_s": statistics.median(rates[k]), "rounds": rates[k],
                              "ratio": statistics.median(ratios[k])}
        print(f"{k[0]:15s} {k[1]:20s} {statistics.median(rates[k]):7.1f} "
              f"{statistics.median(ratios[k]):22.2f}")
    C.write_json(args.json, {"args": vars(args), "table": table})
    for w in workers:
        w.close()
    return table


if __name__ == "__main__":
    main()
