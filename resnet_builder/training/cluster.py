"""``TF_CONFIG``: the cluster a multi-worker run joins, read and checked before any work.

Pure Python (no TensorFlow): valid JSON, only ``chief``/``worker`` jobs, ``host:port``
addresses, this task inside the cluster; every mistake is named with an example.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from resnet_builder.errors import UserError

JOBS = ("chief", "worker")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')



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
