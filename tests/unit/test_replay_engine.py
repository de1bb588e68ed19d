"""The replay engine's pieces: book rebuilding, timers on recorded time, unknown books and
malformed rows, the report's merge and percentiles."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.config import Config, parse
from exporter.model import BookStatus, FeedKey
from exporter.replay.book import L2Book
from exporter.replay.engine import ReplayEngine
from exporter.replay.report import finalize, percentile
from exporter.replay.tardis import BookUpdate
from exporter.replay.terms import ReplayInputError, load_terms, missing_terms
from exporter.store.writer import StateWriter

T0 = 1_733_270_400_000_000  # 2024-12-04T00:00:00Z in microseconds


def config(**overrides: Any) -> Config:
    data: dict[str, Any] = {
        "exchanges": {"coinbase": {"taker_fee": 0.001}, "kraken": {"taker_fee": 0.002}},
        "symbols": {"BTC/USD": {"coinbase": "BTC/USD", "kraken": "BTC/USD"}},
        "notionals": [150],
        "feeds": {"depth": 3, "stale_after": 2.0},
        "redis": {"url": None},
    }
    data.update(overrides)
    return parse(data, "test", environ={})


def upd(
    ex: str,
    sym: str,
    t: float,
    bids: tuple[tuple[float, float], ...] = (),
    asks: tuple[tuple[float, float], ...] = (),
    snapshot: bool = False,
) -> BookUpdate:
    us = T0 + round(t * 1e6)
    return BookUpdate(ex, sym, us - 1000, us, snapshot, bids, asks, f"{ex}.csv:{int(t * 10)}")


def engine(cfg: Config) -> ReplayEngine:
    return ReplayEngine(cfg, load_terms(cfg, []), StateWriter(None, registry=CollectorRegistry()))


# -- book -------------------------------------------------------------------------------------
def test_book_updates_deletions_and_top_k_order() -> None:
    book = L2Book(depth=2, max_price=1e9, max_qty=1e12)
    bad: list[tuple[str, float, float]] = []
    book.apply(True, [(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 1.0), (102.0, 2.0)], bad)
    assert book.bids.top() == ((100.0, 1.0), (99.0, 2.0))  # high -> low, top 2 of 3
    assert book.asks.top() == ((101.0, 1.0), (102.0, 2.0))  # low -> high
    book.apply(False, [(100.0, 0.0), (98.5, 4.0)], [(100.5, 0.5)], bad)
    assert book.bids.top() == ((99.0, 2.0), (98.5, 4.0))  # 100 deleted, 98.5 moves in
    assert book.asks.top() == ((100.5, 0.5), (101.0, 1.0))
    # A change below the top K leaves the copy as it was (same object: no rebuild).
    before = book.bids.top()
    book.apply(False, [(90.0, 1.0)], [], bad)
    assert book.bids.top() is before
    # A deletion inside the top K moves the next level up.
    book.apply(False, [(98.5, 0.0)], [], bad)
    assert book.bids.top() == ((99.0, 2.0), (98.0, 3.0))
    book.apply(False, [(98.5, 4.0)], [], bad)
    # ... and an amount change inside the top K rebuilds it.
    book.apply(False, [(99.0, 7.0)], [], bad)
    assert book.bids.top() == ((99.0, 7.0), (98.5, 4.0))
    book.apply(False, [(55.0, 0.0)], [], bad)  # deleting an absent level: nothing happens
    assert len(book.bids) == 4 and bad == []


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 30), st.sampled_from([0.0, 0.0, 1.0, 2.5])),
        max_size=200,
    ),
    st.integers(1, 8),
)
def test_patched_top_equals_a_rebuild_after_any_rows(
    rows: list[tuple[bool, int, float]], depth: int
) -> None:
    book = L2Book(depth=depth, max_price=1e9, max_qty=1e12)
    bad: list[tuple[str, float, float]] = []
    for is_bid, tick, amount in rows:
        level = [(100.0 + tick * 0.5, amount)]
        book.apply(False, level if is_bid else [], [] if is_bid else level, bad)
        assert book.bids.top() == book.bids.rebuilt()
        assert book.asks.top() == book.asks.rebuilt()


def test_snapshot_after_updates_replaces_the_book() -> None:
    book = L2Book(depth=10, max_price=1e9, max_qty=1e12)
    bad: list[tuple[str, float, float]] = []
    book.apply(True, [(100.0, 1.0)], [(101.0, 1.0)], bad)
    book.apply(False, [(99.0, 1.0)], [(105.0, 1.0)], bad)
    # A new snapshot after updates: every earlier level is gone.
    book.apply(True, [(90.0, 2.0)], [], bad)
    assert book.bids.top() == ((90.0, 2.0),) and book.asks.top() == ()
    # A snapshot right after a snapshot (a feed resynced twice) replaces it too.
    book.apply(True, [(89.0, 3.0)], [(91.0, 1.0)], bad)
    assert book.bids.top() == ((89.0, 3.0),) and book.asks.top() == ((91.0, 1.0),)


def test_bad_values_are_skipped_and_reported() -> None:
    book = L2Book(depth=5, max_price=1000.0, max_qty=10.0)
    bad: list[tuple[str, float, float]] = []
    applied = book.apply(
        False, [(100.0, 1.0), (2000.0, 1.0), (float("nan"), 1.0)], [(101.0, 11.0)], bad
    )
    assert applied == 1
    assert [b[0] for b in bad] == ["bid", "bid", "ask"]
    assert book.bids.top() == ((100.0, 1.0),) and book.asks.top() == ()


# -- engine -----------------------------------------------------------------------------------
def test_snapshot_status_and_latency_as_the_live_feed_sets_them() -> None:
    e = engine(config())
    e.feed(upd("coinbase", "BTC-USD", 0.0, bids=((100.0, 1.0),), snapshot=True))
    stats = e.feed_stats[FeedKey(("coinbase", "BTC/USD"))]
    assert stats.status is BookStatus.SYNCING  # a side is empty
    e.feed(upd("coinbase", "BTC-USD", 0.5, asks=((100.0, 1.0),)))
    assert stats.status is BookStatus.CROSSED
    assert stats.errors["crossed"] == 1
    e.feed(upd("coinbase", "BTC-USD", 0.6, asks=((100.0, 0.0), (101.0, 2.0))))
    assert stats.status is BookStatus.LIVE and stats.messages == 3
    snap = e.state.snapshot("coinbase", "BTC/USD")
    assert snap is not None
    assert snap.received_at == snap.received_mono == (T0 + 600_000) / 1e6
    assert snap.exchange_ts == (T0 + 600_000 - 1000) / 1e6
    assert e.latency["coinbase"].count == 3  # one sample per update, 1 ms each
    assert e.latency["coinbase"].total == pytest.approx(0.003)


def test_timers_run_at_their_own_recorded_instants_before_the_update() -> None:
    e = engine(config())
    seen: list[tuple[str, float]] = []
    for timer in e.timers:
        timer.fn = (lambda name: lambda: seen.append((name, e.clock.now - T0 / 1e6)))(timer.name)
    e.feed(upd("coinbase", "BTC-USD", 0.0, ((100.0, 1.0),), ((101.0, 1.0),), True))
    assert seen == []
    e.feed(upd("kraken", "XBT/USD", 1.0, ((100.0, 1.0),), ((101.0, 1.0),), True))
    # stale_after 2 -> sweep every 0.5 s; rate_refresh_interval 0.25 -> flush every 0.125 s;
    # history.interval 1 s. Due at or before t=1.0, each at its own instant, in order.
    sweeps = [t for name, t in seen if name == "sweep"]
    flushes = [t for name, t in seen if name == "flush_rates"]
    ticks = [t for name, t in seen if name == "intelligence"]
    assert sweeps == pytest.approx([0.5, 1.0])
    assert flushes == pytest.approx([0.125 * k for k in range(1, 9)])
    assert ticks == pytest.approx([1.0])
    assert [t for _n, t in seen] == sorted(t for _n, t in seen)
    # On a tie the list order decides: the sweep at 0.5 runs before flush_rates at 0.5.
    at_half = [n for n, t in seen if abs(t - 0.5) < 1e-9]
    assert at_half == ["sweep", "flush_rates"]


def test_a_gap_closes_the_window_stale_at_the_deadline() -> None:
    cfg = config(windows={"open_threshold": 0.001, "close_threshold": 0.0})
    e = engine(cfg)
    e.feed(upd("coinbase", "BTC-USD", 0.0, ((99.0, 10.0),), ((100.0, 10.0),), True))
    e.feed(upd("kraken", "XBT/USD", 0.2, ((103.0, 10.0),), ((104.0, 10.0),), True))
    assert ("BTC/USD", "coinbase", "kraken", 150.0) in e.state.windows.open
    # Both books go quiet; the next row comes 10 s later. The sweep at 2.0 (the first after
    # coinbase's deadline 0.0 + 2.0) closes the window with end = the deadline.
    e.feed(upd("kraken", "XBT/USD", 10.0, ((103.0, 9.0),)))
    e.finish()
    (w,) = e.routes.windows
    assert w["entry"]["close_reason"] == "stale"
    assert w["start"] == pytest.approx(T0 / 1e6 + 0.2)
    assert w["end"] == pytest.approx(T0 / 1e6 + 2.0)


def test_unknown_books_are_counted_with_their_rows(caplog: pytest.LogCaptureFixture) -> None:
    e = engine(config())
    for k in range(3):
        e.feed(upd("binance", "DOGEUSDT", k * 0.1, ((0.1, 1.0), (0.09, 1.0)), ((0.11, 1.0),)))
    assert not e.feed(upd("kraken", "ETH/USD", 0.5, ((1.0, 1.0),)))
    assert dict(e.unknown) == {("binance", "DOGEUSDT"): 9, ("kraken", "ETH/USD"): 1}
    assert e.used_updates == 0


def test_malformed_values_are_counted_and_logged_with_their_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    e = engine(config(feeds={"depth": 3, "stale_after": 2.0, "max_price": 1000.0}))
    with caplog.at_level(logging.WARNING):
        e.feed(upd("coinbase", "BTC-USD", 0.3, ((100.0, 1.0), (5000.0, 1.0)), ((101.0, 1.0),)))
    assert e.files[0].malformed == 1
    assert e.used_updates == 1  # the good rows of the update still apply
    assert "coinbase.csv:3" in caplog.text and "5000.0" in caplog.text


# -- terms and report --------------------------------------------------------------------------
def test_terms_from_the_config_and_what_is_missing() -> None:
    cfg = config(
        exchanges={
            "coinbase": {"markets": {"BTC/USD": {"taker_fee": 0.003, "min_cost": 5.0}}},
            "kraken": {},
        }
    )
    assert missing_terms(cfg) == [
        "exchanges.kraken.taker_fee (or exchanges.kraken.markets.BTC/USD.taker_fee): needed "
        "to replay kraken BTC/USD from files without a markets sidecar"
    ]
    with pytest.raises(ReplayInputError, match="kraken"):
        load_terms(cfg, [])
    ok = config(exchanges={"coinbase": {"markets": {"BTC/USD": {"taker_fee": 0.003,
                "min_cost": 5.0}}}, "kraken": {"taker_fee": 0.002}})  # fmt: skip
    fees = load_terms(ok, [])
    terms = fees.get("coinbase", "BTC/USD")
    assert terms is not None
    assert (terms.taker_fee, terms.min_cost, terms.min_amount) == (0.003, 5.0, 0.0)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.9) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5  # halfway between ranks 1 and 2
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9) == pytest.approx(
        9.1
    )  # (10 - 1) * 0.9 = 8.1 -> 9 + 0.1 * (10 - 9)


def test_finalize_counts_a_shared_file_once_and_numbers_windows_by_start_route_end() -> None:
    cfg = config(notionals=[150, 500])
    route = ["BTC/USD", "coinbase", "kraken"]

    def window(start: float, end: float, notional: float) -> dict[str, Any]:
        entry = {"kind": "window", "id": "x", "symbol": "BTC/USD", "buy_exchange": "coinbase",
                 "sell_exchange": "kraken", "notional": f"{notional:g}", "start": start,
                 "end": end, "duration_seconds": end - start, "peak_profit": 1.0}  # fmt: skip
        entry["close_reason"] = "below_threshold"
        return {"entry": entry, "start": start, "end": end, "route": [*route, notional],
                "logged": True}  # fmt: skip

    files = {"shared.csv": {"rows": 10, "updates": 4, "malformed": 1, "truncated": 0,
                            "unknown": [["binance", "X", 3]]}}  # fmt: skip
    a = {"span": [10.0, 20.0], "files": files, "routes": [], "used_updates": 1,
         "windows": [window(12.0, 15.0, 500), window(12.0, 13.0, 150)]}  # fmt: skip
    b = {"span": [5.0, 18.0], "files": files, "routes": [], "used_updates": 1,
         "windows": [window(11.0, 14.0, 150)]}  # fmt: skip
    windows, report = finalize(cfg, [a, b])
    assert [w["id"] for w in windows] == ["12000-2", "11000-1", "12000-3"]  # by end
    assert report["span"] == {"start": 5.0, "end": 20.0, "seconds": 15.0}
    assert (report["rows"], report["updates"]) == (10, 4)
    unknown = [{"exchange": "binance", "symbol": "X", "rows": 3}]
    assert report["rejected"] == {"malformed": 1, "truncated": 0, "unknown": unknown}
    r150, r500 = report["routes"][0], report["routes"][1]
    assert (r150["windows"], r500["windows"]) == (2, 1)
    assert r150["time_in_window_seconds"] == 4.0 and r150["time_in_window_ratio"] == 4.0 / 15.0
    assert report["routes"][2]["windows"] == 0
    assert report["routes"][2]["duration_seconds"] == {"p50": None, "p90": None, "max": None}
    assert report["routes"][2]["mean_net_roi_open"] is None
