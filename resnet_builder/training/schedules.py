"""Learning-rate schedules as a function of the optimizer's step counter.

The schedule reads ``optimizer.iterations``, which is saved in the checkpoint,
so a resumed run continues exactly where it stopped; extending a run builds
the schedule again for the new length. Milestones and warm-up may be given in
epochs or iterations (He et al. state theirs in iterations).
"""

from __future__ import annotations

import math

import keras

from resnet_builder.config import ScheduleConfig


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up (linear ramp or constant), then constant, step or cosine decay."""

    def __init__(self, kind: str, lr: float, total_steps: int, *, warmup_steps: int = 0,
                 warmup_lr: float = 0.0, warmup_mode: str = "linear",
                 milestones: tuple[int, ...] = (), gamma: float = 0.1,
                 min_lr: float = 0.0) -> None:
        self.kind = kind
        self.lr = float(lr)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)
        self.warmup_mode = warmup_mode
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        if self.kind == "step":
            passed = sum(ops.cast(step >= m, "float32") for m in self.milestones) \
                if self.milestones else 0.0
            main = self.lr * ops.power(self.gamma, passed)
        elif self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            main = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + ops.cos(math.pi * progress))
        else:
            main = ops.convert_to_tensor(self.lr, "float32")
        if not self.warmup_steps:
            return main
        if self.warmup_mode == "constant":
            warm = ops.convert_to_tensor(self.warmup_lr, "float32")
        else:
            warm = self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, main)

    def value(self, step: int) -> float:
        """The rate at ``step`` as a Python float (for results.csv and plots)."""
        return float(keras.ops.convert_to_numpy(self(step)))

    def get_config(self) -> dict:
        return {"kind": self.kind, "lr": self.lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr,
                "warmup_mode": self.warmup_mode, "milestones": self.milestones,
                "gamma": self.gamma, "min_lr": self.min_lr}


def build_schedule(cfg: ScheduleConfig, lr: float, epochs: int,
                   steps_per_epoch: int) -> WarmupSchedule:
    """The config's schedule in optimizer steps for a run of ``epochs`` epochs."""
    scale = steps_per_epoch if cfg.unit == "epochs" else 1
    return WarmupSchedule(
        cfg.type, lr, epochs * steps_per_epoch,
        warmup_steps=cfg.warmup * scale, warmup_lr=cfg.warmup_lr,
        warmup_mode=cfg.warmup_mode, milestones=tuple(m * scale for m in cfg.milestones),
        gamma=cfg.gamma, min_lr=cfg.min_lr,
    )
