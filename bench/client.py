"""Benchmark client, started by the bench scripts (pinned with taskset):

    python bench/client.py raw      --base-url URL [--symbols N]
    python bench/client.py exporter --base-url URL [--symbols N] [--shard I/N] [--redis URL]
                                    [--port P] [--trace FILE] [--uvloop]

``raw``: a bare ccxt.pro loop (one client per market, like the exporter) that only calls
``watch_order_book`` and counts ccxt handler calls. ``exporter``: the full exporter (analytics,
windows, Redis writer, /metrics) on the same markets. Both print one JSON line every 0.1 s:
``{"t": unix time, "handled": ccxt handler calls so far, "live": markets live, "feeds": markets}``.
``--no-compress`` (raw) turns permessage-deflate off, as the exporter's clients have it
(exporter/feeds/clients.py), so both sides read the same frames.
``--trace FILE`` (exporter) records (exchange, market, nonce, time) each time the in-memory
state first reflects a Binance book, written to FILE at exit (latency benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ccxt.pro  # noqa: E402

from exporter.config import Config, parse  # noqa: E402
from exporter.simulator.endpoints import ccxt_config, generated_markets  # noqa: E402

DEPTH = 100


VENUES = ("binance", "kraken", "bybit", "okx", "coinbase")  # --venues 5: all of them


def symbol_map(n: int, venues: int = 2) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {
        "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
        "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
        "SOL/USD": {"binance": "SOL/USDT", "kraken": "SOL/USD"},
    }
    if venues == 5:  # as exporter/demo.yaml
        for symbol, mapping in out.items():
            base = symbol.split("/")[0]
            mapping.update(bybit=f"{base}/USDT", okx=f"{base}/USDT", coinbase=f"{base}/USD")
    for spec in generated_markets(n, venues) if venues != 2 else generated_markets(n):
        out.setdefault(spec.canonical, {})[spec.exchange] = spec.symbol
    return out


def make_config(args: argparse.Namespace) -> Config:
    index, count = (int(x) for x in args.shard.split("/"))
    data: dict[str, Any] = {
        "exchanges": {ex: {"ccxt": ccxt_config(ex, args.base_url)} for ex in VENUES[: args.venues]},
        "symbols": symbol_map(args.symbols, args.venues),
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000, 50000],
        "bands": [0.001, 0.005, 0.01],
        "feeds": {"depth": DEPTH, "stale_after": args.stale_after, "frozen_after": 30},
        "redis": {"url": args.redis, "flush_interval": 0.25},
        "web": {"listen_address": f"127.0.0.1:{args.port}"},
        "shard": {"index": index, "count": count},
    }
    return parse(data, "bench", environ={})


class IterationProbe:
    """Length of each event-loop iteration: a callback that re-queues itself with call_soon
    runs once per iteration (``--loop-stats``: the longest iteration of each report
    interval goes out as ``iter_max_ms``, and how many ran as ``iters``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = time.perf_counter()
        self.longest = 0.0
        self.count = 0
        self.handle = self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.count += 1
        self.last = now
        self.handle = self.loop.call_soon(self._tick)

    def take(self) -> dict[str, float]:
        out = {"iter_max_ms": round(self.longest * 1000, 2), "iters": self.count}
        self.longest, self.count = 0.0, 0
        return out


def cap_ccxt_drain(cap: int) -> None:
    """``--drain-cap K`` (measurement of a proposed feed change): ccxt's receive loop handles
    at most K buffered frames per loop callback and continues in the next iteration, instead
    of draining everything one socket read brought in one callback."""
    from ccxt.async_support.base.ws import client as ws_client

    original = ws_client.Client.receive_loop
    overhead = getattr(ws_client, "MSG_SIZE_OVERHEAD", 0)

    def receive_loop(self: Any) -> None:
        buf = self.buffer if not self.closed() else None
        if buf and len(buf) > cap + 1:
            size_delta = 0
            for _ in range(cap):
                message, size = buf.popleft()
                size_delta += size + overhead
                self.handle_message(message)
            # as ccxt does: the queue's size accounting is settled when buf[0] is read
            buf[0] = (buf[0][0], buf[0][1] + size_delta)
            self.asyncio_loop.call_soon(self.receive_loop)
            return
        original(self)

    ws_client.Client.receive_loop = receive_loop


LOOP_COUNTS = {"iters": 0, "handles": 0}


def count_loop_work() -> None:
    """``--loop-counts``: count event-loop iterations and callbacks run (reported as ``iters``
    and ``handles``, cumulative), to compare how much scheduling a message costs on each side.
    asyncio's loop only (a counter per call costs ~0.1 µs; uvloop's loop is C)."""
    from asyncio import base_events, events

    run_once = base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
    run = events.Handle._run

    def counted_run_once(self: Any) -> None:
        LOOP_COUNTS["iters"] += 1
        run_once(self)

    def counted_run(self: Any) -> None:
        LOOP_COUNTS["handles"] += 1
        run(self)

    base_events.BaseEventLoop._run_once = counted_run_once  # type: ignore[attr-defined]
    events.Handle._run = counted_run  # type: ignore[method-assign]


def emit(handled: int, live: int, feeds: int, **extra: Any) -> None:
    row = {"t": time.time(), "handled": handled, "live": live, "feeds": feeds, **extra}
    if LOOP_COUNTS["iters"]:
        row.update(LOOP_COUNTS)
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


async def reporter(read: Any, interval: float = 0.1, probe: bool = False) -> None:
    iterations = IterationProbe() if probe else None
    try:
        while True:
            emit(*read(), **(iterations.take() if iterations else {}))
            await asyncio.sleep(interval)
    finally:
        if iterations is not None:
            iterations.handle.cancel()


async def run_raw(args: argparse.Namespace) -> None:
    from exporter.feeds import profiles
    from exporter.sharding import select

    symbols = select(
        symbol_map(args.symbols, args.venues), *(int(x) for x in args.shard.split("/"))
    )
    markets = [(ex, m) for mapping in symbols.values() for ex, m in mapping.items()]
    markets.append(("kraken", "USDT/USD"))
    handled = [0]
    live: set[tuple[str, str]] = set()

    def make(ex: str) -> Any:
        base = getattr(ccxt.pro, ex)

        class Counting(base):  # type: ignore[misc, valid-type]
            def handle_message(self, client: Any, message: Any) -> Any:
                handled[0] += 1
                return super().handle_message(client, message)

        # the venue's watch profile, as the exporter's clients (OKX's channel, spot only)
        cfg = profiles.client_config(ex, ccxt_config(ex, args.base_url))
        if args.no_compress:
            cfg = {**cfg, "options": {**cfg.get("options", {}), "ws": {"compress": 0}}}
        return Counting(cfg)

    # the limit the exporter passes (Bybit has no 100: the smallest supported >= DEPTH)
    limits = {ex: profiles.ccxt_limit(ex, DEPTH) for ex in VENUES[: args.venues]}
    loaded: dict[str, Any] = {}
    for ex in VENUES[: args.venues]:
        loader = make(ex)
        await loader.load_markets()
        loaded[ex] = (loader.markets, loader.currencies)
        await loader.close()

    async def watch(ex: str, market: str) -> None:
        client = make(ex)
        client.set_markets(*loaded[ex])
        try:
            while True:
                await client.watch_order_book(market, limits[ex])
                live.add((ex, market))
        finally:
            await client.close()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(
            reporter(lambda: (handled[0], len(live), len(markets)), probe=args.loop_stats)
        )
        for ex, market in markets:
            tg.create_task(watch(ex, market))


async def run_exporter(args: argparse.Namespace) -> None:
    from exporter.app import Exporter
    from exporter.model import BookStatus

    exporter = Exporter(make_config(args))
    if args.render_thread:  # /metrics formatted in a worker thread, for comparison
        from exporter.http.exposition import Exposition

        exporter.server.exposition = Exposition(exporter.registry, render_thread=True)
    trace: list[tuple[str, str, Any, float]] = []
    if args.trace:

        def on_published(snap: Any) -> None:
            if snap.exchange == "binance":
                trace.append((snap.exchange, snap.market, snap.nonce, time.time()))

        exporter.state.on_published = on_published
    stats = list(exporter.feed_stats.values())

    def read() -> tuple[int, int, int]:
        live = sum(1 for s in stats if s.status is BookStatus.LIVE)
        return sum(s.messages for s in stats), live, len(stats)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, exporter.stop)
    task = asyncio.create_task(reporter(read, probe=args.loop_stats))
    try:
        await exporter.run()
    finally:
        task.cancel()
        if args.trace:
            Path(args.trace).write_text(json.dumps(trace))  # noqa: ASYNC240 (at exit)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["raw", "exporter"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument("--venues", type=int, choices=[2, 5], default=2, help="2: Binance, Kraken")
    p.add_argument("--shard", default="0/1", help="INDEX/COUNT")
    p.add_argument("--redis", default=None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--trace", default=None)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--render-thread", action="store_true", help="exporter: format in a thread")
    p.add_argument("--stale-after", type=float, default=10.0, help="feeds.stale_after, s")
    p.add_argument("--loop-stats", action="store_true", help="report loop iteration lengths")
    p.add_argument("--loop-counts", action="store_true", help="report loop iterations, callbacks")
    p.add_argument(
        "--read-size", type=int, default=0,
        help="asyncio socket read size, bytes (256 KiB; a measurement of a feed-side bound)",
    )  # fmt: skip
    p.add_argument("--drain-cap", type=int, default=0, help="ccxt: frames per loop callback")
    p.add_argument("--no-compress", action="store_true", help="raw: no permessage-deflate")
    args = p.parse_args()
    if args.loop_counts and not args.uvloop:
        count_loop_work()
    if args.drain_cap:
        cap_ccxt_drain(args.drain_cap)
    if args.read_size:
        # how much one socket read callback takes in (and the feed callbacks parse at once)
        from asyncio import selector_events

        selector_events._SelectorSocketTransport.max_size = args.read_size
    coro = run_raw(args) if args.mode == "raw" else run_exporter(args)
    if args.uvloop:
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        if args.mode == "raw":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        runner(coro)


if __name__ == "__main__":
    main()
