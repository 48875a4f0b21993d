"""Several workers, one run: agreeing on the facts at start-up, restoring, naming a lost peer.

The chief decides (its run folder is the record) and tells the others through
the strategy's collectives; a worker whose config or data differs stops every
worker with a message instead of training on different batches. A restarted
cluster continues in place from the last completed epoch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from resnet_builder import runs
from resnet_builder.config import Config, load_config
from resnet_builder.data import DataBundle
from resnet_builder.errors import UserError
from resnet_builder.runs import RunPaths
from resnet_builder.training import checkpoint, progress
from resnet_builder.training.callbacks import remove_backup
from resnet_builder.training.resume import (
    RESUMABLE_KEYS,
    differing_keys,
    flat_config,
    replace_earlier_run,
    resume_meta,
)
from resnet_builder.training.strategy import (
    StrategyInfo,
    all_workers,
    json_from_chief,
    variables_from_chief,
)

# Keys the workers of one multi-worker run may set differently: they change where things go
# and what is shown on each machine, not what is computed.
LOCAL_KEYS = ("run.project", "run.exist_ok", "run.progress", "run.plots", "run.tensorboard",
              "run.loggers", "hardware.threads", "distribute.connect_timeout", "data.path")


RESTART_HINT = "restart the same command on every machine"
# what TensorFlow raises when a peer is gone or cannot be reached; any other error is the
# cluster's only when its text says so (a collective aborted by a peer's missed heartbeats)
_NETWORK_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                   tf.errors.DeadlineExceededError)
_PEER_WORDS = re.compile(r"abort|unhealthy|unavailable|connect|coordination|heartbeat|socket",
                         re.I)


def lost_peer(exc: tf.errors.OpError) -> bool:
    """Whether a failed op is the cluster's (a peer died, restarted or cannot be reached):
    an XLA error in the step was reported as "lost contact" with a worker still alive."""
    return isinstance(exc, _NETWORK_ERRORS) or bool(_PEER_WORDS.search(exc.message or ""))


def cluster_failure(exc: tf.errors.OpError, dist: StrategyInfo, done: int) -> UserError:
    """A collective that TensorFlow aborted (a peer died or restarted), said plainly."""
    text = exc.message or str(exc)
    me = dist.cluster.me if dist.cluster else None
    lost = []
    for kind, index in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text):
        task = next((t for t in (dist.cluster.tasks if dist.cluster else ())
                     if t.type == kind and t.index == int(index)), None)
        if task is not None and task != me and str(task) not in lost:
            lost.append(str(task))
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if re.search(r"abort|unhealthy|unavailable|connect",
                                                        line, re.I)), lines[-1] if lines else "")
    who = ", ".join(lost) if lost else "another task of the cluster"
    return UserError(
        f"lost contact with {who} ({detail[:300]}); this task is {dist.task}",
        hint=f"{RESTART_HINT}: each worker resumes from the last completed epoch ({done})")


def _data_fingerprint(data: DataBundle) -> dict[str, Any]:
    """What every worker must see the same of the data (the images themselves are not sent)."""
    return json.loads(json.dumps({
        "num_train": data.num_train, "num_val": data.num_val, "classes": data.class_names,
        "mean": [round(float(v), 4) for v in data.mean],
        "std": [round(float(v), 4) for v in data.std]}))


def _continue_in_place(cfg: Config, run_dir: Path) -> dict | None:
    """Multi-worker restart: the chief continues ``run_dir`` when it holds this run's checkpoint."""
    paths = runs.RunPaths(run_dir)
    if not paths.checkpoint.exists():
        return None
    if not paths.config.exists():
        raise UserError(f"{run_dir} has a checkpoint but no config.yaml",
                        hint="use another run.name (--name) for a new run", exit_code=2)
    original = load_config(paths.config)
    differ = differing_keys(flat_config(cfg), flat_config(original),
                            RESUMABLE_KEYS + LOCAL_KEYS + ("run.name",))
    if differ:
        raise UserError(f"{run_dir} holds a run with another config (differs in "
                        f"{', '.join(differ[:6])})",
                        hint="multi-worker runs continue in place when restarted: use another "
                             "run.name (--name) for a new run, or the run's own config.yaml",
                        exit_code=2)
    progress.say(cfg.run.progress, f"{run_dir} holds this run's checkpoint: continuing it")
    return resume_meta(run_dir, cfg, original)


def _refuse_exist_ok(cfg: Config) -> None:
    """The chief's key (it keeps the folder), so its refusal reaches every worker: a restart
    re-runs the same command to continue the run, which exist_ok would replace."""
    if cfg.run.exist_ok:
        raise UserError("run.exist_ok (--exist-ok) with multi_worker: a restart re-runs the "
                        "same command to continue the run, which exist_ok would replace",
                        hint="drop --exist-ok (delete the old run folder yourself to start "
                             "afresh)", exit_code=2)


def start_together(cfg: Config, run_dir: Path | None, meta: dict | None, dist: StrategyInfo,
                    data: DataBundle, lock: Callable[[Path], None]) -> tuple[Path, dict | None]:
    """Every worker agrees on the run folder, the resume point, the config and the data.
    The chief takes the run folder's lock (``lock``) first; a refusal reaches every worker.

    The chief decides (its run folder is the record) and tells the others; a worker whose
    config or data differs stops every worker with a message instead of training on
    different batches.
    """
    view: dict[str, Any]
    refusal, fresh = None, run_dir is None
    if dist.is_chief:
        try:
            _refuse_exist_ok(cfg)
            if fresh:  # no exp2 numbering: every worker must name the same folder
                run_dir = runs.new_run_dir(cfg.run.project, cfg.run.name, exist_ok=True)
            lock(Path(run_dir))  # before anything in it is read or cleared
            if fresh:
                meta = _continue_in_place(cfg, run_dir)
                if meta is None:  # another run's files, without a checkpoint to continue
                    replace_earlier_run(cfg, run_dir)
            view = {"run_dir": str(run_dir), "meta": meta, "config": flat_config(cfg),
                    "data": _data_fingerprint(data)}
        except UserError as exc:
            refusal = exc
            view = {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
    else:
        view = {}
    chief = json_from_chief(dist, view)
    if refusal is not None:
        raise refusal
    if "error" in chief:
        raise UserError(f"the chief, {dist.cluster.chief if dist.cluster else 'task 0'}, "
                        f"refused to start: {chief['error']}", hint=chief.get("hint"),
                        exit_code=chief.get("exit_code", 1))
    problem = None
    if not dist.is_chief:
        differ = differing_keys(flat_config(cfg), chief["config"], LOCAL_KEYS)
        if differ:
            problem = ("this worker's config differs from the chief's in "
                       + ", ".join(f"{k} ({flat_config(cfg).get(k)!r} here, "
                                   f"{chief['config'].get(k)!r} on the chief)"
                                   for k in differ[:6]))
        elif _data_fingerprint(data) != chief["data"]:
            problem = (f"this worker's data differs from the chief's (here "
                       f"{_data_fingerprint(data)}, on the chief {chief['data']})")
    if not all_workers(dist, problem is None):
        if dist.is_chief and fresh:  # the folder it made holds only its .lock
            runs.remove_unstarted_run(Path(run_dir))
        raise UserError(problem or "a worker's config or data differs from the chief's; its "
                        "output says which", hint="start every worker with the same config "
                        "(only " + ", ".join(LOCAL_KEYS) + " may differ) and the same data",
                        exit_code=2)
    meta = chief["meta"]
    if not dist.is_chief and meta is None:  # a new run: forget an older run's backup
        remove_backup(dist.backup_dir(Path(cfg.run.project) / cfg.run.name))
    return Path(chief["run_dir"]), meta


def resume_point(meta: dict) -> tuple[int, int | None, int | None]:
    """Where a checkpoint stands: completed epochs, then the epoch and batch of a mid-epoch
    one. A worker's backup must stand where the chief's checkpoint does: the end of epoch
    k and a mid-epoch checkpoint of epoch k + 1 both count k completed epochs."""
    inside = meta.get("epoch_progress") or {}
    return meta["epochs_completed"], inside.get("epoch"), inside.get("batches")


def _where(meta: dict) -> str:
    done, epoch, batch = resume_point(meta)
    return f"epoch {done} completed" if epoch is None else f"epoch {epoch}, batch {batch}"


def restore(paths: RunPaths, backup: Path | None, model, optimizer, dist: StrategyInfo,
            meta: dict, progress_mode: str) -> None:
    """Load the resume point: the chief from the run folder, other workers from their backup.

    A worker without a backup of that epoch (a new machine, a cleaned temp folder) gets the
    chief's weights through the collectives instead.
    """
    if dist.is_chief:
        checkpoint.load_checkpoint(paths.checkpoint, model, optimizer)
        have = True
    else:
        have = False
        if backup is not None and backup.exists():
            try:
                have = resume_point(checkpoint.read_meta(backup)) == resume_point(meta)
            except UserError:
                have = False
            if have:
                checkpoint.load_checkpoint(backup, model, optimizer)
    if dist.name == "multi_worker" and not all_workers(dist, have):
        progress.say(progress_mode,
                     f"a worker has no backup of this resume point ({_where(meta)}): every "
                     f"worker takes the chief's weights and optimizer state")
        variables_from_chief(dist, [*model.variables, *optimizer.variables])
