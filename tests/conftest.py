"""Shared test set-up: quiet TensorFlow, and the heaviest test files first.

The README's test command (and .ci/run) runs the files on pytest-xdist workers, a file to a
worker (``--dist loadfile``, so a file's fixtures are made once). Starting the longest files first
keeps one worker from running a long file alone at the end (longest-first scheduling).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", os.path.join(os.path.dirname(__file__), ".keras_home_unused"))

# Seconds per file in a run of the README's test command (3 workers, `--durations=0`, 2-core
# AVX512 machine, 2026-12-02, 11:58 in all); every file over 15 s is named (unnamed files
# run last, where one of ~45 s could finish alone at the end).
HEAVIEST_FILES = {
    "test_distribute.py": 392, "test_train.py": 292, "test_loop.py": 212,
    "test_augment_policies.py": 110, "test_recipes_inference.py": 109,
    "test_optim_recipes.py": 102, "test_bench.py": 77, "test_api.py": 74, "test_export.py": 73,
    "test_predict.py": 59, "test_guarded.py": 53, "test_backbone.py": 51, "test_step.py": 50,
    "test_data.py": 49, "test_multilabel.py": 49, "test_streaming.py": 45,
    "test_decode_crops.py": 42, "test_pack.py": 42, "test_backends.py": 39,
    "test_loggers.py": 32, "test_evaluate.py": 27, "test_keras_file.py": 25,
    "test_imbalance.py": 20,
}


def pytest_configure(config: pytest.Config) -> None:
    """Import resnet_builder before any test file imports TensorFlow, so TensorFlow starts
    as in a user's process (oneDNN on x86: ``runtime.prefer_onednn``). Not in the xdist
    controller, which runs no tests: it would start TensorFlow for nothing."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        import resnet_builder  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first, each file's tests in their own order (a stable sort)."""
    items.sort(key=lambda item: -HEAVIEST_FILES.get(item.path.name, 0))
