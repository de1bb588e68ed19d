"""Run the exporter against the simulator: in-process (to inspect its state) or as a
subprocess (to test signals and the real CLI).

    async with running_exporter(sim_config(sim.base_url)) as exp:
        await wait_for(lambda: exp.state.status("binance", "BTC/USDT") == "live")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from exporter.app import Exporter
from exporter.config import Config, parse
from exporter.devstack.procs import free_port
from exporter.http.webconfig import WebConfigFile
from exporter.simulator.endpoints import ccxt_config

ROOT = Path(__file__).resolve().parents[2]

SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
}


def _ccxt(exchange: str, base_url: str) -> dict[str, Any]:
    config = ccxt_config(exchange, base_url)
    if exchange == "kraken":  # ccxt spaces Kraken REST calls 1 s apart (the venue's limit):
        config["rateLimit"] = 50  # a second of every start spent waiting on the simulator
    return config


def sim_config_data(
    base_url: str,
    redis_url: str | None = None,
    feeds: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config dict for the simulator with short timeouts (stale_after 1 s, a silent book
    re-snapshotted after 2 s, backoff <= 1 s).

    ``feeds`` is merged into those defaults (e.g. a longer stale_after for a test that freezes
    the simulator); any other section given replaces the default one."""
    data: dict[str, Any] = {
        "exchanges": {ex: {"ccxt": _ccxt(ex, base_url)} for ex in ("binance", "kraken")},
        "symbols": SYMBOLS,
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000],
        "feeds": {
            "stale_after": 1.0,
            # A book left wrong by a fault just before a freeze heals at its next snapshot,
            # within freeze_and_compare's wait (live markets are never silent for 2 s here).
            "resubscribe_after": 2.0,
            "frozen_after": 30,
            "max_book_skew": 2,
            "backoff": {"base": 0.1, "cap": 1.0},
        },
        "windows": {"open_threshold": 0.0, "close_threshold": -0.0002, "min_duration_seconds": 0},
        "redis": {"url": redis_url, "flush_interval": 0.05},
        "web": {"listen_address": f"127.0.0.1:{free_port()}"},
    }
    data["feeds"].update(feeds or {})
    data.update(sections)
    return data


def sim_config(
    base_url: str,
    redis_url: str | None = None,
    feeds: dict[str, Any] | None = None,
    **sections: Any,
) -> Config:
    return parse(sim_config_data(base_url, redis_url, feeds, **sections), "test", environ={})


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_exporter(
    config: Config,
    web_config: WebConfigFile | None = None,
    record_dir: Path | None = None,
    setup: Callable[[Exporter], None] | None = None,
) -> AsyncIterator[Exporter]:
    """An in-process exporter, running while the block runs; ``setup`` sees it before it
    starts (e.g. to tap its recorder)."""
    exporter = Exporter(config, web_config, record_dir=record_dir)
    if setup is not None:
        setup(exporter)
    started = asyncio.Event()

    async def on_started(_: Exporter) -> None:
        started.set()

    task = asyncio.create_task(exporter.run(on_started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield exporter
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 15)


def all_live(exporter: Exporter) -> bool:
    return all(exporter.state.status(ex, m) == "live" for ex, m in exporter.feed_stats)


class ExporterProcess:
    """``arb-exporter run --config.file F`` as a child process (own session)."""

    def __init__(self, config_data: dict[str, Any]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cryptoarb-test-")
        self.config_path = Path(self._dir.name) / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config_data))
        self.log_path = Path(self._dir.name) / "exporter.log"
        self.listen = config_data["web"]["listen_address"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self) -> ExporterProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            cmd = [sys.executable, "-m", "exporter.cli.main", "run", "--config.file"]
            cmd.append(str(self.config_path))
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def open_windows(self) -> float:
        """Sum of ``cryptoarb_window_open`` on /metrics (-1 when it cannot be scraped)."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return -1
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("cryptoarb_window_open{")
        )

    def wait_open_windows(self, count: int, timeout: float = 20) -> None:
        """Block until exactly ``count`` windows are open (every book live and evaluated)."""
        deadline = time.monotonic() + timeout
        while (seen := self.open_windows()) != count:
            assert time.monotonic() < deadline, f"{seen} windows open, not {count}\n{self.log()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._dir.cleanup()
