"""Composition root: builds feeds, market state, Redis writer, collector and HTTP server,
runs them under one TaskGroup and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from exporter.config import Config
from exporter.feeds.stats import FeedStats, LatencyHistogram
from exporter.feeds.supervisor import ExchangeFeeds, FeedSettings
from exporter.http.api import api_routes
from exporter.http.collector import MarketCollector
from exporter.http.server import HttpServer
from exporter.http.webconfig import WebConfigFile
from exporter.http.webhook import AlertWebhook
from exporter.market.intelligence import Intelligence, IntelligenceCollector
from exporter.market.state import FeedKey, MarketState
from exporter.memory import TRIM_INTERVAL, collect_and_trim, malloc_trimmer
from exporter.model import BookSnapshot, BookStatus, CloseReason, label_number
from exporter.sharding import apply_shard
from exporter.store.writer import StateWriter

log = logging.getLogger(__name__)

TICKER_LEVELS = 10  # top levels per side copied into the Redis ticker


class Exporter:
    def __init__(self, config: Config, web_config: WebConfigFile | None = None) -> None:
        config = apply_shard(config)  # this process's symbols only (`shard: {index, count}`)
        if not config.symbols:
            log.warning("shard %d/%d owns no symbol", config.shard.index, config.shard.count)
        self.config = config
        self.web_config = web_config
        # `_created` samples double the counter series and no dashboard here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        max_stale = max(
            [config.stale_after(ex, m) for s in config.symbols.values() for ex, m in s.items()],
            default=config.feeds.stale_after,
        )
        self.writer = StateWriter(
            config.redis.url,
            registry=self.registry,
            flush_interval=config.redis.flush_interval,
            queue_max=config.redis.queue_max,
            ticker_ttl=3 * max_stale,
            history_maxlen=config.history.maxlen,
            log_maxlen=config.windows.log_maxlen,
            socket_timeout=config.redis.socket_timeout,
        )
        self.feed_stats: dict[FeedKey, FeedStats] = {}
        for symbol, mapping in config.symbols.items():
            for ex, market in mapping.items():
                self.feed_stats[(ex, market)] = FeedStats(ex, symbol, market)
        for ref in config.conversion_books():
            # A conversion book is labelled by its own market (a configured value).
            self.feed_stats.setdefault(
                (ref.exchange, ref.market), FeedStats(ref.exchange, ref.market, ref.market)
            )
        self.latency = {ex: LatencyHistogram() for ex in config.exchanges}
        self.market = MarketState(config, self.feed_stats, self._fees, self._append_window)
        settings = FeedSettings(
            depth=config.feeds.depth,
            watch_timeout=config.feeds.stale_after,
            backoff_base=config.feeds.backoff.base,
            backoff_cap=config.feeds.backoff.cap,
            max_price=config.feeds.max_price,
            max_quantity=config.feeds.max_quantity,
            snapshot_burst=config.feeds.snapshot_burst,
            snapshots_per_minute=config.feeds.snapshots_per_minute,
        )
        self.exchanges: dict[str, ExchangeFeeds] = {}
        for ex, ex_cfg in config.exchanges.items():
            markets = {m: st for (e, m), st in self.feed_stats.items() if e == ex}
            if markets:
                self.exchanges[ex] = ExchangeFeeds(
                    ex, dict(ex_cfg.ccxt), markets, self.latency[ex], settings, self._on_book
                )
        self.registry.register(MarketCollector(self.market, self.latency))
        self.intel = Intelligence(config, self.market, self.latency, self.feed_stats, self.writer)
        self.registry.register(IntelligenceCollector(self.intel))
        self.server = HttpServer(
            self.registry, self.readiness, config.web.host, config.web.port,
            extra_routes=api_routes(config, self.market, self.intel, self.writer),
            client_max_size=config.webhook.max_body_bytes,
            middlewares=[web_config.middleware()] if web_config else None,
            ssl_context=web_config.server_ssl_context() if web_config else None,
        )  # fmt: skip
        self.webhook = AlertWebhook(config.webhook, self.writer)
        self.server.app.add_routes(self.webhook.routes())
        self._stopping = asyncio.Event()

    # -- wiring ------------------------------------------------------------------------
    def _fees(self, exchange: str, market: str) -> tuple[float, float, float] | None:
        feeds = self.exchanges.get(exchange)
        info = feeds.market_info.get(market) if feeds else None
        if info is None:
            return None
        override = self.config.taker_fee_override(exchange, market)
        fee = override if override is not None else info.taker_fee
        return fee, info.min_cost, info.min_amount

    def _on_book(self, snap: BookSnapshot) -> None:
        self.market.on_book(snap)
        self.intel.observe_book(snap)

    def _append_window(self, entry: dict[str, str | float]) -> None:
        self.writer.append_log(entry)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        books = {f"{ex}:{m}": str(self.market.status(ex, m)) for (ex, m) in self.feed_stats}
        redis_ok = self.writer.up or self.config.redis.url is None
        ok = redis_ok and all(v == BookStatus.LIVE for v in books.values())
        return ok, {"books": books, "redis_up": self.writer.up}

    # -- periodic work -----------------------------------------------------------------
    def ticker_payload(self, exchange: str, symbol: str) -> dict[str, Any] | None:
        rec = self.market.books.get((exchange, symbol))
        if rec is None or rec.metrics is None or rec.rate is None:
            return None
        snap, met, rate = rec.snapshot, rec.metrics, rec.rate
        ref_bid, ref_ask = met.depth[self.config.reference_band]
        h = self.latency.get(exchange)
        latency = snap.received_at - snap.exchange_ts if snap.exchange_ts is not None else None
        return {
            "exchange": exchange,
            "symbol": symbol,
            "market": snap.market,
            "bid": met.best_bid * rate,
            "ask": met.best_ask * rate,
            "quote_rate": rate,
            "bid_depth": ref_bid,
            "ask_depth": ref_ask,
            "depth": {label_number(b): {"bid": d[0], "ask": d[1]} for b, d in met.depth.items()},
            "latency": latency
            if latency is not None
            else (h.total / h.count if h and h.count else None),
            "timestamp": int(snap.exchange_ts * 1000) if snap.exchange_ts is not None else None,
            "received_at": int(snap.received_at * 1000),
            "status": str(self.market.status(exchange, snap.market)),
            # Immutable tuples, encoded as JSON arrays at flush time (no per-level copy here).
            "bids": snap.bids[:TICKER_LEVELS],
            "asks": snap.asks[:TICKER_LEVELS],
        }

    def publish(self) -> None:
        """Hand the latest state of changed books to the Redis writer (conflated there)."""
        dirty, self.market.dirty_books = self.market.dirty_books, set()
        for exchange, symbol in dirty:
            payload = self.ticker_payload(exchange, symbol)
            if payload is not None:
                self.writer.put_ticker(exchange, symbol, payload)
        live = {
            s
            for s, mapping in self.config.symbols.items()
            if any(self.market.status(ex, m) is BookStatus.LIVE for ex, m in mapping.items())
        }
        self.writer.put_symbols(live)

    async def _every(self, interval: float, fn: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))

    async def _freeze_heap_after_startup(self, delay: float = 15.0) -> None:
        """Move what survived startup (ccxt clients and markets, config) out of the cyclic
        GC's reach: full collections then scan only newer objects, which keeps their pauses
        (measured 50-70 ms on a 10k-series state) from stalling feeds and scrapes.

        Only the young generations are collected first: a full collection here stalled the
        feeds ~85 ms (270k objects) to find ~80 unreachable ones, which stay frozen instead."""
        await asyncio.sleep(delay)
        t0 = time.perf_counter()
        found = gc.collect(1)
        gc.freeze()
        log.info(
            "heap frozen after startup: %d objects (%d unreachable collected) in %.0f ms",
            gc.get_freeze_count(), found, (time.perf_counter() - t0) * 1000,
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run(self, started: Callable[[Exporter], Awaitable[None]] | None = None) -> None:
        await self.server.start()
        log.info(
            "exporter %s: %d books on %s, redis %s",
            self.server.bound_port,
            len(self.feed_stats),
            ", ".join(self.exchanges),
            "configured" if self.config.redis.url else "off",
        )
        try:
            async with asyncio.TaskGroup() as tg:
                feeds = [
                    tg.create_task(f.run(), name=f"exchange:{name}")
                    for name, f in self.exchanges.items()
                ]
                writer = tg.create_task(self.writer.run(), name="redis-writer")
                timers = [
                    tg.create_task(
                        self._every(self.config.feeds.sweep_interval, self.market.sweep)
                    ),
                    tg.create_task(
                        self._every(
                            self.config.feeds.rate_refresh_interval / 2, self.market.flush_rates
                        )
                    ),
                    tg.create_task(self._every(self.config.redis.flush_interval, self.publish)),
                    tg.create_task(self.intel.run(), name="intelligence"),
                    tg.create_task(self._freeze_heap_after_startup()),
                ]
                timers.append(
                    tg.create_task(self._every(TRIM_INTERVAL, collect_and_trim(malloc_trimmer())))
                )
                if started is not None:
                    await started(self)
                await self._stopping.wait()
                await self._shutdown(feeds, writer, timers)
        finally:
            await self.server.stop()

    async def _shutdown(
        self,
        feeds: list[asyncio.Task[None]],
        writer: asyncio.Task[None],
        timers: list[asyncio.Task[None]],
    ) -> None:
        t0 = time.monotonic()
        for task in feeds + timers:
            task.cancel()
        _done, pending = await asyncio.wait(feeds + timers, timeout=5.0)
        if pending:
            log.warning(
                "shutdown: still stopping after 5 s: %s", ", ".join(t.get_name() for t in pending)
            )
        closed = self.market.close_all(CloseReason.SHUTDOWN)
        self.publish()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await self.writer.close(timeout=4.0)
        log.info(
            "shutdown: closed %d open window(s), flushed in %.2fs",
            len(closed),
            time.monotonic() - t0,
        )
