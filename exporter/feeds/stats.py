"""Plain counters the feeds update and the Collector reads (no prometheus objects on the
hot path: a dict/int increment is several times cheaper than a labelled child)."""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.model import BookStatus, ErrorReason, FeedKey

if TYPE_CHECKING:
    from exporter.config import Config

# Buckets for feed latency: exchange event -> local receive, seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
CLOCK_OFFSET_WINDOW = 60.0


@dataclass
class LatencyHistogram:
    """Cumulative-on-read histogram of non-negative latencies for one exchange, with the
    negative samples counted apart and the signed clock offset (minimum over 60 s)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0
    negative: int = 0
    # (second, min latency that second): a rolling minimum without per-sample storage.
    _minima: deque[tuple[int, float]] = field(default_factory=deque)

    def observe(self, latency: float, now: float) -> None:
        if latency < 0:
            self.negative += 1
        value = max(latency, 0.0)
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1
        sec = int(now)
        if self._minima and self._minima[-1][0] == sec:
            if latency < self._minima[-1][1]:
                self._minima[-1] = (sec, latency)
        else:
            self._minima.append((sec, latency))
        while self._minima and self._minima[0][0] < sec - CLOCK_OFFSET_WINDOW:
            self._minima.popleft()

    def clock_offset(self, now: float) -> float | None:
        horizon = int(now) - CLOCK_OFFSET_WINDOW
        values = [v for s, v in self._minima if s >= horizon]
        return min(values) if values else None

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        acc = 0
        for bound, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            out.append((repr(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


@dataclass
class FeedStats:
    """Health of one (exchange, market) feed."""

    exchange: str
    symbol: str  # canonical symbol, or the market itself for a conversion book
    market: str
    status: BookStatus = BookStatus.SYNCING
    messages: int = 0
    reconnects: int = 0
    resyncs: int = 0
    errors: dict[ErrorReason, int] = field(default_factory=lambda: dict.fromkeys(ErrorReason, 0))
    last_error: str = ""
    config_error: bool = False

    @property
    def up(self) -> bool:
        return self.status in (BookStatus.LIVE, BookStatus.STALE, BookStatus.CROSSED)


class RateLimitedLog:
    """At most one log line per key per ``interval`` seconds, with a suppressed count."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def warning(self, key: tuple[str, str], msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            self._log.warning(msg + " (%d similar suppressed)", *args, suppressed)
        else:
            self._log.warning(msg, *args)


def feed_stats_for(config: Config) -> dict[FeedKey, FeedStats]:
    """Counters of every watched book: the symbols' markets, then the conversion books (a
    conversion book is labelled by its own market, a configured value)."""
    stats: dict[FeedKey, FeedStats] = {}
    for symbol, mapping in config.symbols.items():
        for ex, market in mapping.items():
            stats[FeedKey((ex, market))] = FeedStats(ex, symbol, market)
    for ref in config.conversion_books():
        stats.setdefault(
            FeedKey((ref.exchange, ref.market)), FeedStats(ref.exchange, ref.market, ref.market)
        )
    return stats
