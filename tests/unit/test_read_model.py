"""One read model, one clock: every reader of MarketState (the Collector, the JSON API, the
intelligence timer, the Redis publisher) sees a book's status change at the same instant,
driven by a fake clock, without a sweep; status decisions and fee lookups per update."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.clock import FakeClock
from exporter.feeds.stats import LatencyHistogram
from exporter.http.api import Api
from exporter.market.fees import FeeTable
from exporter.market.intelligence import Intelligence
from exporter.market.state import MarketState
from exporter.model import BookStatus, FeedKey
from exporter.store.publisher import TickerPublisher
from exporter.store.writer import StateWriter
from tests.unit.test_market import Harness, make_config, scrape

PAIRS = {("BTC/USD", "binance", "kraken"), ("BTC/USD", "kraken", "binance")}


class Readers:
    """Harness plus the other readers: JSON API, intelligence, ticker publisher."""

    def __init__(self, **over: Any) -> None:
        config = make_config(reference={"notional": 1000, "band": 0.005}, **over)
        self.h = Harness(config)
        self.latency = {"binance": LatencyHistogram(), "kraken": LatencyHistogram()}
        self.writer = StateWriter(None, registry=CollectorRegistry())
        self.intel = Intelligence(config, self.h.state, self.latency, self.h.feeds, self.writer)
        self.api = Api(config, self.h.state, self.intel, self.writer)
        self.publisher = TickerPublisher(self.h.state, self.latency, self.writer)

    def live(self) -> None:
        self.h.book("kraken", "USDT/USD", 0.9999, 1.0001)
        self.h.book("binance", "BTC/USDT", 100.0, 100.5)
        self.h.book("kraken", "BTC/USD", 101.0, 101.5)

    def exported_pairs(self) -> set[tuple[str, str, str]]:
        """Pairs with a cross spread on /metrics."""
        m = scrape(self.h)
        return {
            (s["symbol"], s["buy_exchange"], s["sell_exchange"])
            for s, _ in m.get("cryptoarb_cross_spread_ratio", [])
        }

    def api_pairs(self) -> set[tuple[str, str, str]]:
        out = self.api.opportunities({})
        return {(e["symbol"], e["buy_exchange"], e["sell_exchange"]) for e in out["opportunities"]}

    def risk_pairs(self) -> set[tuple[str, str, str]]:
        self.intel.tick(self.h.clock.time())
        return {k[:3] for k in self.intel.risk}


@pytest.fixture
def r() -> Readers:
    return Readers()


def _no_sweep(state: MarketState) -> None:
    def refuse() -> None:
        raise AssertionError("the sweep must not be needed")

    state.sweep = refuse  # type: ignore[method-assign]


def test_every_reader_sees_the_same_live_pairs(r: Readers) -> None:
    r.live()
    assert r.exported_pairs() == r.api_pairs() == r.risk_pairs() == PAIRS


def test_stale_past_the_deadline_hides_the_pair_from_every_reader_without_a_sweep(
    r: Readers,
) -> None:
    r.live()
    _no_sweep(r.h.state)
    r.h.clock.advance(4.999)  # stale_after is 5
    assert r.exported_pairs() == r.api_pairs() == PAIRS
    r.h.clock.advance(0.002)
    assert r.h.state.status("kraken", "BTC/USD") is BookStatus.STALE
    assert r.exported_pairs() == set()
    assert r.api_pairs() == set()
    assert r.risk_pairs() == set()
    stale = {s["exchange"]: v for s, v in scrape(r.h)["cryptoarb_orderbook_stale"]}
    assert stale == {"binance": 1.0, "kraken": 1.0}


def test_a_stale_conversion_book_hides_the_pairs_that_need_its_rate(r: Readers) -> None:
    r.live()
    _no_sweep(r.h.state)
    r.h.clock.advance(4)
    r.h.book("binance", "BTC/USDT", 100.0, 100.6)
    r.h.book("kraken", "BTC/USD", 101.0, 101.6)
    assert r.api_pairs() == PAIRS
    r.h.clock.advance(1.5)  # the USDT/USD book is 5.5 s old, the others 1.5 s
    assert r.exported_pairs() == r.api_pairs() == set()


def test_a_crossed_book_hides_the_pair_at_once(r: Readers) -> None:
    r.live()
    r.h.book("kraken", "BTC/USD", 102.0, 101.0)  # bid >= ask
    assert r.h.state.status("kraken", "BTC/USD") is BookStatus.CROSSED
    assert r.exported_pairs() == r.api_pairs() == r.risk_pairs() == set()


def test_a_feed_going_down_hides_the_pair_at_once_and_closes_its_windows(r: Readers) -> None:
    r.live()
    assert r.h.state.windows.open
    _no_sweep(r.h.state)
    r.h.feeds[FeedKey(("binance", "BTC/USDT"))].status = BookStatus.DOWN
    r.h.state.on_feed_status("binance", "BTC/USDT")  # what the supervisor reports
    assert r.h.state.status("binance", "BTC/USDT") is BookStatus.DOWN
    assert r.exported_pairs() == r.api_pairs() == r.risk_pairs() == set()
    assert not r.h.state.windows.open
    assert {e["close_reason"] for e in r.h.log} == {"feed_down"}


def test_the_publisher_marks_a_book_that_went_stale_at_the_next_flush(r: Readers) -> None:
    r.live()
    r.publisher.publish()
    assert r.h.state.take_dirty() == []  # nothing changed since
    r.h.clock.advance(6)
    views = r.h.state.take_dirty()
    assert {(v.exchange, v.status) for v in views} == {
        ("binance", BookStatus.STALE),
        ("kraken", BookStatus.STALE),
    }
    payload = r.publisher.payload(views[0])
    assert payload is not None and payload["status"] == "stale"
    assert r.h.state.live_symbols() == set()


def test_frozen_book_is_decided_by_the_sweep(r: Readers) -> None:
    r.live()
    for i in range(1, 12):  # kraken repeats its book; binance moves; 11 s > frozen_after 10
        r.h.clock.advance(1)
        r.h.book("kraken", "USDT/USD", 0.9999, 1.0001)
        r.h.book("binance", "BTC/USDT", 100.0 + i * 0.01, 100.5 + i * 0.01)
        if i < 11:
            r.h.book("kraken", "BTC/USD", 101.0, 101.5)
    # The last binance move made kraken frozen; no kraken update came to decide it.
    assert r.h.state.status("kraken", "BTC/USD") is BookStatus.LIVE
    r.h.state.sweep()
    assert r.h.state.status("kraken", "BTC/USD") is BookStatus.STALE
    assert r.api_pairs() == set()
    assert r.h.feeds[FeedKey(("kraken", "BTC/USD"))].errors["stale"] == 1  # type: ignore[index]


def test_window_min_duration_on_the_fake_clock() -> None:
    r = Readers(windows={"open_threshold": 0.0, "close_threshold": 0.0, "min_duration_seconds": 2})
    r.live()
    key = ("BTC/USD", "binance", "kraken", 1000.0)
    start = r.h.state.windows.open[key].start
    r.h.clock.advance(1)
    r.h.book("kraken", "BTC/USD", 100.0, 100.6)  # no longer profitable: closes after 1 s
    assert key not in r.h.state.windows.open
    assert r.h.log == []  # shorter than min_duration: counted, not logged
    assert r.h.state.windows.totals[key] == 1
    r.h.book("kraken", "BTC/USD", 101.0, 101.5)
    r.h.clock.advance(3)
    r.h.book("binance", "BTC/USDT", 100.0, 100.5)
    r.h.book("kraken", "BTC/USD", 100.0, 100.6)
    logged = [e for e in r.h.log if e["notional"] == "1000" and e["buy_exchange"] == "binance"]
    assert len(logged) == 1 and logged[0]["duration_seconds"] == pytest.approx(3.0)
    assert logged[0]["start"] == pytest.approx(start + 1, abs=1e-3)
    assert r.h.state.windows.totals[key] == 2


def test_history_rows_and_trends_on_the_fake_clock(r: Readers) -> None:
    r.live()
    for i in range(61):
        r.intel.tick(r.h.clock.time())
        r.h.clock.advance(1)
        # both books move (a book that repeats itself is frozen); kraken's mid rises 0.01
        # a second, binance's 0.001: the reference spread widens
        up, k = (i + 1) * 0.001, (i + 1) * 0.01
        r.h.book("kraken", "USDT/USD", 0.9999, 1.0001)
        r.h.book("binance", "BTC/USDT", 100.0 + up, 100.5 + up)
        r.h.book("kraken", "BTC/USD", 101.0 + k, 101.5 + k)
    rows = list(r.intel.window.rows["BTC/USD"])
    assert len(rows) == 61 and all(row.spread is not None for row in rows)
    assert [b.time - a.time for a, b in itertools.pairwise(rows)] == [1.0] * 60
    change = r.intel.trends[("BTC/USD", 60.0)]
    first, last = rows[0].spread, rows[-1].spread
    assert first is not None and last is not None
    assert change == pytest.approx(last - first)
    assert change > 0


async def test_the_intelligence_timer_runs_on_the_injected_clock(r: Readers) -> None:
    clock = r.h.clock
    assert isinstance(clock, FakeClock)
    r.live()
    t0 = clock.time()
    task = asyncio.create_task(r.intel.run())
    try:
        for _ in range(10_000):  # each pass lets the timer take one step on the fake clock
            if clock.time() - t0 >= 10:
                break
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # one row per history.interval (1 s) of the fake clock, no real waiting
    assert 9 <= len(r.intel.window.rows["BTC/USD"]) <= 11


def test_one_status_decision_and_one_fee_lookup_per_update(
    r: Readers, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.live()
    calls = {"decide": 0, "fees": 0}
    decide, get = MarketState._decide, FeeTable.get

    def counted_decide(self: MarketState, *a: Any) -> BookStatus:
        calls["decide"] += 1
        return decide(self, *a)

    def counted_get(self: FeeTable, *a: Any) -> Any:
        calls["fees"] += 1
        return get(self, *a)

    monkeypatch.setattr(MarketState, "_decide", counted_decide)
    monkeypatch.setattr(FeeTable, "get", counted_get)
    for i in range(100):
        r.h.book("binance", "BTC/USDT", 100.0 + i * 0.001, 100.5 + i * 0.001)
    assert calls == {"decide": 100, "fees": 100}


def test_routes_allow_list_limits_the_evaluated_and_exported_routes() -> None:
    config = make_config(
        exchanges={"binance": {}, "kraken": {}, "okx": {}},
        symbols={"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD", "okx": "BTC/USDT"}},
        routes={"allow": [["kraken", "okx"]]},
    )
    assert config.routes_for("BTC/USD") == [("kraken", "okx"), ("okx", "kraken")]
    h = Harness(config)
    assert h.state.pair_keys() == [("BTC/USD", "kraken", "okx"), ("BTC/USD", "okx", "kraken")]
    assert {k[1:3] for k in h.state.window_keys()} == {("kraken", "okx"), ("okx", "kraken")}
    scraped = scrape(h)
    fillable = {
        (s["buy_exchange"], s["sell_exchange"])
        for s, _ in scraped["cryptoarb_opportunity_fillable"]
    }
    assert fillable == {("kraken", "okx"), ("okx", "kraken")}
