"""Window tracker: hysteresis, minimum duration, close reasons, log entries."""

from __future__ import annotations

import pytest

from exporter.analytics.windows import WindowTracker, window_entry
from exporter.model import CloseReason, Window

KEY = ("BTC/USD", "binance", "kraken", 10000.0)


@pytest.fixture
def closed() -> list[tuple[Window, bool]]:
    return []


def tracker(closed: list[tuple[Window, bool]], min_duration: float = 1.0) -> WindowTracker:
    t = WindowTracker(0.001, 0.0005, min_duration, lambda w, logged: closed.append((w, logged)))
    t.register([KEY])
    return t


def test_hysteresis_keeps_window_open_between_thresholds(closed: list[tuple[Window, bool]]) -> None:
    t = tracker(closed)
    t.observe(KEY, 0.0009, 9.0, now=100.0)  # below open: nothing
    assert KEY not in t.open and t.totals[KEY] == 0
    t.observe(KEY, 0.0012, 12.0, now=101.0)  # opens
    assert t.open[KEY].start == 101.0 and t.totals[KEY] == 1
    t.observe(KEY, 0.0006, 6.0, now=102.0)  # between close and open: stays open
    t.observe(KEY, 0.0020, 20.0, now=103.0)  # new peak
    assert KEY in t.open
    t.observe(KEY, 0.0004, 4.0, now=104.5)  # below close: closes
    assert KEY not in t.open
    ((w, logged),) = closed
    assert logged
    assert (w.start, w.end, w.duration) == (101.0, 104.5, 3.5)
    assert w.peak_roi == 0.0020 and w.peak_profit == 20.0
    assert w.close_reason is CloseReason.BELOW_THRESHOLD
    assert t.durations["BTC/USD"].count == 1


def test_short_window_counted_but_not_logged(closed: list[tuple[Window, bool]]) -> None:
    t = tracker(closed, min_duration=1.0)
    t.observe(KEY, 0.002, 20.0, now=10.0)
    t.observe(KEY, -0.001, -10.0, now=10.4)
    ((_w, logged),) = closed
    assert not logged and t.totals[KEY] == 1


def test_not_fillable_closes(closed: list[tuple[Window, bool]]) -> None:
    t = tracker(closed)
    t.observe(KEY, 0.002, 20.0, now=10.0)
    t.observe(KEY, None, None, now=12.0)
    assert closed[0][0].close_reason is CloseReason.BELOW_THRESHOLD


def test_close_matching_by_exchange_with_reason(closed: list[tuple[Window, bool]]) -> None:
    t = tracker(closed)
    other = ("ETH/USD", "binance", "kraken", 10000.0)
    t.observe(KEY, 0.002, 20.0, now=10.0)
    t.observe(other, 0.002, 20.0, now=10.0)
    t.close_matching("BTC/USD", "kraken", CloseReason.STALE, end=15.0)
    assert [w.symbol for w, _ in closed] == ["BTC/USD"]
    assert closed[0][0].close_reason is CloseReason.STALE and closed[0][0].end == 15.0
    t.close_all(CloseReason.SHUTDOWN, end=20.0)
    assert closed[1][0].close_reason is CloseReason.SHUTDOWN


def test_window_entry_has_the_log_fields(closed: list[tuple[Window, bool]]) -> None:
    t = tracker(closed)
    t.observe(KEY, 0.002, 20.0, now=10.0)
    t.close(KEY, CloseReason.CROSSED, 12.25)
    entry = window_entry(closed[0][0])
    assert entry["kind"] == "window" and entry["notional"] == "10000"
    assert entry["duration_seconds"] == 2.25 and entry["close_reason"] == "crossed"
    assert set(entry) == {
        "kind", "id", "symbol", "buy_exchange", "sell_exchange", "notional", "start", "end",
        "duration_seconds", "peak_roi", "peak_profit", "threshold", "close_reason",
    }  # fmt: skip


def test_close_threshold_above_open_is_rejected() -> None:
    with pytest.raises(ValueError):
        WindowTracker(0.001, 0.002, 1.0, lambda w, logged: None)
