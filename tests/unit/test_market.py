"""MarketState: only live, time-aligned books make opportunities; staleness, frozen books,
conversion books and the collector's exported series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.clock import FakeClock
from exporter.config import Config, parse
from exporter.feeds.stats import FeedStats, LatencyHistogram
from exporter.http.collector import MarketCollector
from exporter.market.fees import FeeTable
from exporter.market.state import MarketState
from exporter.model import (
    BookSnapshot,
    BookStatus,
    CloseReason,
    FeedKey,
    MarketInfo,
    PairKey,
    PairResult,
)


class ListSink(list[dict[str, Any]]):
    """The window log as a list (the Redis writer's ``append_log`` protocol)."""

    def append_log(self, entry: Mapping[str, Any], dedupe_key: str | None = None) -> None:
        self.append(dict(entry))


def fee_table(config: Config, feeds: Mapping[FeedKey, FeedStats], fee: float = 0.001) -> FeeTable:
    """Every market loaded with the same taker fee and no minimum size."""
    table = FeeTable(config)
    for exchange in {ex for ex, _ in feeds}:
        table.load(exchange, {m: MarketInfo(fee, 0.0, 0.0) for ex, m in feeds if ex == exchange})
    return table


def make_config(**over: Any) -> Config:
    data: dict[str, Any] = {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": {"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"}},
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000],
        "feeds": {"stale_after": 5, "frozen_after": 10, "max_book_skew": 2},
        "windows": {"open_threshold": 0.0, "close_threshold": -0.0002, "min_duration_seconds": 0},
    }
    data.update(over)
    return parse(data, environ={})


class Harness:
    def __init__(self, config: Config) -> None:
        # wall time = 1.7e9 + monotonic time, as the snapshots below are stamped
        self.clock = FakeClock(wall=1.7e9 + 1000.0, mono=1000.0)
        self.log = ListSink()
        # every configured book, then the conversion books (labelled by their own market)
        self.feeds = {
            FeedKey((ex, m)): FeedStats(ex, sym, m)
            for sym, mapping in config.symbols.items()
            for ex, m in mapping.items()
        }
        for ref in config.conversion_books():
            key = FeedKey((ref.exchange, ref.market))
            self.feeds[key] = FeedStats(ref.exchange, ref.market, ref.market)
        self.fees = fee_table(config, self.feeds)
        self.state = MarketState(config, self.feeds, self.fees, self.log, self.clock)

    @property
    def pairs(self) -> dict[PairKey, PairResult]:
        """What every reader sees now: the live pairs."""
        return dict(self.state.live_pairs())

    def book(
        self, exchange: str, market: str, bid: float, ask: float, qty: float = 10.0, dt: float = 0
    ) -> None:
        stats = self.feeds[FeedKey((exchange, market))]
        snap = BookSnapshot(
            exchange=exchange,
            symbol=stats.symbol,
            market=market,
            bids=tuple((bid - i * 0.5, qty) for i in range(20)),
            asks=tuple((ask + i * 0.5, qty) for i in range(20)),
            exchange_ts=None,
            received_at=1.7e9 + self.clock.monotonic() + dt,
            received_mono=self.clock.monotonic() + dt,
        )
        stats.status = BookStatus.CROSSED if snap.crossed else BookStatus.LIVE
        self.state.on_book(snap)


@pytest.fixture
def h() -> Harness:
    return Harness(make_config())


def test_no_opportunity_without_the_conversion_book(h: Harness) -> None:
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    assert h.pairs == {}  # USDT rate unknown: never assume USDT == USD
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    assert set(h.pairs) == {
        ("BTC/USD", "binance", "kraken"),
        ("BTC/USD", "kraken", "binance"),
    }
    r = h.pairs[("BTC/USD", "binance", "kraken")]
    assert r.gross_spread == pytest.approx((101.0 - 100.5) / 100.5)
    assert r.fills[0].fillable and r.fills[0].net_roi is not None
    # buying 1000 USD: crosses only the first ask level, fees 0.1 % twice
    base = 1000 / 100.5 * (1 - 0.001)
    assert r.fills[0].net_profit == pytest.approx(base * 101.0 * (1 - 0.001) - 1000)
    assert ("BTC/USD", "binance", "kraken", 1000.0) in h.state.windows.open


def test_stale_book_yields_nothing_and_closes_windows_at_last_update_plus_stale_after(
    h: Harness,
) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    last_wall = h.state.record("kraken", "BTC/USD").snapshot.received_at
    h.clock.advance(6)  # > stale_after (5) for every book
    assert h.state.status("kraken", "BTC/USD") is BookStatus.STALE
    h.state.sweep()
    assert h.pairs == {}
    assert h.log and all(e["close_reason"] == "stale" for e in h.log)
    assert h.log[0]["end"] == pytest.approx(last_wall + 5, abs=1e-3)


def test_skewed_books_are_not_paired(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.clock.advance(3)  # > max_book_skew (2), < stale_after
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    assert h.pairs == {}


def test_crossed_book_yields_nothing(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 102.0, 101.0)  # bid >= ask
    assert h.pairs == {}
    h.state.sweep()
    assert h.feeds[("kraken", "BTC/USD")].errors["crossed"] == 1  # type: ignore[index]


def test_frozen_book_while_the_other_moves_is_stale(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    for i in range(1, 13):  # kraken repeats the same book, binance moves, for 12 s > 10 s
        h.clock.advance(1)
        h.book("kraken", "USDT/USD", 0.9999, 1.0001)
        h.book("binance", "BTC/USDT", 100.0 + i * 0.01, 100.5 + i * 0.01)
        h.book("kraken", "BTC/USD", 101.0, 101.5)
    assert h.state.status("kraken", "BTC/USD") is BookStatus.STALE
    assert h.state.status("binance", "BTC/USDT") is BookStatus.LIVE
    assert not any(k[1:] in (("binance", "kraken"), ("kraken", "binance")) for k in h.pairs)


def test_stale_conversion_book_stops_opportunities(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    assert h.pairs
    h.clock.advance(4)
    h.book("binance", "BTC/USDT", 100.0, 100.6)
    h.book("kraken", "BTC/USD", 101.0, 101.6)
    h.clock.advance(2)  # conversion book now 6 s old
    h.state.sweep()
    assert h.pairs == {}


def test_shutdown_closes_open_windows_with_reason(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    closed = h.state.close_all(CloseReason.SHUTDOWN)
    assert closed and {e["close_reason"] for e in h.log} == {"shutdown"}


def scrape(h: Harness) -> dict[str, list[tuple[dict[str, str], float]]]:
    reg = CollectorRegistry()
    reg.register(
        MarketCollector(h.state, {"binance": LatencyHistogram(), "kraken": LatencyHistogram()})
    )
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_collector_exports_fixed_label_sets_at_zero_from_start(h: Harness) -> None:
    m = scrape(h)
    assert len(m["cryptoarb_feed_errors_total"]) == 3 * 10
    assert all(v == 0 for _, v in m["cryptoarb_feed_errors_total"])
    assert len(m["cryptoarb_window_open"]) == 2 * 2  # 2 directions x 2 notionals
    assert len(m["cryptoarb_windows_total"]) == 4
    assert len(m["cryptoarb_opportunity_fillable"]) == 4
    assert "cryptoarb_net_roi_ratio" not in m  # no sample, never NaN
    assert m["cryptoarb_reference_info"] == [({"notional": "1000", "band": "0.005"}, 1.0)]


def test_collector_exports_live_opportunities(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    m = scrape(h)
    rois = {(s["buy_exchange"], s["notional"]): v for s, v in m["cryptoarb_net_roi_ratio"]}
    assert set(rois) == {("binance", "1000"), ("binance", "10000"), ("kraken", "1000"),
                         ("kraken", "10000")}  # fmt: skip
    assert rois[("binance", "1000")] > 0 > rois[("kraken", "1000")]
    depth = [s for s, _ in m["cryptoarb_orderbook_depth_quote"]]
    assert {d["band"] for d in depth} == {"0.001", "0.005", "0.01"}
    opened = {(s["buy_exchange"], s["notional"]): v for s, v in m["cryptoarb_window_open"]}
    assert opened[("binance", "1000")] == 1.0
    assert all(str(v) != "nan" for vals in m.values() for _, v in vals)


def test_a_rate_move_reaches_pairs_at_the_next_book_update_or_flush(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    key = ("BTC/USD", "binance", "kraken")
    before = h.pairs[key].fills[0].net_profit
    assert h.state.record("binance", "BTC/USD").rate == pytest.approx(1.0)
    # USDT at 0.99 USD: buying on the USDT market is 1 % cheaper in USD.
    h.book("kraken", "USDT/USD", 0.9899, 0.9901)
    assert h.pairs[key].fills[0].net_profit == before  # deferred, not lost
    h.state.flush_rates()  # not yet: a busy symbol's own update may come first
    assert h.pairs[key].fills[0].net_profit == before
    h.clock.advance(0.125)  # half of feeds.rate_refresh_interval
    h.state.flush_rates()
    assert h.state.record("binance", "BTC/USD").rate == pytest.approx(0.99)
    after = h.pairs[key].fills[0].net_profit
    assert after is not None and before is not None and after > before + 5  # ~1 % of 1000
    # A book update of the symbol applies the next move at once, to every book of it.
    h.book("kraken", "USDT/USD", 1.0099, 1.0101)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    assert h.state.record("binance", "BTC/USD").rate == pytest.approx(1.01)
    moved = h.pairs[key].fills[0].net_profit
    assert moved is not None and moved < before - 5
    h.clock.advance(1)
    h.state.flush_rates()  # nothing left to do
    assert h.pairs[key].fills[0].net_profit == moved
