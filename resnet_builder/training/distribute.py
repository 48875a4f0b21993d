"""Choosing the ``tf.distribute`` strategy a run trains under, and starting a cluster safely.

``auto`` means mirrored when more than one GPU is visible, else the default
(single-device) strategy. The training step is written for any strategy, so
the same code runs on one CPU, several GPUs, several machines or a TPU.

Several machines (``multi_worker``) use TensorFlow's own
``MultiWorkerMirroredStrategy`` with the cluster from the standard
``TF_CONFIG`` variable. What this module adds around it is safety:

- ``TF_CONFIG`` is checked before any work (``read_tf_config``): valid JSON,
  only ``chief``/``worker`` jobs, ``host:port`` addresses, this task inside
  the cluster.
- Before TensorFlow joins the cluster, every task takes part in a short
  rendezvous on its own ``TF_CONFIG`` port (``_rendezvous``): it listens there,
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
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from resnet_builder.errors import UserError

JOBS = ("chief", "worker")
_HELLO = b"resnet-builder hello "
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')


# --------------------------------------------------------------------------- TF_CONFIG

@dataclass(frozen=True)
class Task:
    """One task of the cluster: ``worker 1`` at ``host:port``."""

    type: str
    index: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.type} {self.index} ({self.address})"


@dataclass(frozen=True)
class Cluster:
    """``TF_CONFIG`` checked: every task (chief first) and which one this process is."""

    tasks: tuple[Task, ...]
    me: Task

    @property
    def chief(self) -> Task:
        return self.tasks[0]  # the chief task, or worker 0 when there is no chief

    @property
    def is_chief(self) -> bool:
        return self.me == self.chief

    @property
    def peers(self) -> list[Task]:
        return [t for t in self.tasks if t != self.me]


def _bad(message: str) -> UserError:
    return UserError(f"TF_CONFIG: {message}",
                     hint=f"TF_CONFIG describes the whole cluster and this task, e.g. "
                          f"{_TF_CONFIG_EXAMPLE} (see README, Distributed training)",
                     exit_code=2)


def _parse_address(text: object, where: str) -> tuple[str, int]:
    if not isinstance(text, str) or not text.strip():
        raise _bad(f"{where} must be a \"host:port\" string, got {text!r}")
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"{where} is {text!r}; expected host:port with a port from 1 to 65535")
    return host, int(port)


def read_tf_config(text: str | None = None) -> Cluster:
    """Check ``TF_CONFIG`` (from the environment unless ``text`` is given).

    Raises ``UserError`` (exit code 2) naming what is wrong: missing, not
    JSON, no cluster or task, a job other than chief/worker, a bad address,
    a repeated address, or a task index outside its job.
    """
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if text is None or not text.strip():
        raise _bad("the variable is not set; distribute.strategy multi_worker needs it on "
                   "every machine")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                   ) from None
    if not isinstance(data, dict):
        raise _bad(f"expected a JSON object with \"cluster\" and \"task\", got "
                   f"{type(data).__name__}")
    cluster, task = data.get("cluster"), data.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise _bad("\"cluster\" is missing or empty; it maps job names (chief, worker) to "
                   "lists of \"host:port\" addresses")
    for job, addresses in cluster.items():
        if job not in JOBS:
            raise _bad(f"job {job!r} in \"cluster\" is not supported; multi_worker training "
                       f"uses only \"chief\" (optional, one task) and \"worker\"")
        if not isinstance(addresses, list) or not addresses:
            raise _bad(f"cluster.{job} must be a non-empty list of \"host:port\" strings")
    if len(cluster.get("chief", [])) > 1:
        raise _bad(f"cluster.chief has {len(cluster['chief'])} addresses; there is at most "
                   f"one chief")
    tasks, seen = [], {}
    for job in JOBS:
        for i, address in enumerate(cluster.get(job, [])):
            host, port = _parse_address(address, f"cluster.{job}[{i}]")
            if (host, port) in seen:
                raise _bad(f"address {address} appears twice ({seen[host, port]} and "
                           f"{job} {i}); every task needs its own host:port")
            seen[host, port] = f"{job} {i}"
            tasks.append(Task(job, i, host, port))
    if not isinstance(task, dict):
        raise _bad("\"task\" is missing; it says which task this machine is, e.g. "
                   "{\"type\": \"worker\", \"index\": 0}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise _bad(f"task type {kind!r} is not a job of the cluster (jobs: "
                   f"{', '.join(cluster)})")
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise _bad(f"task index must be an integer, got {index!r}")
    count = len(cluster[kind])
    if not 0 <= index < count:
        raise _bad(f"task index {index} is outside the cluster: {kind} has {count} "
                   f"task{'s' if count > 1 else ''} (index 0 to {count - 1})")
    me = next(t for t in tasks if t.type == kind and t.index == index)
    return Cluster(tuple(tasks), me)


# --------------------------------------------------------------------------- rendezvous

def _listen(task: Task) -> socket.socket:
    """A listening socket on this task's port, on every interface (as TensorFlow binds)."""
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", task.port), family=socket.AF_INET6,
                                        dualstack_ipv6=True)
        return socket.create_server(("", task.port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(f"this task, {task}, cannot listen on port {task.port}: {reason}",
                        hint="another program (or a training still running) holds the port; "
                             "stop it or give this task another port in TF_CONFIG on every "
                             "machine") from None


def _read_hello(conn: socket.socket) -> tuple[str, int] | None:
    conn.settimeout(2.0)
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < 128:
            chunk = conn.recv(128)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        conn.close()
    if not data.startswith(_HELLO):
        return None
    try:
        kind, index = data[len(_HELLO):].decode().split()
        return kind, int(index)
    except ValueError:
        return None


def _rendezvous(cluster: Cluster, timeout: float, poll: float = 0.25) -> None:
    """Wait until every peer is reachable and has reached us, or raise naming who is missing."""
    peers = cluster.peers
    if not peers:
        return
    server = _listen(cluster.me)
    server.settimeout(poll)
    heard: set[tuple[str, int]] = set()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hello = _read_hello(conn)
            if hello:
                heard.add(hello)

    listener = threading.Thread(target=accept, name="resnet-builder-rendezvous", daemon=True)
    listener.start()
    hello = _HELLO + f"{cluster.me.type} {cluster.me.index}\n".encode()
    reached: set[Task] = set()
    errors: dict[Task, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            for peer in peers:
                if peer in reached:
                    continue
                left = deadline - time.monotonic()
                try:
                    with socket.create_connection((peer.host, peer.port),
                                                  timeout=max(0.1, min(2.0, left))) as conn:
                        conn.sendall(hello)
                    reached.add(peer)
                except socket.gaierror as exc:
                    errors[peer] = f"host name {peer.host!r} does not resolve ({exc.strerror})"
                except OSError as exc:
                    errors[peer] = exc.strerror or type(exc).__name__
            silent = [p for p in peers if (p.type, p.index) not in heard]
            if len(reached) == len(peers) and not silent:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
    finally:
        stop.set()
        listener.join(timeout=5)
        server.close()
    problems = [f"{p}: {errors.get(p, 'no answer')}" for p in peers if p not in reached]
    problems += [f"{p}: reachable, but it never reached this task" for p in silent
                 if p in reached]
    raise UserError(
        f"the cluster did not assemble within {timeout:g} s; this task is {cluster.me}; "
        f"missing: " + "; ".join(problems),
        hint="start the same command with its own TF_CONFIG on every machine of the cluster "
             "(within distribute.connect_timeout seconds of each other), and check host "
             "names, ports and firewalls: every task must reach every other task's port")


class _Watchdog:
    """A helper process that ends this one with ``message`` unless ``done()`` comes in time.

    TensorFlow blocks in C++ while it joins a cluster, holding the GIL, so a
    thread cannot time it out and SIGTERM is ignored; a separate process can
    still print why and stop it.
    """

    _CODE = (
        "import os, select, signal, sys\n"
        "pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]\n"
        "ready, _, _ = select.select([sys.stdin], [], [], seconds)\n"
        "if not ready:\n"
        "    sys.stderr.write('Error: ' + message + '\\n')\n"
        "    sys.stderr.flush()\n"
        "    os.kill(pid, signal.SIGKILL)\n"
    )

    def __init__(self, seconds: float, message: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._CODE, str(os.getpid()), str(seconds), message],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def done(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- strategies

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
    _rendezvous(cluster, connect_timeout)
    watchdog = _Watchdog(
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


def distribute_dataset(info: StrategyInfo, dataset: tf.data.Dataset):
    """``dataset`` (global batches) split over the replicas; unchanged on one replica.

    Every worker builds the same batches (the order and augmentation depend only on the
    seed and the epoch) and keeps its own slice of each global batch: DATA sharding, as
    the data comes from memory or a list of files, not from one file per worker.
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
    strategy = info.strategy
    local = len(strategy.extended.worker_devices)
    mine = np.asarray(value, dtype=np.float64)
    zeros = np.zeros_like(mine)

    def on_replica(ctx):
        first_local = ctx.replica_id_in_sync_group % local == 0
        return tf.constant(mine if contribute and first_local else zeros)

    per_replica = strategy.experimental_distribute_values_from_function(on_replica)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def all_workers(info: StrategyInfo, flag: bool) -> bool:
    """True when ``flag`` is true on every worker."""
    if info.workers == 1:
        return flag
    return float(_sum_over_workers(info, np.array([0.0 if flag else 1.0]), True)[0]) == 0.0


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


def variables_from_chief(info: StrategyInfo, variables) -> None:
    """Give every worker the chief's values of ``variables`` (same list on every worker)."""
    if info.workers == 1:
        return
    for var in variables:
        current = np.asarray(var.numpy())
        value = _sum_over_workers(info, current, info.is_chief)
        var.assign(value.astype(current.dtype).reshape(current.shape))
