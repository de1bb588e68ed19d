"""One read model, live: after a book goes stale, /metrics and /api/opportunities agree at
once, and the next Redis flush marks the ticker stale (real ccxt.pro against the simulator,
a private redis-server)."""

from __future__ import annotations

import json

import aiohttp
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import parse
from tests.support.exporter import all_live, running_exporter, sim_config_data, wait_for
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 3, "rate": 20}
BOOK = ("kraken", "ETH/USD")  # stopped by the test; the simulator's market is ETH/USD too


Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(session: aiohttp.ClientSession, exp: Exporter) -> Samples:
    async with session.get(f"http://127.0.0.1:{exp.server.bound_port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def book_sample(m: Samples, name: str) -> float | None:
    for labels, value in m.get(name, []):
        if (labels.get("exchange"), labels.get("symbol")) == BOOK:
            return float(value)
    return None


def pairs_on_metrics(m: Samples) -> set[tuple[str, str, str]]:
    return {
        (s["symbol"], s["buy_exchange"], s["sell_exchange"])
        for s, _ in m.get("cryptoarb_cross_spread_ratio", [])
    }


async def pairs_on_api(session: aiohttp.ClientSession, exp: Exporter) -> set[tuple[str, str, str]]:
    url = f"http://127.0.0.1:{exp.server.bound_port}/api/opportunities"
    async with session.get(url) as resp:
        assert resp.status == 200
        body = await resp.json()
    return {(e["symbol"], e["buy_exchange"], e["sell_exchange"]) for e in body["opportunities"]}


def involves_book(pairs: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return {p for p in pairs if p[0] == BOOK[1] and BOOK[0] in p[1:]}


async def test_scrape_api_and_redis_agree_when_a_book_goes_stale(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    # Books are stale after 1 s of quiet, while the watch timeout and the sweep
    # follow feeds.stale_after (8 s, every 2 s): neither the supervisor's reconnect nor the
    # sweep acts in the seconds compared below, only the stored deadline does.
    data = sim_config_data(sim.base_url, redis_server.url, feeds={"stale_after": 8.0})
    for exchange in ("binance", "kraken"):
        data["exchanges"][exchange]["stale_after"] = 1.0
    config = parse(data, "test", environ={})
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    key = f"ticker:{BOOK[0]}:{BOOK[1]}"
    async with running_exporter(config) as exp, aiohttp.ClientSession() as session:
        await wait_for(lambda: all_live(exp), timeout=20, what="every book live")
        await wait_for(lambda: list(exp.state.live_pairs(BOOK[1])), what="ETH/USD pairs")
        m = await scrape(session, exp)
        assert involves_book(pairs_on_metrics(m)) == involves_book(await pairs_on_api(session, exp))
        assert involves_book(pairs_on_metrics(m)), "both directions are exported while live"
        await wait_for(lambda: json.loads(r.get(key) or "{}").get("status") == "live")

        # Both books of the symbol go quiet: no update of the other book re-evaluates the pair.
        sim.market_stop("binance", "ETH/USDT")
        sim.market_stop("kraken", "ETH/USD")
        checked = 0
        for _ in range(100):
            before = await scrape(session, exp)
            api = await pairs_on_api(session, exp)
            after = await scrape(session, exp)
            updated = "cryptoarb_orderbook_last_update_timestamp_seconds"
            same_book = book_sample(before, updated) == book_sample(after, updated)
            stale = [book_sample(x, "cryptoarb_orderbook_stale") for x in (before, after)]
            if stale == [1.0, 1.0] and same_book:
                # Stale on both scrapes around the API call, no update in between: all three
                # readings must hide every pair of the book.
                assert involves_book(pairs_on_metrics(before)) == set()
                assert involves_book(api) == set()
                assert involves_book(pairs_on_metrics(after)) == set()
                checked += 1
                if checked >= 5:
                    break
        assert checked >= 5, "the stopped book never read stale on /metrics"
        # The next flush (every 0.05 s here) re-publishes the ticker with its status.
        await wait_for(
            lambda: json.loads(r.get(key) or "{}").get("status") in ("stale", "syncing", "down"),
            timeout=2,
            what=f"{key} marked not live",
        )
        assert json.loads(r.get(key) or "{}")["status"] != "live"
        sim.market_start("kraken", "ETH/USD")
        sim.market_start("binance", "ETH/USDT")
    r.close()
