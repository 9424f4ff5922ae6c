"""A real multi-node Ray cluster on this machine, for tests and benchmarks of the Ray engine.

`LocalCluster` starts a head (``ray start --head``) and worker nodes (``ray start --address``), all on
``127.0.0.1`` with their own temporary directory and ports, so that it never joins or disturbs another
cluster of the machine. `kill_node` kills one worker node's raylet (a node lost mid-run); `stop` ends
only the processes this cluster started (never ``ray stop``, which ends every Ray process of the user).
When ``~/.ray/auth_token`` exists, Ray 2.60 heads require token authentication, so the nodes and the
driver get ``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from dualex.errors import DualexError


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, *, contiguous: bool = False) -> list[int]:
    """``n`` ports that nobody listens on now (``contiguous``: consecutive)."""
    for _ in range(200):
        base = random.randint(20000, 60000 - n)
        ports = list(range(base, base + n)) if contiguous else random.sample(range(20000, 60000), n)
        if all(_free(p) for p in ports):
            return ports
    raise DualexError(f"could not find {n} free ports on 127.0.0.1")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class LocalCluster:
    """A Ray cluster of ``nodes`` nodes (head included) on 127.0.0.1, ``cpus`` CPUs each.

    Use as a context manager; `address` is the head's GCS address (``RAY_ADDRESS``), `env` the
    environment a driver process needs (``RAY_ADDRESS``, ``RAY_AUTH_MODE`` when required).

    Args:
        nodes: Number of nodes (>= 1).
        cpus: CPUs each node offers.
        object_store_mb: Object store per node, MB.
        env: Extra environment for the node processes (e.g. ``PYTHONPATH`` for workers).
    """

    def __init__(self, nodes: int = 2, *, cpus: int = 1, object_store_mb: int = 128,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.n_nodes, self.cpus, self.object_store_mb = nodes, cpus, object_store_mb
        self.temp = tempfile.mkdtemp(prefix="dxray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.env = {**os.environ, **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        if (Path.home() / ".ray" / "auth_token").exists():
            self.env["RAY_AUTH_MODE"] = "token"
        self.port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.node_ports: list[int] = []
        self._ray = str(Path(sys.executable).with_name("ray"))

    def _start(self, head: bool) -> None:
        p = free_ports(7)
        workers = free_ports(24, contiguous=True)
        args = [self._ray, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                f"--object-store-memory={self.object_store_mb * 1024 * 1024}", f"--node-manager-port={p[0]}",
                f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}",
                f"--dashboard-agent-listen-port={p[3]}", f"--dashboard-agent-grpc-port={p[4]}",
                f"--runtime-env-agent-port={p[5]}", f"--min-worker-port={workers[0]}",
                f"--max-worker-port={workers[-1]}", "--disable-usage-stats"]  # fmt: skip
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={p[6]}",
                     f"--temp-dir={self.temp}"]  # fmt: skip
        else:
            args += [f"--address={self.address}"]
        res = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=180)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
            raise DualexError(f"ray start failed: {' | '.join(tail)}")
        self.node_ports.append(p[0])

    def start(self) -> LocalCluster:
        """Start the head, then the other nodes; returns once all have joined."""
        try:
            self._start(head=True)
            for _ in range(self.n_nodes - 1):
                self._start(head=False)
        except BaseException:
            self.stop()
            raise
        return self

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver process that joins this cluster through ``RAY_ADDRESS``."""
        return {**self.env, "RAY_ADDRESS": self.address}

    def raylet(self, node: int) -> int | None:
        """PID of node ``node``'s raylet (0: the head), or None if it is not running."""
        port = self.node_ports[node]
        for pid in self.pids():
            cmd = _cmdline(pid)
            if "raylet" in cmd.split(" ", 1)[0] and f"--node_manager_port={port}" in cmd:
                return pid
        return None

    def kill_node(self, node: int) -> None:
        """Kill node ``node``'s raylet with SIGKILL (its workers die with it), as a lost machine would."""
        pid = self.raylet(node)
        if pid is None:
            raise DualexError(f"node {node} has no running raylet")
        os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """Every process of this cluster: those naming its temporary directory, and their descendants."""
        kids = _children()
        roots = [int(e) for e in os.listdir("/proc") if e.isdigit() and self.temp in _cmdline(int(e))]
        out: list[int] = []
        todo = [r for r in roots if r != os.getpid()]
        while todo:
            pid = todo.pop()
            if pid not in out:
                out.append(pid)
                todo += kids.get(pid, [])
        return out

    def stop(self) -> None:
        """End this cluster's processes (SIGTERM, then SIGKILL after a grace period) and its temp dir."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]
                time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _state(pid: int) -> str:
    try:
        return "zombie" if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else "alive"
    except OSError:
        return "zombie"
