"""Real Redis Cluster and Sentinel topologies from redis-server processes, for the tests.

Ports are picked below 55535 (a cluster node's bus port is port + 10000) and checked free,
with their bus port, before use.

- :class:`ClusterHarness`: ``masters`` x (1 + ``replicas``) nodes started with
  ``--cluster-enabled yes --cluster-node-timeout <ms> --repl-diskless-sync-delay 0``, joined by
  ``redis-cli --cluster create ... --cluster-replicas N --cluster-yes``; ready once every node
  says ``cluster_state:ok`` and every replica's ``master_link_status:up`` (a replica that never
  finished its first sync is never promoted).
- :class:`SentinelHarness`: one primary, one replica and three sentinels
  (``redis-server <conf> --sentinel``) monitoring ``mymaster`` with
  ``down-after-milliseconds`` 1000.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis.crc import key_slot

from tests.support.redis_server import REDIS_SERVER, Processes, RedisServer

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
PORT_LOW, PORT_HIGH = 20_000, 55_535
_taken: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def low_free_port(bus: bool = False) -> int:
    """A free port in [20000, 55535); with ``bus`` also port + 10000 is free."""
    for _ in range(1000):
        port = random.randrange(PORT_LOW, PORT_HIGH)
        if port in _taken or (bus and port + 10_000 in _taken):
            continue
        if _bindable(port) and (not bus or _bindable(port + 10_000)):
            _taken.update((port, port + 10_000) if bus else (port,))
            return port
    raise RuntimeError("no free port below 55535")


def _info(server: RedisServer, section: str) -> dict[str, str]:
    """``INFO <section>`` as a dict; section ``cluster`` reads ``CLUSTER INFO``."""
    cmd = ("CLUSTER", "INFO") if section == "cluster" else ("INFO", section)
    raw = server.command(*cmd).decode(errors="replace")
    out: dict[str, str] = {}
    for line in raw.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def wait_for(cond: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if callable(cond) and cond():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.05)


class ClusterHarness(Processes):
    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    def start(self) -> ClusterHarness:
        for _ in range(self.masters * (1 + self.replicas)):
            port = low_free_port(bus=True)
            self.nodes.append(
                RedisServer(
                    port,
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{port}.conf",
                        "--cluster-node-timeout", str(self.node_timeout_ms),
                        "--repl-diskless-sync", "yes",
                        "--repl-diskless-sync-delay", "0",
                    ],
                ).start()
            )  # fmt: skip
        subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    @property
    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.running]

    @property
    def url(self) -> str:
        """A seed node's URL (the first live node)."""
        return self.live[0].url

    def wait_healthy(self, limit: float = 30.0) -> None:
        """Every live node sees cluster_state:ok and agrees on a live master for every
        slot; every live replica's link to its master is up."""

        def ok() -> bool:
            live_ports = {n.port for n in self.live}
            for node in self.live:
                if _info(node, "cluster").get("cluster_state") != "ok":
                    return False
                masters = self.masters_by_slot_ranges(node)
                if not masters or any(p not in live_ports for _, _, p in masters):
                    return False
                if sum(b - a + 1 for a, b, _ in masters) != 16384:
                    return False
                repl = _info(node, "replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return True

        wait_for(ok, limit, "a healthy cluster")

    def masters_by_slot_ranges(self, node: RedisServer) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) as ``node`` sees it (CLUSTER NODES)."""
        raw = node.command("CLUSTER", "NODES").decode(errors="replace")
        out: list[tuple[int, int, int]] = []
        for line in raw.splitlines():
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2].split(","):
                continue
            if "fail" in parts[2].split(",") or parts[7] != "connected":
                continue
            port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue
                a, _, b = rng.partition("-")
                out.append((int(a), int(b or a), port))
        return out

    def master_for_key(self, key: str) -> RedisServer:
        slot = key_slot(key.encode())
        for a, b, port in self.masters_by_slot_ranges(self.live[0]):
            if a <= slot <= b:
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class SentinelHarness(Processes):
    MASTER = "mymaster"

    def __init__(self, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.down_after_ms = down_after_ms
        self.primary = RedisServer(low_free_port(), extra_args=["--repl-diskless-sync-delay", "0"])
        self.replica = RedisServer(
            low_free_port(),
            extra_args=[
                "--replicaof", "127.0.0.1", str(self.primary.port),
                "--repl-diskless-sync-delay", "0",
            ],
        )  # fmt: skip
        self.sentinel_ports = [low_free_port() for _ in range(sentinels)]
        self.dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def start(self) -> SentinelHarness:
        self.primary.start()
        self.replica.start()
        wait_for(
            lambda: _info(self.replica, "replication").get("master_link_status") == "up",
            20,
            "the replica's first sync",
        )
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"logfile {self.dir / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.MASTER} 10000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
            )
            self.procs.append(
                subprocess.Popen(
                    [REDIS_SERVER, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for port in self.sentinel_ports:
            probe = RedisServer(port)
            wait_for(
                lambda probe=probe: (
                    b"num-other-sentinels" in probe.command("SENTINEL", "MASTER", self.MASTER)
                ),
                20,
                f"sentinel {port}",
            )
        # Every sentinel knows the replica and the other sentinels before a failover is asked.
        wait_for(self._converged, 30, "sentinels to discover the replica and each other")
        return self

    def _converged(self) -> bool:
        for port in self.sentinel_ports:
            raw = RedisServer(port).command("SENTINEL", "MASTER", self.MASTER).decode()
            fields = raw.split("\r\n")
            values = {fields[i]: fields[i + 2] for i in range(2, len(fields) - 2, 4)}
            if values.get("num-slaves") != "1":
                return False
            if values.get("num-other-sentinels") != str(len(self.sentinel_ports) - 1):
                return False
        return True

    def master_port(self) -> int:
        """The master's port as the first answering sentinel reports it."""
        for port in self.sentinel_ports:
            try:
                raw = RedisServer(port).command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
            except OSError:
                continue
            return int(raw.decode().split("\r\n")[4])
        raise RuntimeError("no sentinel answers")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        self.primary.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
