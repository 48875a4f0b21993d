"""Choosing the ``tf.distribute`` strategy a run trains under, and starting a cluster safely.

``auto`` means mirrored when more than one GPU is visible, else the default
(single-device) strategy. The training step is written for any strategy, so
the same code runs on one CPU, several GPUs, several machines or a TPU.

Several machines (``multi_worker``) use TensorFlow's own
``MultiWorkerMirroredStrategy`` with the cluster from the standard
``TF_CONFIG`` variable. What this module adds around it is safety:

- ``TF_CONFIG`` is checked before any work (``cluster.py``): valid JSON,
  only ``chief``/``worker`` jobs, ``host:port`` addresses, this task inside
  the cluster.
- Before TensorFlow joins the cluster, every task takes part in a short
  rendezvous on its own ``TF_CONFIG`` port (``rendezvous.py``): it listens there,
  says hello to every peer and waits until it has reached every peer and heard
  from every peer, for at most ``distribute.connect_timeout`` seconds. A peer
  that never shows up is reported by name and address instead of the silent
  wait TensorFlow does on its own (measured on TF 2.21: joining a cluster
  whose peer is missing blocks in C++ for good, holding the GIL and ignoring
  SIGTERM).
- TensorFlow's own start is then watched by a small helper process that ends
  this one with a message if it still stalls (a peer that died in between).
- During training TensorFlow's coordination service notices a dead peer by its
  missing heartbeats (about 10 s) and aborts the collectives; the trainer turns
  that into a message saying how to resume. Per-collective timeouts
  (``CommunicationOptions(timeout_seconds=...)``) are not used: TensorFlow
  documents them as a debugging aid that starts one thread per collective.

The small ``*_from_chief`` / ``all_workers`` helpers exchange start-up facts
(the chief's resume point, its config) through the strategy's own collectives.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from resnet_builder.errors import UserError
from resnet_builder.training import rendezvous
from resnet_builder.training.cluster import Cluster, Task, read_tf_config


@dataclass
class StrategyInfo:
    strategy: tf.distribute.Strategy
    name: str  # the strategy that actually runs: none | mirrored | multi_worker | tpu
    replicas: int
    is_chief: bool = True
    workers: int = 1
    cluster: Cluster | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        """This process in words: ``worker 1 (host:port)``, or ``local``."""
        return str(self.cluster.me) if self.cluster else "local"

    def backup_dir(self, run_dir: Path) -> Path:
        """Where a non-chief worker keeps its own resume checkpoint: outside the run folder.

        ``<temp>/resnet-builder-backup/<run name>-<hash of the run path>/<type>-<index>``,
        the same path whenever the same command is restarted on that machine.
        """
        me = self.cluster.me if self.cluster else Task("worker", 0, "", 0)
        tag = hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]
        return (Path(tempfile.gettempdir()) / "resnet-builder-backup" /
                f"{Path(run_dir).name}-{tag}" / f"{me.type}-{me.index}")


# One strategy per kind and process, reused by later runs: a second MirroredStrategy over
# the same devices starts its collective keys where the first one did, and TensorFlow then
# mixes up their all-reduces ("Shape mismatch in the collective instance"); a process can
# join a multi-worker cluster only once anyway.
_MADE: dict[tuple, tuple[tf.distribute.Strategy, Cluster | None]] = {}


def _mirrored() -> tf.distribute.Strategy:
    """All GPUs; without GPUs, every logical CPU device (one replica each)."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU")))
    key = ("mirrored", devices)
    if key not in _MADE:
        _MADE[key] = (tf.distribute.MirroredStrategy(devices=list(devices)), None)
    return _MADE[key][0]


def _multi_worker(connect_timeout: float, say) -> tuple[tf.distribute.Strategy, Cluster]:
    cluster = read_tf_config()
    key = ("multi_worker", cluster)
    if key in _MADE:
        return _MADE[key]  # type: ignore[return-value]
    if any(k[0] == "multi_worker" for k in _MADE):
        raise UserError("this process already joined a different TF_CONFIG cluster",
                        hint="a process can join one cluster; start a new process")
    say(f"{cluster.me}: waiting for the {len(cluster.tasks)} tasks of TF_CONFIG "
        f"(up to {connect_timeout:g} s)")
    rendezvous.rendezvous(cluster, connect_timeout)
    watchdog = rendezvous.Watchdog(
        connect_timeout,
        f"{cluster.me}: TensorFlow did not join the cluster within {connect_timeout:g} s "
        f"although every task had answered; a task probably stopped meanwhile. Restart the "
        f"same command on every machine (completed epochs are kept).")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    finally:
        watchdog.done()
    _MADE[key] = (strategy, cluster)
    return strategy, cluster


def make_strategy(name: str = "auto", *, connect_timeout: float = 120.0,
                  say=lambda text: None) -> StrategyInfo:
    """Create the strategy for ``distribute.strategy``; errors say what is missing.

    ``say`` receives progress lines (only multi_worker has any).
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    cluster = None
    if name == "none":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = _mirrored()
    elif name == "multi_worker":
        strategy, cluster = _multi_worker(connect_timeout, say)
    elif name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as exc:
            raise UserError(f"no TPU found ({exc})",
                            hint="use distribute.strategy: auto on machines without a TPU"
                            ) from None
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise UserError(f"unknown strategy {name!r}",
                        hint="use auto, none, mirrored, multi_worker or tpu")
    if cluster is None:
        return StrategyInfo(strategy, name, strategy.num_replicas_in_sync)
    return StrategyInfo(strategy, name, strategy.num_replicas_in_sync,
                        is_chief=cluster.is_chief, workers=len(cluster.tasks), cluster=cluster)


def distribute_shards(info: StrategyInfo,
                      shard_dataset: Callable[[int, int], tf.data.Dataset], global_batch: int):
    """The training batches for every replica, each worker reading only its own share.

    ``shard_dataset(shard, num_shards)`` gives that worker's rows of each global batch
    (the data room reads and decodes only those files). One worker: its global batches
    split over its replicas, as ``distribute_dataset``. Several workers: one input
    pipeline per worker (``distribute_datasets_from_function``), each batch cut into one
    piece per replica when a worker has several (``replica_pieces``).
    """
    if info.workers == 1:
        return distribute_dataset(info, shard_dataset(0, 1))
    per_replica = global_batch // info.replicas
    local_replicas = info.replicas // info.workers

    def worker_dataset(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = shard_dataset(ctx.input_pipeline_id, ctx.num_input_pipelines)
        return dataset if local_replicas == 1 else replica_pieces(dataset, local_replicas,
                                                                  per_replica)

    return info.strategy.distribute_datasets_from_function(worker_dataset)


def replica_pieces(dataset: tf.data.Dataset, replicas: int, per_replica: int
                   ) -> tf.data.Dataset:
    """Each batch as ``replicas`` consecutive pieces of up to ``per_replica`` rows (empty
    where a short batch runs out), one per replica in turn. Not ``Dataset.rebatch``, which
    fills a piece across batches: over a whole run's batches it would mix an epoch's short
    last batch with the next epoch's first rows, and the replicas' steps would drift."""
    plain = tf.autograph.experimental.do_not_convert  # plain TF ops

    @plain
    def pieces(*batch: tf.Tensor) -> tf.data.Dataset:
        count = tf.shape(batch[0], out_type=tf.int64)[0]
        starts = tf.minimum(tf.range(replicas, dtype=tf.int64) * per_replica, count)
        ends = tf.minimum(starts + per_replica, count)
        return tf.data.Dataset.from_tensor_slices((starts, ends)).map(
            plain(lambda start, end: tuple(part[start:end] for part in batch)))

    return dataset.flat_map(pieces)


def distribute_dataset(info: StrategyInfo, dataset: tf.data.Dataset):
    """``dataset`` (global batches) split over the replicas; unchanged on one replica.

    Every worker builds the same batches and keeps its own slice of each global batch
    (DATA sharding): used for validation; training reads per worker (``distribute_shards``).
    """
    if info.replicas == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return info.strategy.experimental_distribute_dataset(dataset.with_options(options))


# --------------------------------------------------------------------------- start-up facts

def _sum_over_workers(info: StrategyInfo, value: np.ndarray, contribute: bool) -> np.ndarray:
    """Sum ``value`` over the workers (each counted once), as float64.

    Every worker must call this at the same point, with same-shaped values.
    """
    mine = np.asarray(value, dtype=np.float64)
    if not contribute:
        mine = np.zeros_like(mine)
    if mine.size == 0:
        return mine
    return _summing(info.strategy)(tf.constant(mine.reshape(-1))).numpy().reshape(mine.shape)


_SUMMING: dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}  # by id of a strategy in _MADE


def _summing(strategy: tf.distribute.Strategy) -> Callable[[tf.Tensor], tf.Tensor]:
    """One graph function per strategy summing a float64 vector of any length over the
    workers (a worker's other local replicas add zeros): 1.9 ms a call between two
    localhost workers, against 4.3 for ``strategy.reduce`` of per-replica values made in
    Python each time; the workers agree on a stop this way at every read."""
    if id(strategy) not in _SUMMING:
        local = len(strategy.extended.worker_devices)

        def on_replica(values: tf.Tensor) -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            first_local = tf.cast(context.replica_id_in_sync_group % local == 0, tf.float64)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, values * first_local)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)], autograph=False)
        def summed(values: tf.Tensor) -> tf.Tensor:
            return strategy.experimental_local_results(strategy.run(on_replica, (values,)))[0]

        _SUMMING[id(strategy)] = summed
    return _SUMMING[id(strategy)]


def all_workers(info: StrategyInfo, flag: bool) -> bool:
    """True when ``flag`` is true on every worker."""
    return not any_worker(info, [not flag])[0]


def any_worker(info: StrategyInfo, flags: list[bool]) -> list[bool]:
    """Each of ``flags``: true on at least one worker (every worker calls this at the same
    point, with as many flags)."""
    if info.workers == 1:
        return list(flags)
    sums = _sum_over_workers(info, np.array(flags, dtype=np.float64), True)
    return [bool(total > 0) for total in sums]


def json_from_chief(info: StrategyInfo, obj: Any) -> Any:
    """The chief's ``obj`` (anything JSON can hold) on every worker; others' ``obj`` is ignored."""
    if info.workers == 1:
        return obj
    payload = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8) if info.is_chief else None
    size = int(_sum_over_workers(info, np.array([0 if payload is None else payload.size]),
                                 info.is_chief)[0])
    mine = payload if payload is not None else np.zeros(size, np.uint8)
    data = _sum_over_workers(info, mine, info.is_chief)
    return json.loads(data.astype(np.uint8).tobytes().decode())


def pairs_from_every_worker(info: StrategyInfo, pairs: list[tuple[str, str]]
                            ) -> list[tuple[str, str]]:
    """The union, in worker order, of every worker's (text, text) pairs (e.g. the files
    each worker's share of an epoch could not decode), on every worker.

    Every worker must call this at the same point. Each worker's pairs travel as the bytes
    ``a\\0b\\0`` per pair (a path holds no NUL), placed after the workers before it in a
    sum over the workers: two all-reduces. Not ``strategy.gather``, which traced a new
    function at every call (TensorFlow's retracing warning, every epoch with a skipped file)
    and crashed the process (SIGSEGV) when every worker had nothing.
    """
    if info.workers == 1 or info.cluster is None:
        return pairs
    mine = b"".join(f"{a}\0{b}\0".encode("utf-8", "surrogateescape") for a, b in pairs)
    me = info.cluster.tasks.index(info.cluster.me)
    sizes = np.zeros(info.workers)
    sizes[me] = len(mine)
    sizes = _sum_over_workers(info, sizes, True).astype(np.int64)
    if not sizes.sum():
        return []
    placed = np.zeros(int(sizes.sum()))
    start = int(sizes[:me].sum())
    placed[start:start + len(mine)] = np.frombuffer(mine, np.uint8)
    every = _sum_over_workers(info, placed, True).astype(np.uint8).tobytes()
    texts = every.decode("utf-8", "surrogateescape").split("\0")[:-1]
    return list(dict.fromkeys(zip(texts[::2], texts[1::2], strict=True)))


def variables_from_chief(info: StrategyInfo, variables) -> None:
    """Give every worker the chief's values of ``variables`` (same list on every worker)."""
    if info.workers == 1:
        return
    for var in variables:
        current = np.asarray(var.numpy())
        value = _sum_over_workers(info, current, info.is_chief)
        var.assign(value.astype(current.dtype).reshape(current.shape))
