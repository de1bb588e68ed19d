"""Intelligence over a hand-built MarketState: the history row's fields, insights per pair
and book, the collector's series (never NaN), the API without Redis, config checks and the
demo config's correlation window."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.analytics.history import MIN_FRACTION
from exporter.cli.main import demo_config
from exporter.config import ConfigError
from exporter.feeds.stats import LatencyHistogram
from exporter.http.collector import IntelligenceCollector
from exporter.http.server import HttpServer
from exporter.market.intelligence import Intelligence
from exporter.model import BookSnapshot
from exporter.store.writer import StateWriter
from tests.unit.test_market import Harness, make_config


def build(**over: Any) -> tuple[Harness, Intelligence]:
    config = make_config(reference={"notional": 1000, "band": 0.005}, **over)
    h = Harness(config)
    latency = {"binance": LatencyHistogram(), "kraken": LatencyHistogram()}
    writer = StateWriter(None, registry=CollectorRegistry())
    return h, Intelligence(config, h.state, latency, h.feeds, writer)


def live_books(h: Harness) -> None:
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)  # rate 1.0
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5, qty=5.0)


def test_history_row_fields_from_live_books() -> None:
    h, intel = build()
    live_books(h)
    for lat in (0.010, 0.030, 0.020):  # kraken median 0.02, binance 0.05
        intel.observe_book(snap("kraken", lat))
    intel.observe_book(snap("binance", 0.05))
    intel.observe_book(snap("USDT/USD", 9.0))  # conversion books have no row
    row = intel.history_row("BTC/USD", 1.7e9)
    # mids 100.25 (x1.0) and 101.25: signed basis of (binance, kraken)
    assert row.spread == pytest.approx((101.25 - 100.25) / 100.25)
    b_met = h.state.record("binance", "BTC/USD").metrics
    k_met = h.state.record("kraken", "BTC/USD").metrics
    assert b_met is not None and k_met is not None
    depths = [b_met.depth[0.005], k_met.depth[0.005]]
    assert row.liquidity == pytest.approx(sum(b + a for b, a in depths))
    bid, ask = sum(d[0] for d in depths), sum(d[1] for d in depths)
    assert row.imbalance == pytest.approx((bid - ask) / (bid + ask))
    assert row.latency == pytest.approx(0.05)  # max over exchanges of the medians
    best = max(r.fills[0].net_profit for r in h.pairs.values() if r.fills[0].net_profit is not None)
    assert row.net_profit == pytest.approx(best) and best > 0  # buy binance, sell kraken pays
    # samples are consumed: the next interval has no latency
    assert intel.history_row("BTC/USD", 1.7e9 + 1).latency is None


def snap(exchange: str, latency: float) -> BookSnapshot:
    symbol = "USDT/USD" if exchange == "USDT/USD" else "BTC/USD"
    ex = "kraken" if exchange == "USDT/USD" else exchange
    return BookSnapshot(ex, symbol, symbol, (), (), 1000.0, 1000.0 + latency, 0.0)


def test_history_row_is_empty_without_live_books() -> None:
    h, intel = build()
    row = intel.history_row("BTC/USD", 1.7e9)
    assert (row.spread, row.liquidity, row.imbalance, row.net_profit) == (None,) * 4
    h.book("kraken", "BTC/USD", 101.0, 101.5)  # one book only: no spread, but liquidity
    row = intel.history_row("BTC/USD", 1.7e9)
    assert row.spread is None and row.liquidity is not None and row.liquidity > 0


def test_tick_fills_insights_and_the_collector_never_exports_nan() -> None:
    h, intel = build()
    live_books(h)
    now = 1.7e9 + h.clock.monotonic()
    for i in range(3):
        intel.tick(now + i, mono=float(i))
    assert set(intel.pressure) == {("binance", "BTC/USD"), ("kraken", "BTC/USD")}
    assert set(intel.risk) == {
        ("BTC/USD", a, b, n) for a, b in (("binance", "kraken"), ("kraken", "binance"))
        for n in (1000.0, 10000.0)
    }  # fmt: skip
    # 10000 exceeds the ~1000 quote of depth within 0.5 %: the fill factor saturates
    assert intel.risk[("BTC/USD", "binance", "kraken", 10000.0)].score == 1.0
    assert set(intel.latency) == {"binance", "kraken"}
    reg = CollectorRegistry()
    reg.register(IntelligenceCollector(intel))
    text = generate_latest(reg).decode()
    assert "NaN" not in text and "Inf" not in text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"cryptoarb_execution_risk_ratio", "cryptoarb_buying_pressure_ratio",
            "cryptoarb_correlation_compute_duration_seconds"} <= names  # fmt: skip
    # one symbol: no pair to correlate
    assert "cryptoarb_spread_correlation_ratio" not in names


def test_stale_books_drop_their_insights() -> None:
    h, intel = build()
    live_books(h)
    intel.tick(1.7e9 + h.clock.monotonic(), mono=0.0)
    assert intel.risk and intel.pressure
    h.clock.advance(60)  # every book goes stale
    h.state.sweep()
    intel.tick(1.7e9 + h.clock.monotonic(), mono=60.0)
    assert intel.risk == {} and intel.pressure == {}


async def test_api_without_redis_and_bad_parameters() -> None:
    h, intel = build()
    live_books(h)
    intel.tick(1.7e9, mono=0.0)
    from exporter.http.api import api_routes

    writer = StateWriter(None, registry=CollectorRegistry())
    server = HttpServer(
        CollectorRegistry(), lambda: (True, {}), "127.0.0.1", 0,
        extra_routes=api_routes(h.state.config, h.state, intel, writer),
    )  # fmt: skip
    async with TestClient(TestServer(server.app)) as client:
        resp = await client.get("/api/windows")
        assert resp.status == 503 and "unavailable" in (await resp.json())["error"]
        resp = await client.get("/api/history?symbol=BTC/USD")
        body = await resp.json()
        assert resp.status == 200 and body["source"] == "memory" and body["count"] == 1
        resp = await client.get("/api/opportunities?notional=500")
        body = await resp.json()
        assert resp.status == 200 and {e["notional"] for e in body["opportunities"]} == {500}
        fills = {(e["buy_exchange"], e["fillable"]) for e in body["opportunities"]}
        assert fills == {("binance", True), ("kraken", True)}
        bad = (
            "/api/opportunities?notional=nan",
            "/api/history?symbol=BTC/USD&limit=1.5",
            "/api/history?symbol=BTC/USD&since=abc",
            "/api/windows?kind=window&limit=0",
        )
        for path in bad:
            resp = await client.get(path)
            body = await resp.json()
            assert resp.status == 400 and body["status"] == 400 and body["path"], path
        resp = await client.get("/api/insights")
        body = await resp.json()
        assert resp.status == 200 and len(body["execution_risk"]) == 4
        assert body["reference"] == {
            "notional": 1000.0,
            "band": 0.005,
            "pair": ["binance", "kraken"],
        }


def test_config_rejects_unknown_weights_and_bad_trend_windows() -> None:
    with pytest.raises(ConfigError) as err:
        make_config(insights={"weights": {"fill": 0.5, "luck": 0.5}}, trend_windows=[60, 60])
    text = str(err.value)
    assert "insights.weights" in text and "luck" in text and "trend_windows" in text
    with pytest.raises(ConfigError):
        make_config(insights={"weights": {"fill": -1}})


def test_demo_config_fills_the_matrix_within_two_minutes() -> None:
    config = demo_config("http://127.0.0.1:1", None, None)
    corr = config.correlation
    needed = math.ceil(MIN_FRACTION * corr.window_seconds) * config.history.interval
    assert needed + corr.interval + config.feeds.stale_after <= 120
    assert max(config.trend_windows) <= 120
