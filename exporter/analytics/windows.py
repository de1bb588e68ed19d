"""Profitable windows per (symbol, buy exchange, sell exchange, notional), with hysteresis.

A window opens when net ROI >= open_threshold and closes when it falls below
close_threshold (<= open), when the opportunity is no longer fillable, or when a book stops
being live (stale / crossed / feed down). Windows shorter than ``min_duration`` are counted
(``windows_total`` counts openings) but not logged.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exporter.model import CloseReason, Window, label_number

WindowKey = tuple[str, str, str, float]  # symbol, buy_exchange, sell_exchange, notional
ClosedHandler = Callable[[Window, bool], None]  # (window, logged)

DURATION_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class DurationHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value
        self.count += 1


class WindowTracker:
    def __init__(
        self,
        open_threshold: float,
        close_threshold: float,
        min_duration: float,
        on_closed: ClosedHandler,
    ) -> None:
        if close_threshold > open_threshold:
            raise ValueError("close_threshold must be <= open_threshold")
        self.open_threshold = open_threshold
        self.close_threshold = close_threshold
        self.min_duration = min_duration
        self._on_closed = on_closed
        self.open: dict[WindowKey, Window] = {}
        self.totals: dict[WindowKey, int] = {}
        self.durations: dict[str, DurationHistogram] = {}
        self._seq = 0

    def register(self, keys: Iterable[WindowKey]) -> None:
        """Declare every key up front so counters are exported at 0 from start."""
        for key in keys:
            self.totals.setdefault(key, 0)
            self.durations.setdefault(key[0], DurationHistogram())

    def observe(self, key: WindowKey, roi: float | None, profit: float | None, now: float) -> None:
        """Feed one evaluation (roi None = not fillable) taken at local receive time ``now``."""
        window = self.open.get(key)
        if window is None:
            if roi is not None and profit is not None and roi >= self.open_threshold:
                self._seq += 1
                symbol, buy, sell, notional = key
                self.open[key] = Window(
                    id=f"{int(now * 1000)}-{self._seq}",
                    symbol=symbol,
                    buy_exchange=buy,
                    sell_exchange=sell,
                    notional=notional,
                    start=now,
                    threshold=self.open_threshold,
                    peak_roi=roi,
                    peak_profit=profit,
                    last_seen=now,
                )
                self.totals[key] = self.totals.get(key, 0) + 1
            return
        if roi is None or profit is None or roi < self.close_threshold:
            self.close(key, CloseReason.BELOW_THRESHOLD, now)
            return
        window.last_seen = now
        if roi > window.peak_roi:
            window.peak_roi = roi
        if profit > window.peak_profit:
            window.peak_profit = profit

    def close(self, key: WindowKey, reason: CloseReason, end: float) -> Window | None:
        window = self.open.pop(key, None)
        if window is None:
            return None
        window.end = max(end, window.start)
        window.close_reason = reason
        duration = window.end - window.start
        self.durations.setdefault(window.symbol, DurationHistogram()).observe(duration)
        self._on_closed(window, duration >= self.min_duration)
        return window

    def close_matching(
        self, symbol: str, exchange: str, reason: CloseReason, end: float
    ) -> list[Window]:
        """Close every open window of ``symbol`` that involves ``exchange``."""
        keys = [k for k in self.open if k[0] == symbol and exchange in (k[1], k[2])]
        return [w for k in keys if (w := self.close(k, reason, end)) is not None]

    def close_all(self, reason: CloseReason, end: float) -> list[Window]:
        return [w for k in list(self.open) if (w := self.close(k, reason, end)) is not None]


def window_entry(window: Window) -> dict[str, str | float]:
    """The `windows` stream entry (docs/redis.md)."""
    end = window.end if window.end is not None else window.last_seen
    return {
        "kind": "window",
        "id": window.id,
        "symbol": window.symbol,
        "buy_exchange": window.buy_exchange,
        "sell_exchange": window.sell_exchange,
        "notional": label_number(window.notional),
        "start": round(window.start, 3),
        "end": round(end, 3),
        "duration_seconds": round(end - window.start, 3),
        "peak_roi": window.peak_roi,
        "peak_profit": window.peak_profit,
        "threshold": window.threshold,
        "close_reason": str(window.close_reason or ""),
    }
