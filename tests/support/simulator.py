"""Run the exchange simulator as a subprocess and drive its control API from tests.

    with SimulatorHarness(seed=7) as sim:
        ex = ccxt.pro.binance(ccxt_config("binance", sim.base_url))
        sim.freeze(); truth = sim.book("binance", "BTC/USDT")

Sync helpers (urllib; fine from async tests, the simulator is another process) and async
twins prefixed with ``a`` (aiohttp) are provided.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

from exporter.devstack.procs import listening_event, simulator_command

ROOT = Path(__file__).resolve().parents[2]


class SimulatorError(RuntimeError):
    """The simulator did not start, or a control call failed."""


class SimulatorHarness:
    """``python -m exporter.simulator --port 0 --seed N`` as a child process, with sync and
    async clients of its control API (the demo's `exporter.devstack.procs.SimulatorProcess`
    only starts and stops it)."""

    def __init__(
        self,
        seed: int = 42,
        rate: float = 10.0,
        extra_args: list[str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.seed = seed
        self.rate = rate
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.port = 0
        self.listening: dict[str, Any] = {}
        self._stderr: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> SimulatorHarness:
        cmd = simulator_command(
            ["--port", "0", "--seed", str(self.seed), "--rate", str(self.rate), *self.extra_args]
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # stderr goes to a file: a pipe nobody reads would block a chatty, long-lived simulator
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def drain() -> None:  # the listening line, then whatever else, until exit
            for line in iter(stdout.readline, ""):
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, daemon=True).start()
        try:
            line = lines.get(timeout=self.start_timeout)
        except queue.Empty:
            self.stop()
            raise SimulatorError("simulator did not print its listening line in time") from None
        event = listening_event(line)
        if event is None:
            err = self.stderr()
            self.stop()
            raise SimulatorError(f"simulator exited before listening: {line!r} {err[-2000:]}")
        self.listening = event
        self.base_url = event["base_url"]
        self.port = int(event["port"])
        return self

    def stderr(self) -> str:
        """What the simulator wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, kill if needed; return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return proc.returncode

    def __enter__(self) -> SimulatorHarness:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- sync control ------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise SimulatorError(f"{method} {path}: HTTP {e.code} {e.read().decode()}") from e

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body or {})

    def health(self) -> Any:
        return self.get("/control/health")

    def book(self, exchange: str, market: str, depth: int = 100) -> Any:
        q = urllib.parse.quote(market, safe="")
        return self.get(f"/control/book/{exchange}/{q}?depth={depth}")

    def counters(self) -> Any:
        return self.get("/control/counters")

    def freeze(self) -> Any:
        return self.post("/control/freeze")

    def unfreeze(self) -> Any:
        return self.post("/control/unfreeze")

    def fault(self, exchange: str, kind: str, market: str | None = None, **kw: Any) -> Any:
        body: dict[str, Any] = {"exchange": exchange, "kind": kind, **kw}
        if market is not None:
            body["market"] = market
        return self.post("/control/fault", body)

    def dislocation(self, symbol: str, exchange: str, size: float, duration: float) -> Any:
        body = {"symbol": symbol, "exchange": exchange, "size": size, "duration": duration}
        return self.post("/control/dislocation", body)

    def mode(self, mode: str, rate: float | None = None) -> Any:
        body: dict[str, Any] = {"mode": mode}
        if rate is not None:
            body["rate"] = rate
        return self.post("/control/mode", body)

    def market_stop(self, exchange: str, market: str) -> Any:
        return self.post("/control/market/stop", {"exchange": exchange, "market": market})

    def market_start(self, exchange: str, market: str) -> Any:
        return self.post("/control/market/start", {"exchange": exchange, "market": market})

    def reset(self, frozen: bool = False) -> Any:
        """``POST /control/reset``: back to the state right after startup (sockets aborted)."""
        return self.post("/control/reset", {"frozen": frozen})

    def wait_until(self, predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:
        """Poll `predicate()` until truthy; return its value or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(interval)

    # -- async control -----------------------------------------------------------------------

    async def arequest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.base_url + path, json=body) as resp,
        ):
            payload = await resp.json()
            if resp.status >= 400:
                raise SimulatorError(f"{method} {path}: HTTP {resp.status} {payload}")
            return payload

    async def abook(self, exchange: str, market: str, depth: int = 100) -> Any:
        q = urllib.parse.quote(market, safe="")
        return await self.arequest("GET", f"/control/book/{exchange}/{q}?depth={depth}")

    async def acounters(self) -> Any:
        return await self.arequest("GET", "/control/counters")

    async def afreeze(self) -> Any:
        return await self.arequest("POST", "/control/freeze", {})

    async def aunfreeze(self) -> Any:
        return await self.arequest("POST", "/control/unfreeze", {})

    async def afault(self, exchange: str, kind: str, market: str | None = None, **kw: Any) -> Any:
        body: dict[str, Any] = {"exchange": exchange, "kind": kind, **kw}
        if market is not None:
            body["market"] = market
        return await self.arequest("POST", "/control/fault", body)

    async def adislocation(self, symbol: str, exchange: str, size: float, duration: float) -> Any:
        body = {"symbol": symbol, "exchange": exchange, "size": size, "duration": duration}
        return await self.arequest("POST", "/control/dislocation", body)
