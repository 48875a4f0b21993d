"""How long ``resnet-builder build ... --output m.keras`` takes next to plain Keras.

Every measurement is a fresh process timed from the outside, interpreter and
imports included, as a user would wait for it:

* plain Keras: a hand-written functional model of the same network, built and
  saved with ``model.save`` (for depths: the CIFAR pre-activation ResNet with
  a 3x3/16 stem, bottleneck units of widths 16/32/64, projections on the first
  unit of each stage, 32x32x3 input, 10 classes; for the ImageNet presets:
  ``keras.applications.ResNet{50,152}V2(weights=None, classes=10)``);
* ours (stand-in): a tiny driver named ``resnet-builder`` that calls
  ``resolve_architecture`` and ``write_model_file`` from this checkout, for
  use before the real command exists;
* ours (CLI): the ``resnet-builder`` console script next to ``sys.executable``
  (or on PATH), when ``resnet-builder build --help`` works.

The three are run in turn, case after case, ``--repeats`` times, and the best
time of each is reported with the ratio ours / plain. Not a test: run it by
hand, ``python bench/build_speed.py [--repeats 3] [--cases 1001,resnet50_v2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (what the CLI is told, what plain Keras builds)
CASES = {
    "1001": (["--depth", "1001"], ("cifar", 111)),
    "164": (["--depth", "164"], ("cifar", 18)),
    "resnet50_v2": (["--preset", "resnet50_v2"], ("applications", "ResNet50V2")),
    "resnet152_v2": (["--preset", "resnet152_v2"], ("applications", "ResNet152V2")),
}

STAND_IN = '''\
import argparse, json, sys, time
t0 = time.perf_counter()
from resnet_builder.model.architecture import resolve_architecture
from resnet_builder.model.keras_writer import write_model_file
t1 = time.perf_counter()
p = argparse.ArgumentParser()
p.add_argument("command", choices=["build"])
p.add_argument("--depth", type=int)
p.add_argument("--preset")
p.add_argument("--num-classes", type=int, default=10)
p.add_argument("--output", required=True)
a = p.parse_args()
arch = resolve_architecture(depth=a.depth, preset=a.preset)
write_model_file(a.output, arch, num_classes=a.num_classes)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "write": t2 - t1,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
'''


def plain_keras(kind: str, spec, output: str) -> None:
    """The plain-Keras side, run in its own process (``--plain``)."""
    t0 = time.perf_counter()
    import keras
    from keras import layers

    t1 = time.perf_counter()
    if kind == "applications":
        model = getattr(keras.applications, spec)(weights=None, input_shape=(224, 224, 3),
                                                  classes=10)
    else:
        n = int(spec)

        def bn(x):
            return layers.BatchNormalization(epsilon=1.001e-5)(x)

        inputs = keras.Input((32, 32, 3))
        x = layers.Conv2D(16, 3, padding="same")(inputs)
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for unit in range(n):
                s = stride if unit == 0 else 1
                pre = layers.Activation("relu")(bn(x))
                shortcut = layers.Conv2D(4 * width, 1, strides=s)(pre) if unit == 0 else x
                y = layers.Conv2D(width, 1, use_bias=False)(pre)
                y = layers.Activation("relu")(bn(y))
                y = layers.Conv2D(width, 3, strides=s, padding="same", use_bias=False)(y)
                y = layers.Activation("relu")(bn(y))
                y = layers.Conv2D(4 * width, 1)(y)
                x = layers.Add()([shortcut, y])
        x = layers.Activation("relu")(bn(x))
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(10, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
    t2 = time.perf_counter()
    model.save(output)
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "build": t2 - t1, "save": t3 - t2,
                      "layers": len(model.layers)}))


def find_cli() -> tuple[str | None, str]:
    """The real console script and whether it runs; (None, why) when it does not."""
    beside = Path(sys.executable).parent / "resnet-builder"
    script = str(beside) if beside.exists() else shutil.which("resnet-builder")
    if not script:
        return None, "no resnet-builder script next to the interpreter or on PATH"
    probe = subprocess.run([script, "build", "--help"], capture_output=True, text=True,
                           timeout=120, env=child_env())
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines() or ["(no output)"]
        return None, f"{script} build --help failed: {lines[-1]}"
    return script, script


def child_env(pythonpath: str | None = None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return env


def timed(cmd: list[str], env: dict, output: Path) -> tuple[float, dict]:
    """Wall seconds of one fresh process, and the JSON it printed last (if any)."""
    if output.exists():
        output.unlink()
    t = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - t
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    with zipfile.ZipFile(output) as z:  # a real .keras file came out
        missing = {"metadata.json", "config.json", "model.weights.h5"} - set(z.namelist())
        if missing:
            raise RuntimeError(f"{output} lacks {sorted(missing)}")
    info = {}
    for line in reversed(result.stdout.strip().splitlines()):
        if line.startswith("{"):
            info = json.loads(line)
            break
    return seconds, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, best kept")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--no-cli", action="store_true", help="skip the real console script")
    parser.add_argument("--plain", nargs=3, metavar=("KIND", "SPEC", "OUTPUT"),
                        help=argparse.SUPPRESS)  # the child process of the plain-Keras side
    args = parser.parse_args()
    if args.plain:
        plain_keras(*args.plain)
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    cli, cli_note = (None, "skipped (--no-cli)") if args.no_cli else find_cli()
    print(f"python: {sys.executable}\nrepo:   {REPO}\nreal CLI: {cli_note}\n"
          f"cores: {os.cpu_count()}, repeats: {args.repeats} (best kept), fresh process each\n")

    with tempfile.TemporaryDirectory(prefix="build_speed_") as tmp:
        tmp = Path(tmp)
        (tmp / "bin").mkdir()
        stand_in = tmp / "bin" / "resnet-builder"  # this name keeps Keras out of the package
        stand_in.write_text(STAND_IN)
        variants = {
            "plain": lambda case, out: (
                [sys.executable, __file__, "--plain", CASES[case][1][0], str(CASES[case][1][1]),
                 str(out)], child_env()),
            "stand-in": lambda case, out: (
                [sys.executable, str(stand_in), "build", *CASES[case][0], "--output", str(out)],
                child_env(str(REPO))),
        }
        if cli:
            variants["cli"] = lambda case, out: (
                [cli, "build", *CASES[case][0], "--output", str(out)], child_env())
        best: dict[tuple[str, str], float] = {}
        details: dict[tuple[str, str], dict] = {}
        for repeat in range(args.repeats):
            for case in cases:
                for variant, command in variants.items():
                    out = tmp / f"{case}-{variant}.keras"
                    cmd, env = command(case, out)
                    seconds, info = timed(cmd, env, out)
                    shown = {k: round(v, 2) if isinstance(v, float) else v
                             for k, v in info.items()}
                    print(f"  run {repeat + 1}: {case:<13} {variant:<9} {seconds:7.2f} s "
                          f"{json.dumps(shown)}", flush=True)
                    key = (case, variant)
                    if seconds < best.get(key, float("inf")):
                        best[key], details[key] = seconds, info

    header = f"\n{'case':<14}{'plain Keras':>13}{'ours (stand-in)':>17}{'ratio':>8}"
    if cli:
        header += f"{'ours (CLI)':>12}{'ratio':>8}"
    print(header)
    for case in cases:
        plain = best[(case, "plain")]
        row = f"{case:<14}{plain:>12.2f}s{best[(case, 'stand-in')]:>16.2f}s"
        row += f"{best[(case, 'stand-in')] / plain:>8.3f}"
        if cli:
            row += f"{best[(case, 'cli')]:>11.2f}s{best[(case, 'cli')] / plain:>8.3f}"
        print(row)
    print("\nplain Keras, best run: import / build / save seconds")
    for case in cases:
        d = details[(case, "plain")]
        print(f"  {case:<14}{d.get('import', 0):6.2f} /{d.get('build', 0):6.2f} /"
              f"{d.get('save', 0):6.2f}   ({d.get('layers', '?')} layers)")


if __name__ == "__main__":
    main()
