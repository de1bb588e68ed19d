"""A private redis-server subprocess that tests can stop, kill and restart on the same port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerTLS:
    """The server's certificate and key, and the CA that ``command()``/``ping()`` trust."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class Processes:
    """``with``: ``start()`` (its processes cleaned up if it fails), ``cleanup()`` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class RedisServer(Processes):
    """``redis-server --save "" --appendonly no`` on 127.0.0.1:<free port>.

    ``stop()`` (SIGTERM, or ``save=True`` for SHUTDOWN SAVE so a restart keeps the data),
    ``kill()`` (SIGKILL) and ``start()`` again on the same port and data dir. ``extra_args``
    are appended to the command line (e.g. ``["--appendonly", "yes"]``). With ``tls`` the
    port speaks TLS only (``--port 0 --tls-port``, no client certificates) and ``url`` is
    ``rediss://``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_args: list[str] | None = None,
        data_dir: str | Path | None = None,
        startup_timeout: float = 10.0,
        tls: ServerTLS | None = None,
    ) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_args = list(extra_args or [])
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="redis-test-"))
        self.startup_timeout = startup_timeout
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        if self.running:
            return self
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert_file),
                "--tls-key-file", str(self.tls.key_file),
                "--tls-ca-cert-file", str(self.tls.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        cmd = [
            REDIS_SERVER,
            *listen,
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while True:  # the port may still be held briefly after a kill
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            if self._wait_ready(deadline):
                return self
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL)
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
            time.sleep(0.05)

    def _wait_ready(self, deadline: float) -> bool:
        assert self.proc is not None
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ping():
                return True
            time.sleep(0.01)
        return False

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command (inline RESP) and return the raw reply."""
        payload = f"*{len(args)}\r\n".encode()
        for a in args:
            b = a.encode()
            payload += b"$%d\r\n%s\r\n" % (len(b), b)
        with self._connect(timeout) as s:
            s.sendall(payload)
            return s.recv(65536)

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.tls is None:
            return sock
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        try:
            return ctx.wrap_socket(sock, server_hostname=self.host)
        except OSError:
            sock.close()
            raise

    def ping(self) -> bool:
        try:
            # With --requirepass an unauthenticated PING answers -NOAUTH: up all the same.
            return self.command("PING", timeout=0.5).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _terminate(self, sig: int, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def stop(self, *, save: bool = False) -> None:
        """Graceful stop; ``save=True`` writes dump.rdb first so ``start()`` reloads the data."""
        if not self.running:
            self.proc = None
            return
        if save:
            with contextlib.suppress(OSError):
                self.command("SHUTDOWN", "SAVE", timeout=5.0)
            assert self.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10.0)
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no shutdown work (data survives only with AOF, e.g. appendfsync always)."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, save: bool = False) -> RedisServer:
        self.stop(save=save)
        return self.start()

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
