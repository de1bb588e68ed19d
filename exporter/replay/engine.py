"""The replay engine: recorded book updates through the live analytics, on recorded time.

The same :class:`MarketState` and window tracker as ``run`` see the books rebuilt from the
rows (:mod:`exporter.replay.book`), each handed over as the :class:`BookSnapshot`
``MarketFeed._watch`` would build, with the feed status it would set. The clock is the
recorded ``local_timestamp`` (monotonic and wall time alike), so staleness, skew and window
times are recorded times. The timers ``run`` drives (the staleness sweep, the conversion-rate
flush, the intelligence tick, the Redis publisher) run on recorded time too: before an update
at t, every timer due at or before t runs at its own due instant, in a fixed order, so a
replay is deterministic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from exporter.config import Config
from exporter.feeds.stats import LatencyHistogram, feed_stats_for
from exporter.market.fees import FeeTable
from exporter.market.intelligence import Intelligence
from exporter.market.state import MarketState
from exporter.model import BookSnapshot, BookStatus, CloseReason, FeedKey, Level
from exporter.replay.book import L2Book
from exporter.replay.report import ReportingTracker, RouteStats
from exporter.replay.tardis import market_index
from exporter.store.publisher import TickerPublisher
from exporter.store.writer import StateWriter

log = logging.getLogger(__name__)

MALFORMED_LOGGED = 20  # engine-rejected rows logged with their place; every one is counted


class Update(Protocol):
    """What the engine reads of a :class:`exporter.replay.tardis.BookUpdate`."""

    @property
    def exchange(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def timestamp_us(self) -> int: ...
    @property
    def local_timestamp_us(self) -> int: ...
    @property
    def is_snapshot(self) -> bool: ...
    @property
    def bids(self) -> tuple[Level, ...]: ...
    @property
    def asks(self) -> tuple[Level, ...]: ...
    @property
    def source(self) -> str: ...


class ReplayClock:
    """Recorded time: ``monotonic()`` and ``time()`` both read the recorded seconds the
    engine last moved to. Nothing in a replay waits on it (the engine runs the timers)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


@dataclass
class Timer:
    """A periodic job on recorded time: due at origin + n * interval (no drift)."""

    name: str
    interval: float
    fn: Callable[[], None]
    origin: float = 0.0
    n: int = 1

    @property
    def due(self) -> float:
        return self.origin + self.n * self.interval


@dataclass
class FileCounts:
    """Per input file (so a file replayed by several jobs is counted once when merged)."""

    malformed: int = 0  # rows the engine rejected (the reader counts its own apart)
    unknown: dict[tuple[str, str], int] = field(default_factory=dict)  # (ex, symbol) -> rows


class ReplayEngine:
    def __init__(
        self,
        config: Config,
        fees: FeeTable,
        writer: StateWriter,
        *,
        origin: float | None = None,
        publish: bool = False,
        correlation: bool = False,
    ) -> None:
        self.config = config
        self.clock = ReplayClock()
        self.writer = writer
        self.feed_stats = feed_stats_for(config)
        self.latency = {ex: LatencyHistogram() for ex in config.exchanges}
        self.routes = RouteStats(config)
        self.state = MarketState(config, self.feed_stats, fees, writer, self.clock)
        # The live tracker's thresholds, plus the report's view of every evaluation.
        self.state.windows = ReportingTracker(config, self.state, self.routes)
        self.state.windows.register(self.state.window_keys())
        self.intel = Intelligence(config, self.state, self.latency, self.feed_stats, writer)
        self.publisher = TickerPublisher(self.state, self.latency, writer)
        self._index: dict[tuple[str, str], FeedKey] = {
            k: v for k, v in market_index(config).items() if v in self.feed_stats
        }
        feeds = config.feeds
        self._books = {
            key: L2Book(feeds.depth, feeds.max_price, feeds.max_quantity) for key in self.feed_stats
        }
        self.files: dict[int, FileCounts] = {}
        self.used_updates = 0
        self.first: float | None = None
        self.last: float | None = None
        self._origin = origin
        self._malformed_logged = 0
        # Set by the publisher timer: the session then flushes the writer (an await).
        self.flush_due = False
        self.correlation_due = False
        self.timers = [
            Timer("sweep", feeds.sweep_interval, self._sweep),
            Timer("flush_rates", feeds.rate_refresh_interval / 2, self.state.flush_rates),
            Timer("intelligence", config.history.interval, self._tick),
        ]
        if publish:
            self.timers.append(Timer("publish", config.redis.flush_interval, self._publish))
        if correlation:
            self.timers.append(Timer("correlation", config.correlation.interval, self._corr))
        self._started = False

    # -- timers --------------------------------------------------------------------------
    def _sweep(self) -> None:
        self.state.sweep()
        self.routes.after_sweep(self.state, self.clock.now)

    def _tick(self) -> None:
        try:
            self.intel.tick(self.clock.time())
        except Exception:  # as live: counted on the intelligence errors metric and logged
            self.intel.errors["tick"] += 1
            log.exception("intelligence tick failed")

    def _publish(self) -> None:
        self.publisher.publish()
        self.flush_due = True

    def _corr(self) -> None:
        self.correlation_due = True

    def start(self, t: float) -> None:
        """Anchor the timers at ``origin`` (the earliest instant of the whole replay, so
        every job of a split replay ticks at the same instants) or at ``t``."""
        origin = self._origin if self._origin is not None and self._origin <= t else t
        for timer in self.timers:
            timer.origin, timer.n = origin, 1
        self.clock.now = origin
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    def next_due(self) -> float:
        return min(timer.due for timer in self.timers)

    def run_next_timer(self) -> None:
        """Run the timer due first (list order on a tie) at its due instant."""
        timer = min(self.timers, key=lambda tm: tm.due)
        self.clock.now = timer.due
        timer.n += 1
        timer.fn()

    def run_timers(self, t: float) -> None:
        """Every timer due at or before ``t``, each at its own due instant, in order."""
        while self.next_due() <= t:
            self.run_next_timer()

    # -- updates -------------------------------------------------------------------------
    def feed(self, update: Update, file_index: int = 0) -> bool:
        """Run the timers due, then apply one update; True when it reached a watched book."""
        t = update.local_timestamp_us / 1e6
        if not self._started:
            self.start(t)
        self.run_timers(t)
        return self.apply(update, file_index)

    def apply(self, update: Update, file_index: int = 0) -> bool:
        """Apply one update at its recorded instant (the timers due before it have run)."""
        t = update.local_timestamp_us / 1e6
        if not self._started:
            self.start(t)
        self.clock.now = t
        if self.first is None:
            self.first = t
        self.last = t
        counts = self.files.get(file_index)
        if counts is None:
            counts = self.files[file_index] = FileCounts()
        feed = self._index.get((update.exchange, update.symbol))
        if feed is None:
            key = (update.exchange, update.symbol)
            counts.unknown[key] = counts.unknown.get(key, 0) + len(update.bids) + len(update.asks)
            return False
        book = self._books[feed]
        bad: list[tuple[str, float, float]] = []
        applied = book.apply(update.is_snapshot, update.bids, update.asks, bad)
        if bad:
            counts.malformed += len(bad)
            self._log_bad(update.source, bad)
        if not applied:
            return False
        self.used_updates += 1
        stats = self.feed_stats[feed]
        bids, asks = book.bids.top(), book.asks.top()
        exchange_ts = update.timestamp_us / 1e6
        snap = BookSnapshot(
            exchange=feed[0],
            symbol=stats.symbol,
            market=feed[1],
            bids=bids,
            asks=asks,
            exchange_ts=exchange_ts,
            received_at=t,
            received_mono=t,
        )
        # In integer microseconds: epoch seconds as floats lose the sub-microsecond part.
        self.latency[feed[0]].observe((update.local_timestamp_us - update.timestamp_us) / 1e6, t)
        stats.messages += 1
        # Exactly what MarketFeed._watch sets before handing the copy over.
        if not bids or not asks:
            stats.status = BookStatus.SYNCING
        else:
            stats.status = BookStatus.CROSSED if snap.crossed else BookStatus.LIVE
        self.state.on_book(snap)
        self.intel.observe_book(snap)
        return True

    def _log_bad(self, source: str, bad: list[tuple[str, float, float]]) -> None:
        for side, price, amount in bad:
            if self._malformed_logged >= MALFORMED_LOGGED:
                return
            self._malformed_logged += 1
            log.warning(
                "%s: malformed row skipped (update starting there): %s price=%r amount=%r "
                "outside feeds.max_price / feeds.max_quantity",
                source, side, price, amount,
            )  # fmt: skip
            if self._malformed_logged == MALFORMED_LOGGED:
                log.warning("further malformed rows are counted, not logged")

    def finish(self) -> None:
        """The end of the data: open windows close with ``shutdown`` at the last recorded
        instant, as a live run's stop closes them, and the publisher hands over the rest."""
        if self.last is not None:
            self.clock.now = self.last
        self.state.close_all(CloseReason.SHUTDOWN)
        if any(timer.name == "publish" for timer in self.timers):
            self.publisher.publish()
            self.flush_due = True

    @property
    def unknown(self) -> Mapping[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = {}
        for counts in self.files.values():
            for key, rows in counts.unknown.items():
                total[key] = total.get(key, 0) + rows
        return total
