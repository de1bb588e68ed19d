"""The simulated Coinbase Advanced Trade venue driven by the REAL ccxt.pro coinbase (4.5.90)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import ccxt
import ccxt.pro
import pytest

from exporter.simulator.endpoints import ccxt_config, markets_of
from exporter.simulator.market import World
from tests.support.simulator import SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

IDLE = 2.0  # --coinbase-idle-timeout of this module's simulator
SIMULATOR = {"seed": 17, "rate": 20, "extra_args": ["--coinbase-idle-timeout", str(IDLE)]}
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD")


class RecordingCoinbase(ccxt.pro.coinbase):  # type: ignore[misc]
    """Records every message's channel and sequence_num, and l2_data messages per product."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.seqs: list[tuple[str, int]] = []
        self.l2: dict[str, int] = {}

    def handle_message(self, client: Any, message: Any) -> None:
        if isinstance(message, dict) and isinstance(message.get("sequence_num"), int):
            self.seqs.append((str(message.get("channel")), message["sequence_num"]))
            events = message.get("events")
            if message.get("channel") == "l2_data" and isinstance(events, list):
                for event in events:
                    pid = event.get("product_id", "")
                    self.l2[pid] = self.l2.get(pid, 0) + 1
        super().handle_message(client, message)


def make(sim: SimulatorHarness) -> Any:
    return RecordingCoinbase(ccxt_config("coinbase", sim.base_url))


async def within(aw: Any, timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(aw, timeout)


async def keep_watching(ex: Any, symbol: str, seconds: float) -> int:
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await within(ex.watch_order_book(symbol))
        n += 1
    return n


async def wait_for(cond: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def settle(sim: SimulatorHarness, ex: Any, symbols: tuple[str, ...]) -> None:
    """Wait until ccxt handled every l2_data message the server sent for `symbols`."""
    sent = (await sim.acounters())["messages_sent"]["coinbase"]
    ids = {s: s.replace("/", "-") for s in symbols}
    await wait_for(lambda: all(ex.l2.get(ids[s], 0) >= sent.get(s, 0) for s in symbols))


def levels(side: Any, n: int = 100_000) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in list(side)[:n]]


async def equal_to_truth(sim: SimulatorHarness, ex: Any, symbol: str) -> bool:
    truth = await sim.abook("coinbase", symbol, 5000)
    ob = ex.orderbooks[symbol]
    return levels(ob["bids"]) == levels(truth["bids"]) and levels(ob["asks"]) == levels(
        truth["asks"]
    )


# -- configuration and REST --------------------------------------------------------------------


def test_ccxt_config_redirects_every_url_to_loopback() -> None:
    default = ccxt.pro.coinbase()
    ex = ccxt.pro.coinbase(ccxt_config("coinbase", "http://127.0.0.1:1234"))

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, str):
            yield node

    assert set(ex.urls["api"]) == set(default.urls["api"]) == {"rest", "ws"}
    urls = list(walk(ex.urls["api"]))
    assert urls and all(u.split("://", 1)[1].startswith("127.0.0.1:") for u in urls), urls
    assert ex.urls["api"] == {
        "rest": "http://127.0.0.1:1234/coinbase",
        "ws": "ws://127.0.0.1:1234/coinbase/ws",
    }
    assert ex.has["fetchCurrencies"] is False and default.has["fetchCurrencies"] is True
    assert ex.options["fetchMarkets"] == "fetchMarketsV3"  # ccxt's default kept by the merge


async def test_load_markets_rest_calls_precision_limits_and_fee(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        markets = await ex.load_markets()
        counters = await sim.acounters()
        # the spot products, plus the FUTURE products ccxt 4.5.90 always asks for; no
        # /v2/currencies, /v2/currencies/crypto, /v2/exchange-rates (has.fetchCurrencies off)
        assert counters["rest_requests"] == {
            "coinbase": {"market/products": 1, "market/products:FUTURE": 1}
        }
        assert set(markets) == {*SYMBOLS, "BTC/USDC", "ETH/USDC", "SOL/USDC"}
        for spec in markets_of("coinbase"):
            m = markets[spec.symbol]
            assert m["id"] == spec.market_id and m["spot"] and m["active"]
            assert m["precision"] == {"amount": 1e-8, "price": 0.01, **m["precision"]}
            assert m["limits"]["amount"]["min"] == float(spec.min_qty)
            assert m["limits"]["cost"]["min"] == float(spec.min_notional)
            assert m["taker"] == 0.012  # ccxt's default: public products carry no fee tier
            assert m["alias"] == spec.market_id.replace("-USD", "-USDC")
        assert markets["BTC/USDC"]["id"] == "BTC-USDC" and markets["BTC/USDC"]["quote"] == "USDC"
        ob = await ex.fetch_order_book("ETH/USD", 5)
        truth = await sim.abook("coinbase", "ETH/USD", 5)
        assert abs(ob["bids"][0][0] - float(truth["bids"][0][0])) < 50
        assert len(ob["asks"]) == 5
        snaps = (await sim.acounters())["depth_snapshots"]["coinbase"]
        assert snaps == {"ETH/USD": 1}
    finally:
        await ex.close()


# -- exactness ---------------------------------------------------------------------------------


async def test_ccxt_books_equal_ground_truth_at_a_frozen_instant(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        counts = await asyncio.gather(*(keep_watching(ex, s, 2.0) for s in SYMBOLS))
        assert all(n > 10 for n in counts), counts
        usdc = await within(ex.watch_order_book("BTC/USDC"))  # the merged USD book
        assert usdc["symbol"] == "BTC/USD"
        await sim.afreeze()
        await settle(sim, ex, SYMBOLS)
        for symbol in SYMBOLS:
            truth = await sim.abook("coinbase", symbol, 5000)
            ob = ex.orderbooks[symbol]
            assert len(truth["bids"]) > 900 and len(truth["asks"]) > 900  # the whole book
            assert levels(ob["bids"]) == levels(truth["bids"]), symbol
            assert levels(ob["asks"]) == levels(truth["asks"]), symbol
        assert "BTC/USDC" not in ex.orderbooks  # ccxt files the USDC watch under BTC/USD
        # one socket for every symbol; sequence_num counts its messages without a hole
        seqs = [n for _, n in ex.seqs]
        assert seqs == list(range(len(seqs)))
        c = await sim.acounters()
        assert c["ws_connections"]["coinbase"]["opened"] == 1
        assert c["subscribe_requests"]["coinbase"] == {s: 1 for s in SYMBOLS} | {"BTC/USD": 2}
    finally:
        await ex.close()


# -- faults ------------------------------------------------------------------------------------


async def test_drop_update_leaves_a_hole_and_ccxt_book_diverges(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        await keep_watching(ex, "BTC/USD", 1.0)
        drops = 0
        while True:  # a later step may rewrite every level the dropped one changed: retry
            await sim.afreeze()
            await settle(sim, ex, ("BTC/USD",))
            assert await equal_to_truth(sim, ex, "BTC/USD")
            mark = len(ex.seqs)
            await sim.afault("coinbase", "drop_update", "BTC/USD")
            drops += 1
            await sim.aunfreeze()
            await wait_for(lambda m=mark: len(ex.seqs) >= m + 2)
            await sim.afreeze()
            await settle(sim, ex, ("BTC/USD",))
            seqs = [n for _, n in ex.seqs[mark - 1 :]]
            assert seqs[1] == seqs[0] + 2  # the dropped message's sequence_num is missing
            if not await equal_to_truth(sim, ex, "BTC/USD"):
                break  # ccxt noticed nothing, its book silently differs
            assert drops < 5, "5 drops in a row healed at once"
        c = await sim.acounters()
        assert c["faults"]["coinbase"]["drop_update_applied"] == drops
    finally:
        await ex.close()


async def test_sequence_gap_jumps_sequence_num_and_loses_nothing(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        await keep_watching(ex, "ETH/USD", 0.5)
        mark = len(ex.seqs)
        await sim.afault("coinbase", "sequence_gap", "ETH/USD", gap=7)
        await keep_watching(ex, "ETH/USD", 0.5)
        seqs = [n for _, n in ex.seqs[mark - 1 :]]
        steps = [b - a for a, b in itertools.pairwise(seqs)]
        assert sorted(steps)[-1] == 8 and steps.count(8) == 1 and set(steps) == {1, 8}
        await sim.afreeze()
        await settle(sim, ex, ("ETH/USD",))
        assert await equal_to_truth(sim, ex, "ETH/USD")  # a gap, not a loss
    finally:
        await ex.close()


async def test_close_and_abort_raise_network_error_then_reconnect(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        for kind in ("close", "abort"):
            await keep_watching(ex, "SOL/USD", 0.3)
            watching = asyncio.ensure_future(keep_watching(ex, "SOL/USD", 3.0))
            await asyncio.sleep(0.1)
            res = await sim.afault("coinbase", kind, "SOL/USD")
            assert res["affected"] == 1
            with pytest.raises(ccxt.NetworkError):
                await watching
        assert await keep_watching(ex, "SOL/USD", 0.3) > 0  # the next watch reconnects
        assert (await sim.acounters())["ws_connections"]["coinbase"]["opened"] == 3
    finally:
        await ex.close()


@pytest.mark.parametrize("variant", ["crash", "not_json"])
async def test_malformed_frame_kills_ccxt_receive_loop(sim: SimulatorHarness, variant: str) -> None:
    ex = make(sim)
    try:
        await keep_watching(ex, "BTC/USD", 0.3)
        res = await sim.afault("coinbase", "malformed_frame", "BTC/USD", variant=variant)
        assert res["affected"] == 1
        with pytest.raises(TimeoutError):  # the handler raised in the receive loop: silence
            await within(ex.watch_order_book("BTC/USD"), 1.0)
    finally:
        await ex.close()


async def test_malformed_garbage_is_ignored_by_ccxt(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        await keep_watching(ex, "BTC/USD", 0.3)
        mark = len(ex.seqs)
        await sim.afault("coinbase", "malformed_frame", "BTC/USD", variant="garbage")
        assert await keep_watching(ex, "BTC/USD", 0.5) > 3
        assert any(n == 0 for _, n in ex.seqs[mark:])  # the garbage frame arrived
    finally:
        await ex.close()


async def test_rest_errors_map_to_ccxt_exceptions(sim: SimulatorHarness) -> None:
    cases = [(429, ccxt.RateLimitExceeded), (500, ccxt.ExchangeError),
             (503, ccxt.ExchangeNotAvailable)]  # fmt: skip
    for status, exc in cases:
        ex = make(sim)
        try:
            await sim.afault(
                "coinbase", "rest_error", endpoint="market/products", status=status, retry_after=1
            )
            with pytest.raises(exc):
                await ex.load_markets()
            assert len(await ex.load_markets(reload=True)) == 6  # count=1 used up
        finally:
            await ex.close()
    c = await sim.acounters()
    assert c["rest_errors_injected"] == {"coinbase": {"market/products": 3}}
    assert c["rest_requests"]["coinbase"]["market/products"] == 6


async def test_stall_crossed_and_frozen(sim: SimulatorHarness) -> None:
    ex = make(sim)
    try:
        await asyncio.gather(keep_watching(ex, "BTC/USD", 0.3), keep_watching(ex, "ETH/USD", 0.3))
        await sim.afault("coinbase", "stall", "BTC/USD", seconds=1.0)
        with pytest.raises(TimeoutError):
            await within(ex.watch_order_book("BTC/USD"), 0.7)
        assert await keep_watching(ex, "ETH/USD", 0.2) > 0  # the other market flows
        assert await keep_watching(ex, "BTC/USD", 0.5) > 0  # resumes on the same socket

        await sim.afault("coinbase", "crossed", "BTC/USD", seconds=0.5)
        ob = ex.orderbooks["BTC/USD"]
        await wait_for(lambda: ob["bids"][0][0] > ob["asks"][0][0])
        await wait_for(lambda: ob["bids"][0][0] < ob["asks"][0][0])  # the next step sweeps it

        await sim.afault("coinbase", "frozen", "ETH/USD", seconds=1.0)
        await keep_watching(ex, "ETH/USD", 0.1)
        before = levels(ex.orderbooks["ETH/USD"]["bids"]), levels(ex.orderbooks["ETH/USD"]["asks"])
        assert await keep_watching(ex, "ETH/USD", 0.5) > 3  # updates keep coming...
        after = levels(ex.orderbooks["ETH/USD"]["bids"]), levels(ex.orderbooks["ETH/USD"]["asks"])
        assert after == before  # ...that change nothing
    finally:
        await ex.close()


# -- idle close --------------------------------------------------------------------------------


async def test_idle_level2_socket_is_closed_unless_subscribed_to_heartbeats(
    sim: SimulatorHarness,
) -> None:
    ex = make(sim)
    ws_url = sim.base_url.replace("http://", "ws://") + "/coinbase/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        try:
            await keep_watching(ex, "SOL/USD", 0.3)
            await ws.send_json(
                {"type": "subscribe", "channel": "level2", "product_ids": ["SOL-USD"]}
            )
            await ws.send_json({"type": "subscribe", "channel": "heartbeats"})
            await sim.arequest(
                "POST", "/control/market/stop", {"exchange": "coinbase", "market": "SOL/USD"}
            )
            t0 = time.monotonic()
            with pytest.raises(ccxt.NetworkError, match="1000"):  # closed by the server
                await within(ex.watch_order_book("SOL/USD"), IDLE + 3.0)
            assert IDLE - 0.5 < time.monotonic() - t0 < IDLE + 1.0
            c = await sim.acounters()
            assert c["faults"]["coinbase"]["idle_closed"] == 1
            assert c["ws_connections"]["coinbase"]["open"] == 1  # the heartbeat subscriber

            # the raw socket outlives twice the idle time on the silent market
            beats: list[int] = []
            last_l2 = time.monotonic()
            while time.monotonic() - last_l2 < 2 * IDLE or len(beats) < 2 * IDLE:
                msg = await within(ws.receive_json(), 2.0)
                if msg["channel"] == "heartbeats":
                    beats.append(int(msg["events"][0]["heartbeat_counter"]))
                elif msg["channel"] == "l2_data":
                    assert msg["events"][0]["type"] == "snapshot"  # no updates: stopped
                    last_l2 = time.monotonic()
            assert beats == list(range(beats[0], beats[0] + len(beats)))
            assert not ws.closed
            assert (await sim.acounters())["faults"]["coinbase"]["idle_closed"] == 1
        finally:
            await ex.close()


# -- raw wire protocol -------------------------------------------------------------------------


async def test_raw_protocol_snapshot_subscriptions_usdc_alias_and_errors(
    sim: SimulatorHarness,
) -> None:
    await sim.afreeze()
    ws_url = sim.base_url.replace("http://", "ws://") + "/coinbase/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "subscribe", "channel": "level2", "product_ids": ["ETH-USDC"]})
        snap = await within(ws.receive_json())
        ack = await within(ws.receive_json())
        assert (snap["channel"], snap["sequence_num"], snap["client_id"]) == ("l2_data", 0, "")
        event = snap["events"][0]
        assert (event["type"], event["product_id"]) == ("snapshot", "ETH-USD")  # merged book
        truth = await sim.abook("coinbase", "ETH/USD", 5000)
        ups = event["updates"]
        bids = [[u["price_level"], u["new_quantity"]] for u in ups if u["side"] == "bid"]
        asks = [[u["price_level"], u["new_quantity"]] for u in ups if u["side"] == "offer"]
        assert bids == truth["bids"] and asks == truth["asks"]
        assert snap["timestamp"].endswith("Z") and len(snap["timestamp"]) == 30  # nanoseconds
        assert ack["channel"] == "subscriptions" and ack["sequence_num"] == 1
        assert ack["events"] == [{"subscriptions": {"level2": ["ETH-USD"]}}]
        await ws.send_json({"type": "unsubscribe", "channel": "level2", "product_ids": ["ETH-USD"]})
        ack = await within(ws.receive_json())
        assert ack["events"] == [{"subscriptions": {}}] and ack["sequence_num"] == 2
        await ws.send_json({"type": "subscribe", "channel": "level2", "product_ids": ["DOGE-USD"]})
        err = await within(ws.receive_json())
        assert err["type"] == "error" and "Failed to subscribe" in err["message"]


# -- dislocation and reset ---------------------------------------------------------------------


@functools.cache
def initial_world() -> World:
    return World(int(SIMULATOR["seed"]))  # type: ignore[call-overload]


async def test_dislocation_moves_coinbase_and_reset_restores_initial_books(
    sim: SimulatorHarness,
) -> None:
    ex = make(sim)
    try:
        await keep_watching(ex, "BTC/USD", 0.3)
        mid0 = (await sim.abook("coinbase", "BTC/USD", 1))["mid"]
        await sim.adislocation("BTC", "coinbase", 0.01, 5.0)
        ob = ex.orderbooks["BTC/USD"]
        await wait_for(lambda: ob["bids"][0][0] > mid0 * 1.007)
        kraken = (await sim.abook("kraken", "BTC/USD", 1))["mid"]
        assert ob["bids"][0][0] > kraken * 1.005  # only Coinbase moved
    finally:
        await ex.close()
    sim.reset(frozen=True)
    for spec in markets_of("coinbase"):
        truth = sim.book("coinbase", spec.symbol, 50)
        book = initial_world().book(("coinbase", spec.symbol))
        assert truth["sequence"] == 0
        assert truth["bids"] == [[book.price_str(p), book.qty_str(q)] for p, q in book.top_bids(50)]
    assert sim.counters()["faults"] == {}
