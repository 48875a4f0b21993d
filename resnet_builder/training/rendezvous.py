"""Meeting the other workers before TensorFlow does, and watching TensorFlow's own start.

Before TensorFlow joins the cluster, every task takes part in a short rendezvous
on its own ``TF_CONFIG`` port (``rendezvous``): it listens there, says hello to
every peer and waits until it has reached every peer and heard from every peer,
for at most ``distribute.connect_timeout`` seconds. A peer that never shows up
is reported by name and address instead of the silent wait TensorFlow does on
its own (measured on TF 2.21: joining a cluster whose peer is missing blocks in
C++ for good, holding the GIL and ignoring SIGTERM). ``Watchdog`` then guards
TensorFlow's own start from a separate process. Pure Python.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from resnet_builder.errors import UserError
from resnet_builder.training.cluster import Cluster, Task

_HELLO = b"resnet-builder hello "


def listen(task: Task) -> socket.socket:
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


def rendezvous(cluster: Cluster, timeout: float, poll: float = 0.25) -> None:
    """Wait until every peer is reachable and has reached us, or raise naming who is missing."""
    peers = cluster.peers
    if not peers:
        return
    server = listen(cluster.me)
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
                if peer not in reached:
                    _say_hello(peer, hello, deadline - time.monotonic(), reached, errors)
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


def _say_hello(peer: Task, hello: bytes, left: float, reached: set[Task],
               errors: dict[Task, str]) -> None:
    """Send our hello to ``peer``: it joins ``reached``, or ``errors`` says why not."""
    try:
        with socket.create_connection((peer.host, peer.port),
                                      timeout=max(0.1, min(2.0, left))) as conn:
            conn.sendall(hello)
        reached.add(peer)
    except socket.gaierror as exc:
        errors[peer] = f"host name {peer.host!r} does not resolve ({exc.strerror})"
    except OSError as exc:
        errors[peer] = exc.strerror or type(exc).__name__


class Watchdog:
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
