"""Five venues end to end: Binance, Kraken, Bybit, OKX and Coinbase through the real ccxt.pro
clients against the simulator. Books equal the ground truth at frozen instants, net ROI on
every route equals an independent VWAP walk, every fault kind of every venue is detected
(where the venue makes it detectable) and recovered from, back to the ground truth, and
load_markets stays on each venue's spot listing. (That a book which is not live yields no
opportunity is shown on a fake clock in tests/unit/test_read_model.py and, for crossed and
frozen books, under the /metrics watchdog in tests/integration/test_faults.py.)"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config, parse
from exporter.feeds.stats import FeedStats
from exporter.model import ErrorReason, FeedKey
from exporter.simulator.endpoints import ccxt_config
from tests.support.exporter import all_live, running_exporter, sim_config_data, wait_for
from tests.support.faults import freeze_and_compare, recover
from tests.support.ground_truth import independent_net_profit
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 31, "rate": 20}
VENUES = ("binance", "kraken", "bybit", "okx", "coinbase")
MARKETS = {  # venue -> (BTC market, ETH market)
    "binance": ("BTC/USDT", "ETH/USDT"),
    "kraken": ("BTC/USD", "ETH/USD"),
    "bybit": ("BTC/USDT", "ETH/USDT"),
    "okx": ("BTC/USDT", "ETH/USDT"),
    "coinbase": ("BTC/USD", "ETH/USD"),
}


def five_venue_config(base_url: str, **feeds: Any) -> Config:
    data = sim_config_data(base_url, feeds=feeds)
    for ex in VENUES:
        data["exchanges"].setdefault(ex, {"ccxt": ccxt_config(ex, base_url)})
    data["symbols"] = {
        "BTC/USD": {ex: m[0] for ex, m in MARKETS.items()},
        "ETH/USD": {ex: m[1] for ex, m in MARKETS.items()},
    }
    return parse(data, "five venues", environ={})


async def scrape(exp: Exporter) -> dict[frozenset[tuple[str, str]], float]:
    url = f"http://127.0.0.1:{exp.server.bound_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    return {
        frozenset({"name": s.name, **s.labels}.items()): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in ("cryptoarb_net_roi_ratio", "cryptoarb_opportunity_fillable")
    }


async def test_books_equal_truth_and_net_roi_on_every_route_equals_a_vwap_walk(
    sim: SimulatorHarness,
) -> None:
    # stale_after 5 s: the books stay live while the simulator is frozen for the comparison.
    async with running_exporter(five_venue_config(sim.base_url, stale_after=5.0)) as exp:
        await wait_for(lambda: all_live(exp), timeout=30, what="all five venues live")
        routes = len(exp.state.pair_keys())
        assert routes == 2 * 5 * 4
        await wait_for(
            lambda: len(list(exp.state.live_pairs())) == routes, timeout=10, what="every route"
        )
        sim.freeze()
        try:
            await asyncio.sleep(0.5)  # the last frames arrive; the books stay live (5 s)
            truth = {
                key: sim.book(*key, depth=exp.config.feeds.depth)
                for key in [*exp.feed_stats, ("kraken", "USDT/USD")]
            }
            samples = await scrape(exp)
            for ex, market in exp.feed_stats:  # every book, conversion book included
                snap = exp.state.snapshot(ex, market)
                assert snap is not None
                n = exp.config.feeds.depth // 2
                bids = [(float(p), float(q)) for p, q in truth[(ex, market)]["bids"][:n]]
                assert list(snap.bids[:n]) == bids, f"{ex} {market} differs from the truth"
        finally:
            sim.unfreeze()
        usdt = truth[("kraken", "USDT/USD")]
        r_usdt = (Decimal(usdt["bids"][0][0]) + Decimal(usdt["asks"][0][0])) / 2
        checked = 0
        for symbol, a, b in exp.state.pair_keys():
            mapping = exp.config.symbols[symbol]
            fa, fb = exp.fees.get(a, mapping[a]), exp.fees.get(b, mapping[b])
            assert fa is not None and fb is not None
            for n in exp.config.notionals:
                q = Decimal(str(n))
                expected = independent_net_profit(
                    truth[(a, mapping[a])]["asks"], truth[(b, mapping[b])]["bids"], q,
                    Decimal(str(fa.taker_fee)), Decimal(str(fb.taker_fee)),
                    r_usdt if mapping[a].endswith("/USDT") else Decimal(1),
                    r_usdt if mapping[b].endswith("/USDT") else Decimal(1),
                )  # fmt: skip
                labels = {"symbol": symbol, "buy_exchange": a, "sell_exchange": b,
                          "notional": str(int(n))}  # fmt: skip
                fill = frozenset({"name": "cryptoarb_opportunity_fillable", **labels}.items())
                roi = frozenset({"name": "cryptoarb_net_roi_ratio", **labels}.items())
                if expected is None:
                    assert samples[fill] == 0
                    continue
                assert samples[fill] == 1
                assert samples[roi] == pytest.approx(float(expected / q), abs=1e-8)
                checked += 1
        assert checked >= routes  # at least one notional per route


# -- every fault kind on every venue ---------------------------------------------------------

# kind -> what the exporter must count on the faulted feed (None: recovery and truth only)
DETECTED_BY: dict[str, Any] = {
    "close": "reconnects",
    "abort": "reconnects",
    "stall": "reconnects",  # the watch times out (stale_after) and reconnects
    "malformed_frame": ErrorReason.MALFORMED_FRAME,
    "crossed": ErrorReason.CROSSED,
    "frozen": ErrorReason.STALE,  # frozen while the others move, or quiet past stale_after
    "sequence_gap": "resyncs",
    "bad_checksum": "resyncs",
    "corrupt_level": "resyncs",
}
# A dropped update is caught by a sequence check where the venue has one; on Kraken only the
# checksum can catch it, and a later update that rewrites the same levels heals it first.
DROP_DETECTED = {"binance", "bybit", "okx", "coinbase"}
EXTRA_KINDS = {
    "binance": ("sequence_gap",),
    "kraken": ("bad_checksum",),
    "bybit": ("sequence_gap",),
    "okx": ("sequence_gap", "bad_checksum", "corrupt_level"),
    "coinbase": ("sequence_gap",),
}
COMMON_KINDS = ("close", "abort", "stall", "malformed_frame", "crossed", "frozen", "drop_update")


def count(stats: FeedStats, what: Any) -> int:
    if isinstance(what, ErrorReason):
        return stats.errors[what]
    return int(getattr(stats, what))


@pytest.mark.slow
@pytest.mark.parametrize("venue", VENUES)
async def test_every_fault_kind_is_detected_and_recovered(
    sim: SimulatorHarness, venue: str
) -> None:
    market = MARKETS[venue][0]
    # A REST failure of the venue's market listing at start: retried with backoff.
    sim.fault(venue, "rest_error", None, status=429, count=1)
    # Every fault costs the market a (re)subscription: a burst of 30 keeps the snapshot
    # budget (tested on its own in test_faults.py) from spacing them 7.5 s apart.
    config = five_venue_config(sim.base_url, stale_after=1.0, frozen_after=1.5, snapshot_burst=30)
    async with running_exporter(config) as exp:
        stats = exp.feed_stats[FeedKey((venue, market))]
        await wait_for(lambda: all_live(exp), timeout=30, what="all live after the REST 429")
        assert stats.errors[ErrorReason.RATE_LIMIT] >= 1, "the listing's 429 was counted"
        for kind in COMMON_KINDS + EXTRA_KINDS[venue]:
            what = DETECTED_BY.get(kind)
            if kind == "drop_update":
                what = "resyncs" if venue in DROP_DETECTED else None
            before = count(stats, what) if what is not None else 0
            t0 = time.monotonic()
            extra = {"seconds": 3.0} if kind in ("stall", "crossed", "frozen") else {}
            for _ in range(5 if kind == "corrupt_level" else 1):
                # a corrupted level below the checksummed top 25 is invisible: corrupt again
                sim.fault(venue, kind, market, **extra)
                if what is None:
                    break
                try:
                    await wait_for(lambda w=what, b=before: count(stats, w) > b, timeout=5)
                    break
                except AssertionError:
                    if kind != "corrupt_level":
                        raise AssertionError(f"{venue} {kind}: no {what} counted") from None
            else:
                raise AssertionError(f"{venue} {kind}: never detected")
            await recover(exp, sim, f"{venue} {kind}", t0, timeout=20)
        await freeze_and_compare(exp, sim)


async def test_load_markets_stays_on_spot_with_the_exporters_own_defaults(
    sim: SimulatorHarness,
) -> None:
    """Only the simulator's URLs are given (no ccxt options): the watch profiles' defaults
    alone keep every venue's load_markets to its spot listing."""
    config = five_venue_config(sim.base_url)
    data = config.model_dump()
    for ex, ex_cfg in data["exchanges"].items():
        ex_cfg["ccxt"] = {"urls": ccxt_config(ex, sim.base_url)["urls"]}
        if ex == "kraken":
            ex_cfg["ccxt"]["rateLimit"] = 50
    sim.post("/control/counters/reset")
    async with running_exporter(parse(data, "urls only", environ={})) as exp:
        await wait_for(lambda: all_live(exp), timeout=30, what="all five venues live")
        rest = sim.counters()["rest_requests"]
    listing = {  # endpoint -> calls: one load_markets per venue
        ex: {k: v for k, v in calls.items() if k not in ("depth",)} for ex, calls in rest.items()
    }
    assert listing == {
        "binance": {"exchangeInfo": 1},
        "kraken": {"Assets": 1, "AssetPairs": 1},
        "bybit": {"instruments-info": 1},
        "okx": {"instruments": 1},
        "coinbase": {"market/products": 1, "market/products:FUTURE": 1},
    }
