"""Learning-rate schedules: warm-up, steps in epochs or iterations, cosine."""

import pytest

from resnet_builder.config import ScheduleConfig
from resnet_builder.training.schedules import build_schedule


def test_he_et_al_cifar_recipe():
    """lr 0.01 for 400 iterations, then 0.1, /10 at 32k and 48k iterations."""
    cfg = ScheduleConfig(type="step", milestones=[32000, 48000], unit="iterations", gamma=0.1,
                         warmup=400, warmup_mode="constant", warmup_lr=0.01)
    s = build_schedule(cfg, 0.1, epochs=164, steps_per_epoch=391)
    assert s.value(0) == pytest.approx(0.01)
    assert s.value(399) == pytest.approx(0.01)
    assert s.value(400) == pytest.approx(0.1)
    assert s.value(31999) == pytest.approx(0.1)
    assert s.value(32000) == pytest.approx(0.01)
    assert s.value(48000) == pytest.approx(0.001)


def test_milestones_in_epochs_and_linear_warmup():
    cfg = ScheduleConfig(type="step", milestones=[2, 4], unit="epochs", warmup=1,
                         warmup_mode="linear", warmup_lr=0.0)
    s = build_schedule(cfg, 1.0, epochs=6, steps_per_epoch=10)
    assert s.value(0) == pytest.approx(0.0)
    assert s.value(5) == pytest.approx(0.5)
    assert s.value(10) == pytest.approx(1.0)
    assert s.value(20) == pytest.approx(0.1)
    assert s.value(40) == pytest.approx(0.01)


def test_cosine_ends_at_min_lr_and_follows_run_length():
    cfg = ScheduleConfig(type="cosine", min_lr=0.001)
    short = build_schedule(cfg, 0.1, epochs=10, steps_per_epoch=10)
    long = build_schedule(cfg, 0.1, epochs=20, steps_per_epoch=10)
    assert short.value(0) == pytest.approx(0.1)
    assert short.value(50) == pytest.approx(0.0505)
    assert short.value(100) == pytest.approx(0.001)
    assert long.value(100) == pytest.approx(0.0505)  # extending a run stretches the schedule


def test_constant():
    s = build_schedule(ScheduleConfig(type="constant"), 0.3, epochs=3, steps_per_epoch=5)
    assert s.value(0) == s.value(14) == pytest.approx(0.3)
