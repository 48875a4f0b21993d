"""What a run says about itself: summary.json, and its first and last lines on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_builder.config import Config
from resnet_builder.data import DataBundle
from resnet_builder.training.state import RunState
from resnet_builder.training.strategy import StrategyInfo


def run_summary(state: RunState, cfg: Config, dist: StrategyInfo, run_dir: Path,
                precision: str) -> dict[str, Any]:
    """summary.json: status, best epoch, speed and how the run was set up."""
    return {
        "status": state.status,
        "best_epoch": state.best_epoch,
        "monitor": cfg.train.monitor,
        "best_value": state.best_value,  # the monitored value at best_epoch
        "best_val_accuracy": state.best_val_accuracy,
        "epochs_completed": state.epochs_completed,
        "epochs": cfg.train.epochs,
        "wall_seconds": round(state.wall_seconds, 2),
        "train_images_per_second": round(state.images_per_second, 1),
        "final_val_accuracy": state.history[-1].get("val_accuracy") if state.history else None,
        "strategy": dist.name,
        "replicas": dist.replicas,
        "workers": dist.workers,
        "mixed_precision": precision,
        "xla": cfg.hardware.xla,
        "run_dir": str(run_dir),
    }


def _strategy_words(dist: StrategyInfo) -> str:
    replicas = f"{dist.replicas} replica{'s' if dist.replicas > 1 else ''}"
    if dist.name != "multi_worker":
        return f"strategy {dist.name} ({replicas})"
    role = "chief" if dist.is_chief else "not the chief: writes no run folder"
    return (f"strategy multi_worker ({replicas} on {dist.workers} worker"
            f"{'s' if dist.workers > 1 else ''}; this is {dist.task}, {role})")


def start_line(cfg: Config, state: RunState, run_dir: Path, data: DataBundle, params: int,
               dist: StrategyInfo, lr: float) -> str:
    progress = state.epoch_progress
    what = "resuming" if state.history or progress else "training"
    middle = f" (epoch {progress['epoch']} from step {progress['batches']})" if progress else ""
    scaled = (f", lr {cfg.optim.lr:g} x {dist.replicas} replicas = {lr:g}"
              if cfg.optim.scale_lr_with_replicas and dist.replicas > 1 else "")
    return (f"{what} {run_dir}: {params:,} parameters, "
            f"{data.num_train} train / {data.num_val} val images, {len(data.class_names)} "
            f"classes, epochs {state.epochs_completed + 1}-{cfg.train.epochs}{middle}, "
            f"global batch {cfg.data.batch_size}{scaled}, {_strategy_words(dist)}")


def end_line(s: dict[str, Any], writes_run_folder: bool = True) -> str:
    """The run's last line; a worker that is not the chief names no folder (it has none)."""
    where = f"-> {s['run_dir']}" if writes_run_folder else "(the chief wrote the run folder)"
    best = (f"best {s['monitor']} {s['best_value']:.4f} at epoch {s['best_epoch']}"
            if s["best_value"] is not None else "no validation data")
    epochs = f"{s['epochs_completed']} epoch{'' if s['epochs_completed'] == 1 else 's'}"
    return (f"{s['status']}: {epochs}, {best}, "
            f"{s['wall_seconds']:.1f}s, {s['train_images_per_second']:.0f} train img/s "
            f"{where}")
