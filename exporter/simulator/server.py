"""Composition: one aiohttp app on one port serving Binance, Kraken and the control API.

    python -m exporter.simulator --host 127.0.0.1 --port 0 --seed 42 --rate 10

On startup prints one JSON line to stdout and flushes it::

    {"event":"listening","host":"127.0.0.1","port":PORT,"base_url":"http://127.0.0.1:PORT"}

(``--port 0`` picks a free port). SIGINT/SIGTERM shut down cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from exporter.simulator.binance import BinanceVenue
from exporter.simulator.bybit import BybitVenue
from exporter.simulator.coinbase import CoinbaseVenue
from exporter.simulator.control import Control, auto_dislocations
from exporter.simulator.endpoints import set_symbols
from exporter.simulator.engine import MODES, Engine, Mode
from exporter.simulator.kraken import KrakenVenue
from exporter.simulator.market import World
from exporter.simulator.okx import OkxVenue

log = logging.getLogger("exporter.simulator")


@dataclass
class Simulator:
    """The assembled simulator (useful in-process, e.g. from tests or benchmarks)."""

    app: web.Application
    engine: Engine
    binance: BinanceVenue
    kraken: KrakenVenue
    coinbase: CoinbaseVenue


def build(
    seed: int = 42,
    rate: float = 10.0,
    mode: Mode = "random",
    dislocation_every: float | None = None,
    dislocation_size: float = 0.004,
    dislocation_duration: float = 5.0,
    symbols: int = 3,
    record_sends: bool = False,
    coinbase_idle_timeout: float = 10.0,
    venues: int = 2,
) -> Simulator:
    """Build the app; the engine and background tasks start with the app (on_startup)."""
    set_symbols(symbols, venues)
    engine = Engine(World(seed), rate=rate, mode=mode)
    if record_sends:
        engine.send_log = deque(maxlen=5_000_000)
    binance = BinanceVenue(engine)
    kraken = KrakenVenue(engine)
    coinbase = CoinbaseVenue(engine, coinbase_idle_timeout)
    engine.add_venue(binance)
    engine.add_venue(kraken)
    others = (BybitVenue(engine), OkxVenue(engine))  # reached through engine.venues
    for venue in others:
        engine.add_venue(venue)
    engine.add_venue(coinbase)
    control = Control(engine, {v.name: v for v in (binance, kraken, coinbase, *others)})
    app = web.Application(middlewares=[control.errors])
    app.add_routes(binance.routes() + kraken.routes() + coinbase.routes() + control.routes())
    app.add_routes([route for venue in others for route in venue.routes()])
    tasks: list[asyncio.Task[None]] = []

    async def start(_: web.Application) -> None:
        tasks.append(asyncio.create_task(engine.run(), name="sim-engine"))
        tasks.append(asyncio.create_task(kraken.heartbeat_loop(), name="sim-heartbeat"))
        tasks.append(asyncio.create_task(coinbase.run(), name="sim-coinbase"))
        if dislocation_every:
            coro = auto_dislocations(
                engine, dislocation_every, dislocation_size, dislocation_duration
            )
            tasks.append(asyncio.create_task(coro, name="sim-dislocations"))

    async def stop(_: web.Application) -> None:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def close_sockets(_: web.Application) -> None:
        for conn in [c for v in engine.venues.values() for c in v.conns]:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"simulator shutting down")

    app.on_startup.append(start)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(stop)
    return Simulator(app, engine, binance, kraken, coinbase)


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 42,
    rate: float = 10.0,
    mode: Mode = "random",
    dislocation_every: float | None = None,
    dislocation_size: float = 0.004,
    dislocation_duration: float = 5.0,
    stop: asyncio.Event | None = None,
    symbols: int = 3,
    record_sends: bool = False,
    coinbase_idle_timeout: float = 10.0,
    venues: int = 2,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when `stop` is None)."""
    sim = build(
        seed, rate, mode, dislocation_every, dislocation_size, dislocation_duration,
        symbols, record_sends, coinbase_idle_timeout, venues,
    )  # fmt: skip
    runner = web.AppRunner(sim.app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    line = {
        "event": "listening",
        "host": host,
        "port": bound,
        "base_url": f"http://{host}:{bound}",
        "seed": seed,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Fake Binance, Kraken (WS v2) and Coinbase spot exchanges for ccxt.pro.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rate", type=float, default=10.0, help="book updates/s per market")
    p.add_argument("--mode", choices=MODES, default="random")
    p.add_argument("--dislocation-every", type=float, default=None, metavar="SECONDS")
    p.add_argument("--dislocation-size", type=float, default=0.004, metavar="FRACTION")
    p.add_argument("--dislocation-duration", type=float, default=5.0, metavar="SECONDS")
    p.add_argument(
        "--symbols", type=int, default=3, metavar="N",
        help="canonical symbols served (>3 adds generated G0004/USDT + G0004/USD ...)",
    )  # fmt: skip
    p.add_argument(
        "--venues", type=int, choices=[2, 5], default=2,
        help="venues of the generated symbols: Binance and Kraken, or all five",
    )  # fmt: skip
    p.add_argument(
        "--record-sends", action="store_true",
        help="log each update's publish time for GET /control/sends (latency benchmarks)",
    )  # fmt: skip
    p.add_argument(
        "--coinbase-idle-timeout", type=float, default=10.0, metavar="SECONDS",
        help="close a Coinbase socket whose level2 subscription saw no update for this long "
        "unless it subscribed heartbeats (0 = never)",
    )  # fmt: skip
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    coro = serve(
        args.host,
        args.port,
        args.seed,
        args.rate,
        args.mode,
        args.dislocation_every,
        args.dislocation_size,
        args.dislocation_duration,
        symbols=args.symbols,
        record_sends=args.record_sends,
        coinbase_idle_timeout=args.coinbase_idle_timeout,
        venues=args.venues,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0
