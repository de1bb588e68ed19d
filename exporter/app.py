"""Composition root: builds feeds, market state, Redis writer, collectors and HTTP server,
wires them together, runs them under one TaskGroup and shuts them down in order.

Data flow (docs/architecture.md): feeds -> :class:`MarketState` (the single read model) ->
the Collector (/metrics), the JSON API, the intelligence timer and the Redis publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.feeds.shared_budget import SharedBudget, fallback_counter
from exporter.feeds.stats import LatencyHistogram, feed_stats_for
from exporter.feeds.supervisor import ExchangeFeeds, FeedSettings
from exporter.http.api import api_routes
from exporter.http.collector import IntelligenceCollector, MarketCollector
from exporter.http.server import HttpServer
from exporter.http.webconfig import WebConfigFile
from exporter.http.webhook import AlertWebhook
from exporter.market.fees import FeeTable
from exporter.market.intelligence import Intelligence
from exporter.market.state import MarketState
from exporter.memory import (
    TRIM_INTERVAL,
    collect_and_trim,
    freeze_heap_after_startup,
    malloc_trimmer,
)
from exporter.model import BookSnapshot, BookStatus, CloseReason, MarketInfo
from exporter.replay.recorder import Recorder
from exporter.sharding import apply_shard
from exporter.store.publisher import TickerPublisher
from exporter.store.summary import SUMMARY_INTERVAL, SummaryPublisher
from exporter.store.writer import StateWriter

log = logging.getLogger(__name__)


class _FeedEvents:
    """The feeds' sink: books and status changes to the market state, fresh market terms to
    the fee table, latency samples to the intelligence timer; all three to the recorder when
    one is configured (``record`` / ``run --record``)."""

    def __init__(
        self,
        state: MarketState,
        fees: FeeTable,
        intel: Intelligence,
        recorder: Recorder | None = None,
    ) -> None:
        self._state = state
        self._fees = fees
        self._intel = intel
        self._recorder = recorder

    def on_book(self, snap: BookSnapshot) -> None:
        self._state.on_book(snap)
        self._intel.observe_book(snap)
        if self._recorder is not None:
            self._recorder.on_book(snap)

    def on_status(self, exchange: str, market: str) -> None:
        self._state.on_feed_status(exchange, market)
        if self._recorder is not None:
            self._recorder.on_status(exchange, market)

    def on_markets(self, exchange: str, markets: Mapping[str, MarketInfo]) -> None:
        self._fees.load(exchange, markets)
        if self._recorder is not None:
            self._recorder.on_markets(exchange, markets)


class Exporter:
    def __init__(
        self,
        config: Config,
        web_config: WebConfigFile | None = None,
        clock: Clock = SYSTEM_CLOCK,
        record_dir: Path | None = None,
    ) -> None:
        config = apply_shard(config)  # this process's symbols only (`shard: {index, count}`)
        if not config.symbols:
            log.warning("shard %d/%d owns no symbol", config.shard.index, config.shard.count)
        self.config = config
        self.web_config = web_config
        self.clock = clock
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
            mode=config.redis.mode,
            sentinel_master=config.redis.sentinel.master_name,
            sentinel_addresses=config.redis.sentinel.addresses,
            wait_timeout=config.redis.wait_timeout,
            flush_interval=config.redis.flush_interval,
            queue_max=config.redis.queue_max,
            ticker_ttl=3 * max_stale,
            history_maxlen=config.history.maxlen,
            log_maxlen=config.windows.log_maxlen,
            socket_timeout=config.redis.socket_timeout,
            clock=clock,
        )
        self.feed_stats = feed_stats_for(config)
        self.latency = {ex: LatencyHistogram() for ex in config.exchanges}
        self.fees = FeeTable(config)
        self.state = MarketState(config, self.feed_stats, self.fees, self.writer, clock)
        self.intel = Intelligence(config, self.state, self.latency, self.feed_stats, self.writer)
        self.publisher = TickerPublisher(self.state, self.latency, self.writer)
        self.summary = SummaryPublisher(
            self.state, self.writer, config.shard.index, config.shard.count
        )
        # Books as the exporter computes on them, to Tardis files (exporter/replay/).
        self.recorder = (
            Recorder(config, record_dir, self.registry, clock) if record_dir is not None else None
        )
        events = _FeedEvents(self.state, self.fees, self.intel, self.recorder)
        settings = FeedSettings(
            depth=config.feeds.depth,
            watch_timeout=config.feeds.stale_after,
            resubscribe_after=config.feeds.resubscribe_after,
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
                    ex, dict(ex_cfg.ccxt), markets, self.latency[ex], settings, events, clock,
                    depth=ex_cfg.depth,
                )  # fmt: skip
        shared = config.feeds.shared_rate_limit  # one REST budget per exchange, all shards
        if shared is not None:
            fallbacks = fallback_counter(self.registry)
            for ex, exchange_feeds in self.exchanges.items():
                exchange_feeds.gate.shared = SharedBudget(
                    self.writer.client, ex, shared.snapshots_per_minute, shared.burst,
                    config.shard.count, fallbacks, clock.monotonic,
                )  # fmt: skip
        self.registry.register(MarketCollector(self.state, self.latency))
        self.registry.register(IntelligenceCollector(self.intel))
        self.server = HttpServer(
            self.registry, self.readiness, config.web.host, config.web.port,
            extra_routes=api_routes(config, self.state, self.intel, self.writer),
            client_max_size=config.webhook.max_body_bytes,
            middlewares=[web_config.middleware()] if web_config else None,
            ssl_context=web_config.server_ssl_context() if web_config else None,
        )  # fmt: skip
        self.webhook = AlertWebhook(config.webhook, self.writer)
        self.server.app.add_routes(self.webhook.routes())
        self._stopping = asyncio.Event()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        books = {f"{ex}:{m}": str(st) for (ex, m), st in self.state.feed_statuses().items()}
        redis_ok = self.writer.up or self.config.redis.url is None
        ok = redis_ok and all(v == BookStatus.LIVE for v in books.values())
        return ok, {"books": books, "redis_up": self.writer.up}

    async def _every(self, interval: float, fn: Callable[[], None]) -> None:
        while True:
            await self.clock.sleep(interval)
            try:
                fn()
            except Exception:
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))

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
        feeds_cfg = self.config.feeds
        periodic = [
            (feeds_cfg.sweep_interval, self.state.sweep),
            (feeds_cfg.rate_refresh_interval / 2, self.state.flush_rates),
            (self.config.redis.flush_interval, self.publisher.publish),
            (SUMMARY_INTERVAL, self.summary.publish),
            (TRIM_INTERVAL, collect_and_trim(malloc_trimmer())),
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                feeds = [
                    tg.create_task(f.run(), name=f"exchange:{name}")
                    for name, f in self.exchanges.items()
                ]
                writer = tg.create_task(self.writer.run(), name="redis-writer")
                timers = [
                    tg.create_task(self._every(i, fn), name=f"every:{fn.__name__}")
                    for i, fn in periodic
                ]
                timers.append(tg.create_task(self.intel.run(), name="intelligence"))
                timers.append(tg.create_task(freeze_heap_after_startup(), name="heap-freeze"))
                if self.recorder is not None:
                    timers.append(tg.create_task(self.recorder.run(), name="recorder"))
                if started is not None:
                    await started(self)
                await self._stopping.wait()
                await self._shutdown(feeds, writer, timers)
        finally:
            if self.recorder is not None:  # already closed after a clean shutdown
                await self.recorder.close()
            await self.server.stop()

    async def _shutdown(
        self,
        feeds: list[asyncio.Task[None]],
        writer: asyncio.Task[None],
        timers: list[asyncio.Task[None]],
    ) -> None:
        t0 = self.clock.monotonic()
        for task in feeds + timers:
            task.cancel()
        _done, pending = await asyncio.wait(feeds + timers, timeout=5.0)
        if pending:
            log.warning(
                "shutdown: still stopping after 5 s: %s", ", ".join(t.get_name() for t in pending)
            )
        if self.recorder is not None:  # the feeds are stopped: the files end complete
            await self.recorder.close()
        closed = self.state.close_all(CloseReason.SHUTDOWN)
        self.publisher.publish()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await self.writer.close(timeout=4.0)
        log.info(
            "shutdown: closed %d open window(s), flushed in %.2fs",
            len(closed),
            self.clock.monotonic() - t0,
        )
