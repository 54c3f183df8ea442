"""A real multi-process Ray cluster on loopback for tests: `ray start --head` and worker
nodes as separate processes, which a test can kill like a preempted machine."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Head and worker nodes under one temp dir (so that only they are ever killed)."""

    def __init__(self, head_cpus: int = 2):
        self.temp_dir = tempfile.mkdtemp(prefix="rrc-", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = free_port()
        self.metrics_port = free_port()  # Ray's Prometheus endpoint on the head
        # The project's console scripts are on the nodes' PATH, as on a real cluster.
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        # Several nodes on one machine need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1; Ray
        # 2.60 starts clusters with token authentication, which clients then use.
        self.env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "RAY_AUTH_MODE": "token",
            # Ray's workers push metrics every 10 s by default; a test job is shorter.
            "RAY_metrics_report_interval_ms": "1000",
            "PATH": path,
        }
        self.env.pop("RAY_ADDRESS", None)
        self._ray(
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(self.metrics_port),
            "--num-cpus",
            str(head_cpus),
            "--temp-dir",
            self.temp_dir,
            "--disable-usage-stats",
        )
        self.nodes: dict[int, int] = {}  # node-manager port -> its CPUs

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self, *args: str) -> None:
        subprocess.run([RAY, *args], check=True, env=self.env, capture_output=True, timeout=120)

    def add_node(self, cpus: int, resources: str) -> int:
        """Start a worker node; returns its node-manager port, which names it."""
        port = free_port()
        self._ray(
            "start",
            "--address",
            self.address,
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(cpus),
            "--resources",
            resources,
            "--node-manager-port",
            str(port),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--disable-usage-stats",
        )
        self.nodes[port] = cpus
        return port

    def kill_node(self, node_port: int) -> int:
        """kill -9 a worker node's raylet and everything it started; returns how many."""
        # The raylet says --node_manager_port, its workers --node-manager-port: a
        # worker missed would go on serving its actor's calls for a while (the driver
        # reaches actors directly), and the node would not be gone.
        markers = (f"--node_manager_port={node_port}", f"--node-manager-port={node_port}")
        return _kill(
            [
                p
                for p in psutil.process_iter(["cmdline"])
                if any(m in " ".join(p.info["cmdline"] or []) for m in markers)
            ]
        )

    def wait_for_agent(self, timeout: float = 90) -> None:
        """Until the head's job agent takes submissions (it starts after the head)."""
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.dashboard}/api/version", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)

    def shutdown(self) -> None:
        _kill(
            [
                p
                for p in psutil.process_iter(["cmdline"])
                if self.temp_dir in " ".join(p.info["cmdline"] or [])
            ]
        )


def _kill(roots: list[psutil.Process]) -> int:
    victims = set()
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            victims |= {root, *root.children(recursive=True)}
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(victims), timeout=10)
    return len(victims)
