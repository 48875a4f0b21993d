"""The model package on Keras' JAX backend: build, presets, a fit step, .keras save and load.

Keras picks its backend once per process (``KERAS_BACKEND``), and this test
process runs TensorFlow, so each check runs a small script in a subprocess with
``KERAS_BACKEND=jax``. The script prints its findings as one JSON line; the
assertions are made here. The trainer, predict and export stay TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxlib") is None,
    reason="jax is not installed (pip install 'jax[cpu]', part of the dev extra)",
)

COMMON = """
import json, os, sys
import numpy as np
import keras
from resnet_builder import PRESETS, ResNetV2Backbone, build_model, resolve_architecture
from resnet_builder.model.keras_writer import write_model_file
from resnet_builder.model.summary import model_summary

NETS = {
    "resnet20": {"depth": 20, "block_type": "basic"},
    "stackwise": {"stackwise_filters": [8, 16], "stackwise_blocks": [1, 2],
                  "stackwise_strides": [1, 2], "block_type": "basic", "stem_filters": 8,
                  "input_shape": (32, 32, 3)},
}
CLASSES = 3
facts = {"backend": keras.backend.backend(), "params": {}}


def counts(name, model):
    plan = model_summary(resolve_architecture(**NETS[name]), CLASSES)["params_total"]
    facts["params"][name] = [model.count_params(), plan]
"""

FULL = COMMON + """
folder = sys.argv[1]
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
labels = rng.integers(0, CLASSES, 8)
facts["loss"], facts["max_diff"] = {}, {}
for name in NETS:
    model = build_model(**NETS[name], num_classes=CLASSES, mean=[120.0] * 3, std=[60.0] * 3)
    counts(name, model)
    facts.setdefault("tensorflow_after_build", "tensorflow" in sys.modules)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    facts["loss"][name] = float(history.history["loss"][0])
    facts.setdefault("tensorflow_before_save", "tensorflow" in sys.modules)
    path = os.path.join(folder, name + ".keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    facts["loaded_class"] = type(loaded).__name__
    diff = loaded.predict(images, verbose=0) - model.predict(images, verbose=0)
    facts["max_diff"][name] = float(np.abs(diff).max())
fast = os.path.join(folder, "fast.keras")
write_model_file(fast, resolve_architecture(**NETS["resnet20"]), num_classes=CLASSES)
probs = keras.models.load_model(fast).predict(images[:2], verbose=0)
facts["fast_file_sums"] = probs.sum(axis=1).tolist()
backbone = ResNetV2Backbone.from_preset("resnet18_v2")
facts["preset"] = [backbone.count_params(), PRESETS["resnet18_v2"]["params"]]
print(json.dumps(facts))
"""


def run_with_jax(code: str, *args: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["backend"] == "jax"
    return facts


@pytest.mark.slow
def test_jax_builds_fits_saves_loads_and_presets(tmp_path):
    """Under JAX: ``import resnet_builder`` and ``build_model`` import no TensorFlow; ResNet-20
    and a stackwise net train a step, save and load; the fast file loads; presets.

    One subprocess for all of it: each costs ~10 s of imports on a slow 2-core machine.
    """
    facts = run_with_jax(FULL, str(tmp_path))
    assert facts["tensorflow_after_build"] is False
    for name, (keras_count, plan_count) in facts["params"].items():
        assert keras_count == plan_count, name
    assert all(loss == loss and loss < 100 for loss in facts["loss"].values()), facts["loss"]
    # Our code brings no TensorFlow; Keras' own file utilities may import it once saving.
    assert facts["tensorflow_before_save"] is False
    assert facts["loaded_class"] == "ResNetV2Classifier"
    assert max(facts["max_diff"].values()) < 1e-5, facts["max_diff"]
    assert facts["fast_file_sums"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert facts["preset"][0] == facts["preset"][1] == 11_183_488
