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

# Seconds per file in one serial run (`pytest --durations=0`, 2-core AVX2 machine, 2026-11-30,
# 26 min in all); the files not named take under 35 s each and follow in their usual order.
HEAVIEST_FILES = {
    "test_distribute.py": 228, "test_train.py": 144, "test_loop.py": 138,
    "test_augment_policies.py": 132, "test_optim_recipes.py": 126, "test_backends.py": 84,
    "test_multilabel.py": 59, "test_recipes_inference.py": 58, "test_bench.py": 51,
    "test_step.py": 51, "test_api.py": 47, "test_data.py": 47, "test_guarded.py": 45,
    "test_export.py": 45, "test_streaming.py": 41, "test_evaluate.py": 37,
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
