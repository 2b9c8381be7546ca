"""A real two-node Ray cluster on this machine for the tests: a head and a worker node, each its own
``ray start`` (its own raylet, object store and workers), with token authentication.

Each ``ray start`` runs in a session of its own, so every process of a node is in one process group,
and :meth:`RayCluster.stop` ends exactly those groups. ``ray stop`` is not used: it ends every Ray
process on the machine, those of other test processes and users included.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RayCluster:
    """``ray start --head`` and ``ray start --address`` (one CPU each) with ``RAY_AUTH_MODE=token``.

    ``env`` is what a driver needs to join: the mode and ``RAY_AUTH_TOKEN_PATH``, the token file
    written here (mode 600) that every node reads.
    """

    def __init__(self, cpus_per_node: int = 1, timeout: float = 120.0) -> None:
        # Ray's Unix sockets live under the temp dir and their paths are limited to ~107 characters
        self.tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="mfr"))
        self.token = self.tmp / "token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
        gcs, dashboard, agent_head, agent_worker = _free_ports(4)
        self.address = f"127.0.0.1:{gcs}"
        self.timeout = timeout
        self.groups: list[int] = []
        atexit.register(self.stop)  # also when a test run is interrupted before the test's finally
        common = ["--num-cpus", str(cpus_per_node), "--temp-dir", str(self.tmp), "--node-ip-address", "127.0.0.1",
                  "--object-store-memory", str(150 * 2**20), "--disable-usage-stats"]
        try:
            self._start("head", "--head", "--port", str(gcs), "--include-dashboard", "false", "--dashboard-port",
                        str(dashboard), "--dashboard-agent-listen-port", str(agent_head), *common)
            self._start("worker", "--address", self.address, "--dashboard-agent-listen-port", str(agent_worker),
                        *common)
            self.node_ids = self.wait_for_nodes(2)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, *args: str) -> None:
        log = self.tmp / f"{name}.log"
        with open(log, "w") as out:
            p = subprocess.Popen([RAY, "start", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.groups.append(p.pid)  # the node's processes stay in this group after `ray start` returns
        try:
            rc = p.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"ray start ({name}) did not return within {self.timeout:.0f}s; see {log}") from None
        if rc != 0:
            raise RuntimeError(f"ray start ({name}) failed with exit code {rc}:\n{log.read_text()[-3000:]}")

    def status(self) -> str:
        r = subprocess.run([RAY, "status", "--address", self.address], env=self.env, capture_output=True, text=True,
                           timeout=60)
        return r.stdout + r.stderr

    def wait_for_nodes(self, n: int) -> list[str]:
        """The ids of the ``n`` alive nodes, as ``ray status`` lists them (waits for them to register)."""
        deadline = time.monotonic() + self.timeout
        while True:
            out = self.status()
            active = out.split("Active:")[-1].split("Pending:")[0] if "Active:" in out else ""
            ids = re.findall(r"node_([0-9a-f]{16,})", active)
            if len(ids) >= n:
                return ids
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {self.timeout:.0f}s for {n} Ray nodes to register; ray status:\n{out}")
            time.sleep(1.0)

    def stop(self) -> None:
        """SIGKILL both nodes' process groups (and anything left that names this cluster's temp dir)."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.groups = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if str(self.tmp).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
