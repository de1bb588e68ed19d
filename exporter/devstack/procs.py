"""Child processes the demo (and the tests) start: the simulator and a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import tempfile
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def _terminate(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def simulator_command(args: list[str]) -> list[str]:
    """The command line of the simulator child process (``args`` are its flags)."""
    return [sys.executable, "-m", "exporter.simulator", *args]


def listening_event(line: bytes | str) -> dict[str, Any] | None:
    """The simulator's startup line ``{"event":"listening","base_url",...}``, or None for any
    other line."""
    with contextlib.suppress(ValueError):
        event = json.loads(line)
        if isinstance(event, dict) and event.get("event") == "listening":
            return event
    return None


class SimulatorProcess:
    """``python -m exporter.simulator`` on a free port, for the demo stack (asyncio);
    ``base_url`` once started. (The tests' `tests.support.simulator.SimulatorHarness` adds a
    control-API client.)"""

    def __init__(self, args: list[str] | None = None) -> None:
        self.args = args or []
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def start(self, timeout: float = 15.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *simulator_command(self.args),
            stdout=asyncio.subprocess.PIPE,
            # Own session: Ctrl-C reaches only the parent, which stops children in order.
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
                if not line:
                    raise RuntimeError("simulator exited before listening")
                event = listening_event(line)
                if event is not None:
                    self.base_url = str(event["base_url"])
                    return
        except BaseException:
            await _terminate(self.proc)
            raise

    async def stop(self) -> None:
        if self.proc is not None:
            await _terminate(self.proc)


class RedisProcess:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="cryptoarb-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found (run scripts/setup.sh)")
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir.name,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    async def stop(self) -> None:
        if self.proc is not None:
            await _terminate(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self._dir.cleanup()
