"""What a resumed run may change, and whether a run folder can go on.

A resumed run continues after its last completed epoch from ``checkpoint.npz``.
It may change how long it runs, how it reports and checkpoints, where decoded images are
kept (``data.cache``), where the data is (``data.path``: a moved folder; a note says when
the data differs from what the run trained on) and the machine it runs on: every
``hardware`` key but the seed (precision ``auto`` re-resolves on the machine that resumes;
the checkpoint holds the optimizer's own state, without float16 loss scaling, so a GPU run
resumes on a CPU and back).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnet_builder.config import (
    Config,
    config_from_dict,
    config_to_dict,
    dump_config,
    key_specs,
)
from resnet_builder.data import DataBundle
from resnet_builder.data.pack_format import is_url
from resnet_builder.errors import UserError
from resnet_builder.runs import RunPaths, clear_earlier_run, resume_command
from resnet_builder.training import checkpoint, progress
from resnet_builder.training.state import RunState

RESUMABLE_KEYS = ("train.epochs", "train.early_stopping_patience", "train.checkpoint_every",
                  "run.progress", "run.plots", "run.tensorboard", "run.loggers", "run.log_every",
                  "data.cache",  # the same images, but a random resized crop is cut from the
                  # file when streamed and from the resized image when cached (a note says so)
                  "data.path",  # a moved folder (``data_change`` says if the data differs)
                  "model.weights",  # a moved donor: a resumed run starts from its checkpoint
                  "distribute.strategy",
                  "distribute.connect_timeout",
                  *(f"hardware.{key}" for key in key_specs()["hardware"] if key != "seed"))


def flat_config(cfg: Config) -> dict[str, Any]:
    """``section.key -> value`` of a config, as it reads after a trip through JSON."""
    flat = {f"{section}.{key}": value
            for section, keys in config_to_dict(cfg).items() for key, value in keys.items()}
    return json.loads(json.dumps(flat))  # the form it has after travelling as JSON


def differing_keys(mine: dict[str, Any], theirs: dict[str, Any],
                   ignore: tuple[str, ...]) -> list[str]:
    """The keys whose values differ between two flat configs, but those in ``ignore``."""
    return [k for k in sorted(set(mine) | set(theirs))
            if k not in ignore and mine.get(k) != theirs.get(k)]


# where the run folder is and how it was named: a moved or renamed folder resumes
FOLDER_KEYS = ("run.project", "run.name", "run.exist_ok")


def replace_earlier_run(cfg: Config, run_dir: Path, why: str = "") -> None:
    """A new run in a folder that held another: that run's files go first (``runs.
    clear_earlier_run``), and the terminal says which."""
    removed = clear_earlier_run(run_dir)
    if removed:
        progress.say(cfg.run.progress, f"{why}{run_dir} held an earlier run; removed its "
                                       f"{', '.join(removed)}")


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse ``--set`` keys that would make the resumed run a different run."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise UserError(f"--set {key} cannot change when resuming",
                            hint=f"a resumed run may change only: {', '.join(RESUMABLE_KEYS)}",
                            exit_code=2)


def rewrite_config_file(paths: RunPaths) -> None:
    """A run folder that lost only its config.yaml: written again from the config its
    checkpoint records (each checkpoint holds the whole config it trained with)."""
    flat = checkpoint.read_meta(paths.checkpoint).get("config")
    if not flat:  # a checkpoint from before configs were recorded
        raise UserError(f"{paths.root} has a checkpoint.npz but no config.yaml, and the "
                        "checkpoint is too old to record its config",
                        hint=f"put the run's config.yaml back into {paths.root}", exit_code=2)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    dump_config(config_from_dict(sections, f"{paths.checkpoint}'s config"), paths.config)
    progress.say("auto", f"note: {paths.config} was missing; written again from the config "
                         f"{paths.checkpoint.name} records")


def resume_meta(run_dir: Path, cfg: Config, original: Config) -> dict:
    """The checkpoint's metadata, after checking that the run can go on with ``cfg``."""
    paths = RunPaths(run_dir)
    meta = checkpoint.read_meta(paths.checkpoint)
    _refuse_edited_config(paths, original, meta)
    done = meta["epochs_completed"]
    extended = cfg.train.epochs != original.train.epochs
    if meta["status"] == "stopped_early" and not extended:
        raise UserError(f"{run_dir} stopped early after {done} of its {original.train.epochs} "
                        "epochs", hint=f"to train further: {resume_command(run_dir)} "
                        f"--set train.epochs=N (N > {original.train.epochs}; "
                        "patience starts afresh)", exit_code=2)
    if done >= cfg.train.epochs and not done == cfg.train.epochs == original.train.epochs:
        # asked for fewer than it has trained (or stopped early, then asked for no more)
        raise UserError(f"{run_dir} has trained {done} of its {original.train.epochs} epochs; "
                        f"train.epochs={cfg.train.epochs} leaves none to train",
                        hint=f"resume without --set train.epochs, or with N > {done}",
                        exit_code=2)
    if done >= cfg.train.epochs:
        raise UserError(f"{run_dir} already finished its {done} epoch{'' if done == 1 else 's'}",
                        hint=f"to extend it: {resume_command(run_dir)} "
                             f"--set train.epochs=N (N > {done})", exit_code=2)
    if extended:
        how = "extending" if cfg.train.epochs > original.train.epochs else "shortening"
        progress.say(cfg.run.progress,
                     f"{how} {run_dir} from {original.train.epochs} to {cfg.train.epochs} "
                     f"epochs; the learning-rate schedule is recomputed for {cfg.train.epochs}")
        meta["stale_epochs"] = 0  # an extended run gets a fresh patience
    return meta


def _refuse_edited_config(paths: RunPaths, original: Config, meta: dict) -> None:
    """config.yaml edited by hand since the checkpoint (``optim.lr: 0.5``) would change the
    run as ``--set`` may not: refused, naming the keys (checkpoints record their config)."""
    trained = meta.get("config")
    if trained is None:  # a checkpoint from before the record
        return
    now = flat_config(original)
    differ = [key for key in differing_keys(now, trained, (*RESUMABLE_KEYS, *FOLDER_KEYS))
              if key in trained and key in now]  # keys added or dropped by a new version: no
    if differ:
        shown = ", ".join(f"{k}: {now.get(k)!r} (trained with {trained.get(k)!r})"
                          for k in differ[:6])
        raise UserError(f"{paths.config} was edited since its checkpoint: {shown}",
                        hint="put those keys back to resume this run, or train a new run with "
                             "the new settings", exit_code=2)


def data_shape(data: DataBundle, random_crop: bool = False, steps: int | None = None
               ) -> dict[str, Any]:
    """What a checkpoint records of the data: class names, split sizes and steps per epoch
    (a packed dataset's depend on the worker count, which a resume may change), and with a
    random resized crop where it is cut from (``data.cache`` decides: streamed, from each
    file; cached, from the image already resized), so a resume that changes it says so."""
    shape = {"classes": list(data.class_names), "train": data.num_train, "val": data.num_val}
    if steps is not None:
        shape["steps"] = steps
    if random_crop:
        taken = data.decoder_augment()
        shape["crops_from"] = "files" if taken is not None and taken.crop else "resized images"
    return shape


def check_same_classes(meta: dict[str, Any] | None, class_names: list[str]) -> None:
    """A resumed run must find the classes it trained on, in their order: the model's
    outputs are those classes. Renamed or reordered class folders relabelled the images
    (c1's trained as c0) and the run went on with a note."""
    before = (meta or {}).get("data") or {}
    if "classes" not in before or list(before["classes"]) == list(class_names):
        return
    old, new = list(before["classes"]), list(class_names)
    gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
    said = "; ".join(part for part in (
        f"gone: {', '.join(gone[:5])}" if gone else "",
        f"new: {', '.join(added[:5])}" if added else "",
        "the same names in another order" if not gone and not added else "") if part)
    raise UserError(f"the data has other classes than this run trained on ({said}): its "
                    f"outputs are {len(old)} classes, {', '.join(old[:5])}"
                    f"{', ...' if len(old) > 5 else ''}",
                    hint="point data.path (--set data.path=...) at the data it trained on; "
                         "to go on with these classes, train a new run that starts from this "
                         "one (model.weights: <run>/last.keras)", exit_code=2)


def rebase_skipped(state: RunState, before: str | None, now: str | None) -> None:
    """Skipped files recorded under ``data.path`` as the run had it, named under its path now
    (a moved folder, or the same one spelled otherwise, ``big`` then ``/data/big``): else a
    resume named them again and skipped.csv listed each twice."""
    if not before or not now or is_url(str(before)) or is_url(str(now)):
        return
    old, new = (os.path.normpath(os.path.expanduser(str(p))) for p in (before, now))
    if old == new:
        return

    def moved(path: str) -> str:
        inside = os.path.relpath(os.path.normpath(path), old)
        if inside == os.pardir or inside.startswith(os.pardir + os.sep):
            return path  # not under the folder (a packed shard's record, say)
        return os.path.normpath(os.path.join(new, inside))

    state.skipped = {moved(path): why for path, why in state.skipped.items()}
    if state.epoch_progress and state.epoch_progress.get("skipped"):
        state.epoch_progress["skipped"] = [[moved(path), why]
                                           for path, why in state.epoch_progress["skipped"]]


def data_change(before: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """A note when a resumed run's data differs from what it trained on (files added or
    removed; other classes are refused by ``check_same_classes``), None when it looks the
    same (or the checkpoint predates the record): its batches then differ from an
    uninterrupted run's."""
    if before is None or before == now:
        return None
    changes = [f"{split} images {before[split]} -> {now[split]}" for split in ("train", "val")
               if before.get(split) != now[split]]
    if before.get("steps", now.get("steps")) != now.get("steps"):
        changes.append(f"steps per epoch {before['steps']} -> {now['steps']}, the learning-rate "
                       "schedule recomputed for them")
    if before.get("crops_from", now.get("crops_from")) != now.get("crops_from"):
        changes.append(f"random resized crops were cut from the {before['crops_from']}, now "
                       f"from the {now['crops_from']}: data.cache decides, with the cache budget")
    if not changes:
        return None
    return (f"note: the data differs from what this run trained on so far "
            f"({', '.join(changes)}); the resumed run goes on with it, but cannot match an "
            "uninterrupted run")
