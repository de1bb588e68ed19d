"""The whole pipeline against the simulator and a private redis-server: exported net ROI
equals an independent computation on ground truth; windows land in the Redis log; tickers;
a Redis outage loses no window entry; promtool accepts /metrics; SIGTERM exits cleanly."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import redis

from exporter.app import Exporter
from tests.support.exporter import (
    ExporterProcess,
    all_live,
    running_exporter,
    sim_config,
    sim_config_data,
    wait_for,
)
from tests.support.ground_truth import independent_net_profit
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration


# One simulator process for the module, reset before each test (tests/support/fixtures.py)
SIMULATOR = {"seed": 11, "rate": 10}


async def scrape(exp: Exporter) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{exp.server.bound_port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[frozenset(s.labels.items())] = s.value
    return out


async def test_exported_net_roi_equals_independent_computation_on_ground_truth(
    sim: SimulatorHarness,
) -> None:
    # The books must stay live while the simulator is frozen: with stale_after 1 s, the
    # settle, five synchronous ground-truth reads and the scrape could outlast it (a book's
    # last frame may predate the freeze by 0.15 s) and no ROI would be exported.
    async with running_exporter(sim_config(sim.base_url, feeds={"stale_after": 5.0})) as exp:
        await wait_for(lambda: all_live(exp), timeout=15, what="all live")
        sim.freeze()
        try:
            await asyncio.sleep(0.5)  # let the last frames arrive; the books stay live (5 s)
            truth = {
                (ex, m): sim.book(ex, m, depth=100)
                for ex, m in [*exp.feed_stats, ("kraken", "USDT/USD")]
            }
            text = await scrape(exp)
        finally:
            sim.unfreeze()
        usdt = truth[("kraken", "USDT/USD")]
        rate_usdt = (Decimal(usdt["bids"][0][0]) + Decimal(usdt["asks"][0][0])) / 2
        rates = {"binance": rate_usdt, "kraken": Decimal(1)}
        roi = samples(text, "cryptoarb_net_roi_ratio")
        fillable = samples(text, "cryptoarb_opportunity_fillable")
        checked = 0
        for symbol, mapping in exp.config.symbols.items():
            for a in mapping:
                for b in mapping:
                    if a == b:
                        continue
                    fa = exp.fees.get(a, mapping[a])
                    fb = exp.fees.get(b, mapping[b])
                    assert fa is not None and fb is not None
                    for n in exp.config.notionals:
                        q = Decimal(str(n))
                        expected = independent_net_profit(
                            truth[(a, mapping[a])]["asks"],
                            truth[(b, mapping[b])]["bids"],
                            q,
                            Decimal(str(fa.taker_fee)),
                            Decimal(str(fb.taker_fee)),
                            rates[a],
                            rates[b],
                        )
                        labels = frozenset(
                            {"symbol": symbol, "buy_exchange": a, "sell_exchange": b,
                             "notional": str(int(n))}.items()
                        )  # fmt: skip
                        if expected is None:
                            assert fillable[labels] == 0
                            continue
                        assert fillable[labels] == 1
                        assert roi[labels] == pytest.approx(float(expected / q), abs=1e-9)
                        checked += 1
        assert checked >= 6


async def test_dislocation_opens_and_closes_a_window_in_the_redis_log(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    async with running_exporter(sim_config(sim.base_url, redis_server.url)) as exp:
        await wait_for(lambda: all_live(exp), timeout=15)
        # Kraken 2 % above Binance for 2 s: buy Binance, sell Kraken pays after fees.
        sim.dislocation("BTC", "kraken", 0.02, 2.0)
        key = ("BTC/USD", "binance", "kraken", 1000.0)
        await wait_for(lambda: key in exp.state.windows.open, timeout=5, what="window open")
        text = await scrape(exp)
        opened = samples(text, "cryptoarb_window_open")
        assert (
            opened[
                frozenset(
                    {
                        "symbol": "BTC/USD",
                        "buy_exchange": "binance",
                        "sell_exchange": "kraken",
                        "notional": "1000",
                    }.items()
                )
            ]
            == 1
        )
        await wait_for(lambda: key not in exp.state.windows.open, timeout=8, what="closed")

        def logged() -> list[dict[str, str]]:
            entries = [fields for _id, fields in r.xrange("windows")]
            return [e for e in entries if e["symbol"] == "BTC/USD" and e["notional"] == "1000"
                    and e["buy_exchange"] == "binance"]  # fmt: skip

        entries = await wait_for(logged, timeout=5, what="window in the Redis log")
        e = entries[0]
        assert e["kind"] == "window" and e["close_reason"] == "below_threshold"
        assert 1.0 <= float(e["duration_seconds"]) <= 6.0
        assert float(e["peak_roi"]) > 0.01
        assert float(e["end"]) > float(e["start"])
        totals = samples(await scrape(exp), "cryptoarb_windows_total")
        assert max(totals.values()) >= 1


async def test_ticker_keys_symbols_set_and_ttl(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    async with running_exporter(sim_config(sim.base_url, redis_server.url)) as exp:
        await wait_for(lambda: all_live(exp), timeout=15)
        # Books go live one by one and tickers are flushed on a timer: wait for each key.
        keys = ["ticker:binance:BTC/USD", "ticker:kraken:ETH/USD"]
        await wait_for(lambda: r.exists(*keys) == len(keys), timeout=5, what="ticker keys")
        await wait_for(lambda: r.smembers("symbols") == {"BTC/USD", "ETH/USD"}, timeout=5)
        ticker = json.loads(r.get("ticker:binance:BTC/USD") or "{}")
        for field in ("exchange", "symbol", "bid", "ask", "bid_depth", "ask_depth", "depth",
                      "latency", "timestamp", "received_at", "bids", "asks"):  # fmt: skip
            assert field in ticker, field
        assert ticker["symbol"] == "BTC/USD" and ticker["exchange"] == "binance"
        assert 0 < ticker["bid"] < ticker["ask"]
        assert set(ticker["depth"]) == {"0.001", "0.005", "0.01"}
        ttl = r.pttl("ticker:binance:BTC/USD")
        assert 0 < ttl <= 3 * exp.config.feeds.stale_after * 1000


async def test_redis_outage_loses_no_window_entry(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    async with running_exporter(sim_config(sim.base_url, redis_server.url)) as exp:
        await wait_for(lambda: all_live(exp), timeout=15)
        await wait_for(lambda: exp.writer.up, timeout=5)
        redis_server.stop()
        await wait_for(lambda: not exp.writer.up, timeout=5, what="redis down noticed")
        text = await scrape(exp)  # /metrics keeps serving
        assert samples(text, "cryptoarb_redis_up")[frozenset()] == 0
        produced: list[dict[str, Any]] = []
        original = exp.writer.append_log

        def spy(entry: Any, dedupe_key: str | None = None) -> None:
            produced.append(dict(entry))
            original(entry, dedupe_key)

        exp.writer.append_log = spy  # type: ignore[method-assign]  # what the tracker logs
        for size in (0.02, -0.02):
            sim.dislocation("ETH", "kraken", size, 1.5)
            await asyncio.sleep(3.0)
        await wait_for(lambda: len(produced) >= 2, timeout=5, what="windows during the outage")
        redis_server.start()
        await wait_for(lambda: exp.writer.up, timeout=10, what="redis back")
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)
        ids = {e["id"] for e in produced}
        await wait_for(
            lambda: ids <= {f["id"] for _i, f in r.xrange("windows")}, timeout=5, what="log flushed"
        )
        logged = [f["id"] for _i, f in r.xrange("windows") if f["id"] in ids]
        assert len(logged) == len(ids), "no duplicates"


def test_promtool_check_metrics_finds_nothing(sim: SimulatorHarness) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/setup.sh"

    async def fetch() -> str:
        async with running_exporter(sim_config(sim.base_url)) as exp:
            await wait_for(lambda: all_live(exp), timeout=15)
            sim.dislocation("BTC", "kraken", 0.02, 1.0)
            await asyncio.sleep(2.0)
            return await scrape(exp)

    text = asyncio.run(fetch())
    assert "cryptoarb_net_roi_ratio{" in text and "cryptoarb_feed_latency_seconds_bucket" in text
    res = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NaN" not in text


def test_sigterm_closes_windows_flushes_and_exits_zero_within_10s(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    proc = ExporterProcess(
        sim_config_data(sim.base_url, redis_server.url, windows={
            "open_threshold": -0.05, "close_threshold": -0.06, "min_duration_seconds": 0})
    ).start()  # fmt: skip
    try:
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)

        def ready() -> bool:
            try:
                with urlopen(proc.url + "/readyz") as resp:
                    return resp.status == 200
            except OSError:
                return False

        deadline = time.monotonic() + 20
        while not ready():
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        # threshold -5 %: every direction is an open window once its pair is evaluated
        proc.wait_open_windows(2 * 2 * 2)  # 2 symbols x 2 directions x 2 notionals
        proc.signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=10) == 0, proc.log()
        assert time.monotonic() - t0 < 10
        reasons = [f["close_reason"] for _i, f in r.xrange("windows")]
        assert reasons and set(reasons) == {"shutdown"}, proc.log()
        assert len(reasons) == 2 * 2 * 2  # 2 symbols x 2 directions x 2 notionals
    finally:
        proc.stop()


def urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=2)
