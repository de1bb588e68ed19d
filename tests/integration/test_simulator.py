"""The exchange simulator driven by the REAL ccxt.pro client (ccxt 4.5.90), over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import ccxt
import ccxt.pro
import pytest

from exporter.simulator.endpoints import SIMULATED_MARKETS, ccxt_config
from exporter.simulator.market import World
from tests.support.simulator import SimulatorError, SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = TypeVar("T")
FEE = 0.001
WATCH_TIMEOUT = 5.0


# One simulator process for the module, reset before each test (tests/support/fixtures.py)
SIMULATOR = {"seed": 11, "rate": 20}


def make(exchange: str, base_url: str, cls: Any = None) -> Any:
    config = ccxt_config(exchange, base_url)
    if exchange == "kraken":
        config["rateLimit"] = 50  # ccxt spaces Kraken REST calls 1 s apart; keep tests quick
    klass = cls or getattr(ccxt.pro, exchange)
    return klass(config)


async def within(aw: Awaitable[T], timeout: float = WATCH_TIMEOUT) -> T:
    return await asyncio.wait_for(aw, timeout)


async def keep_watching(ex: Any, symbol: str, limit: int, seconds: float) -> int:
    """Call watch_order_book repeatedly for `seconds`; return how many updates resolved."""
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await within(ex.watch_order_book(symbol, limit))
        n += 1
    return n


def levels(side: list[list[Any]], n: int) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in side[:n]]


def kraken_crc(ob: Any, price_decimals: int, qty_decimals: int) -> int:
    """Independent Kraken v2 checksum over a client's book (floats formatted by precision)."""

    def fmt(x: float, d: int) -> str:
        return f"{x:.{d}f}".replace(".", "").lstrip("0")

    parts = [fmt(p, price_decimals) + fmt(q, qty_decimals) for p, q, *_ in ob["asks"][:10]]
    parts += [fmt(p, price_decimals) + fmt(q, qty_decimals) for p, q, *_ in ob["bids"][:10]]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


def decimals(step: float) -> int:
    return max(0, round(-math.log10(step)))


class CheckingKraken(ccxt.pro.kraken):  # type: ignore[misc]
    """Records, per book message, the server's checksum and one computed over ccxt's book."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.checks: list[tuple[str, int, int]] = []

    def handle_order_book(self, client: Any, message: Any) -> None:
        super().handle_order_book(client, message)
        first = message["data"][0]
        symbol = first["symbol"]
        market = self.market(symbol)
        ob = self.orderbooks[symbol]
        local = kraken_crc(
            ob, decimals(market["precision"]["price"]), decimals(market["precision"]["amount"])
        )
        self.checks.append((symbol, int(first["checksum"]), local))


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_ccxt_config_redirects_every_url_to_loopback(exchange: str) -> None:
    ex = getattr(ccxt.pro, exchange)(ccxt_config(exchange, "http://127.0.0.1:1234"))

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, str):
            yield node

    urls = list(walk(ex.urls["api"]))
    assert urls and all(u.split("://", 1)[1].startswith("127.0.0.1:") for u in urls), urls
    if exchange == "binance":
        assert ex.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:1234/binance/stream/ws"
        assert ex.options["fetchMarkets"]["types"] == ["spot"]
        assert ex.options["watchOrderBookLimit"] == 100
        assert ex.options["watchOrderBook"]["checksum"] is True  # ccxt default kept by the merge
    else:
        assert ex.urls["api"]["ws"]["publicV2"] == "ws://127.0.0.1:1234/kraken/v2"
        assert ex.urls["api"]["public"] == "http://127.0.0.1:1234/kraken"


def test_listening_line_control_api_and_clean_exit() -> None:
    s = SimulatorHarness(seed=5).start()
    try:
        assert s.listening["event"] == "listening" and s.port > 0
        assert s.base_url == f"http://127.0.0.1:{s.port}"
        assert s.health()["status"] == "ok"
        markets = {(m["exchange"], m["symbol"]) for m in s.get("/control/markets")["markets"]}
        assert markets == {(m.exchange, m.symbol) for m in SIMULATED_MARKETS}
        book = s.get("/control/book/kraken?market=USDT/USD&depth=5")
        assert len(book["bids"]) == 5 and 0.99 < float(book["bids"][0][0]) < 1.01
        assert s.book("binance", "BTC/USDT")["market"] == "BTC/USDT"
        with pytest.raises(SimulatorError, match="400"):
            s.fault("binance", "bad_checksum")  # Kraken-only fault
        with pytest.raises(SimulatorError, match="400"):
            s.post("/control/mode", {"mode": "warp"})
    finally:
        assert s.stop() == 0


# -- exactness ---------------------------------------------------------------------------------


async def test_binance_client_book_equals_ground_truth(sim: SimulatorHarness) -> None:
    ex = make("binance", sim.base_url)
    try:
        symbols = ["BTC/USDT", "ETH/USDT"]
        counts = await asyncio.gather(*(keep_watching(ex, s, 100, 3.0) for s in symbols))
        assert all(n > 10 for n in counts)
        frozen = await sim.afreeze()
        await asyncio.sleep(0.5)  # let in-flight diffs land
        for symbol in symbols:
            truth = await sim.abook("binance", symbol, 100)
            ob = ex.orderbooks[symbol]
            assert ob["nonce"] == truth["sequence"] == frozen["sequences"]["binance"][symbol]
            for side in ("bids", "asks"):
                mine = levels(ob[side], 100)
                n = len(mine)
                assert n >= 50  # snapshot of 100, minus net deletions near the top
                assert mine == levels(truth[side], n), (symbol, side)
        counters = await sim.acounters()
        assert counters["depth_snapshots"]["binance"] == {"BTC/USDT": 1, "ETH/USDT": 1}
        assert counters["ws_connections"]["binance"]["open"] == 2  # one socket per watch
    finally:
        await ex.close()


async def test_kraken_client_books_and_checksums_equal_ground_truth(
    sim: SimulatorHarness,
) -> None:
    ex = make("kraken", sim.base_url, CheckingKraken)
    depths = {"BTC/USD": 100, "ETH/USD": 10, "USDT/USD": 25}
    try:
        await asyncio.gather(*(keep_watching(ex, s, d, 3.0) for s, d in depths.items()))
        await sim.afreeze()
        await asyncio.sleep(0.5)
        for symbol, depth in depths.items():
            truth = await sim.abook("kraken", symbol, depth)
            ob = ex.orderbooks[symbol]
            assert levels(ob["bids"], 1000) == levels(truth["bids"], depth)
            assert levels(ob["asks"], 1000) == levels(truth["asks"], depth)
            last = [c for c in ex.checks if c[0] == symbol][-1]
            assert last[1] == last[2] == truth["checksum"]
        assert len(ex.checks) > 30
        assert all(server == local for _, server, local in ex.checks)
    finally:
        await ex.close()


# -- faults ------------------------------------------------------------------------------------


async def test_binance_sequence_gap_raises_then_rewatch_resyncs(sim: SimulatorHarness) -> None:
    ex = make("binance", sim.base_url)
    try:
        await keep_watching(ex, "BTC/USDT", 100, 1.0)
        before = (await sim.acounters())["depth_snapshots"]["binance"]["BTC/USDT"]
        await sim.afault("binance", "sequence_gap", "BTC/USDT", gap=5)
        with pytest.raises(ccxt.InvalidNonce):  # ccxt raises ChecksumError(InvalidNonce)
            await keep_watching(ex, "BTC/USDT", 100, 3.0)
        await keep_watching(ex, "BTC/USDT", 100, 1.0)
        after = (await sim.acounters())["depth_snapshots"]["binance"]["BTC/USDT"]
        assert after == before + 1
        await sim.afreeze()
        await asyncio.sleep(0.4)
        truth = await sim.abook("binance", "BTC/USDT", 100)
        ob = ex.orderbooks["BTC/USDT"]
        assert ob["nonce"] == truth["sequence"]
        n = len(ob["bids"][:100])
        assert levels(ob["bids"], n) == levels(truth["bids"], n)
    finally:
        await ex.close()


async def test_kraken_drop_update_and_bad_checksum_show_in_checksum(
    sim: SimulatorHarness,
) -> None:
    ex = make("kraken", sim.base_url, CheckingKraken)
    try:
        await keep_watching(ex, "BTC/USD", 10, 1.0)
        assert ex.checks and all(s == loc for _, s, loc in ex.checks)

        mark = len(ex.checks)
        await sim.afault("kraken", "bad_checksum", "BTC/USD")
        await keep_watching(ex, "BTC/USD", 10, 1.0)
        bad = [c for c in ex.checks[mark:] if c[1] != c[2]]
        assert len(bad) == 1  # exactly one message carried a wrong checksum, book still right

        # The first update after a drop mismatches, unless that step rewrote every level the
        # dropped one changed (it heals: ~5 % of drops at depth 10), so drop until one shows.
        # Frozen while marking: an update sent before the fault landed is not the first after.
        drops = 0
        while True:
            await sim.afreeze()
            await asyncio.sleep(0.3)  # in-flight updates land before the mark
            mark = len(ex.checks)
            await sim.afault("kraken", "drop_update", "BTC/USD")
            drops += 1
            await sim.aunfreeze()
            await keep_watching(ex, "BTC/USD", 10, 1.0)
            after = ex.checks[mark:]
            assert after
            if after[0][1] != after[0][2]:  # first update after the drop mismatches
                break
            assert drops < 5, "5 drops in a row healed at the next update"
        counters = await sim.acounters()
        assert counters["faults"]["kraken"]["drop_update_applied"] == drops
    finally:
        await ex.close()


async def test_close_and_abort_raise_network_error_and_reconnect(sim: SimulatorHarness) -> None:
    b = make("binance", sim.base_url)
    k = make("kraken", sim.base_url)
    try:
        await keep_watching(b, "BTC/USDT", 100, 0.5)
        await keep_watching(k, "ETH/USD", 10, 0.5)
        # A close only surfaces through a pending watch (with none pending, ccxt's next watch
        # silently opens a new socket), so keep one watching while the fault lands.
        watching = asyncio.ensure_future(keep_watching(b, "BTC/USDT", 100, 3.0))
        await asyncio.sleep(0.2)
        await sim.afault("binance", "close")
        with pytest.raises(ccxt.NetworkError):
            await watching
        watching = asyncio.ensure_future(keep_watching(k, "ETH/USD", 10, 3.0))
        await asyncio.sleep(0.2)
        await sim.afault("kraken", "abort", "ETH/USD")
        with pytest.raises(ccxt.NetworkError):
            await watching
        assert await keep_watching(b, "BTC/USDT", 100, 0.5) > 0  # next watch reconnects
        assert await keep_watching(k, "ETH/USD", 10, 0.5) > 0
        ws = (await sim.acounters())["ws_connections"]
        assert ws["binance"]["opened"] == 2 and ws["kraken"]["opened"] == 2
    finally:
        await b.close()
        await k.close()


async def test_malformed_frame_kills_ccxt_receive_loop(sim: SimulatorHarness) -> None:
    ex = make("binance", sim.base_url)
    try:
        await keep_watching(ex, "SOL/USDT", 100, 0.5)
        res = await sim.afault("binance", "malformed_frame", "SOL/USDT")
        assert res["affected"] == 1
        with pytest.raises(TimeoutError):  # ccxt swallows the crash; only a timeout notices
            await within(ex.watch_order_book("SOL/USDT", 100), 1.5)
    finally:
        await ex.close()
    ex = make("binance", sim.base_url)  # a fresh client recovers
    try:
        assert await keep_watching(ex, "SOL/USDT", 100, 0.5) > 0
    finally:
        await ex.close()


async def test_rest_error_maps_to_ccxt_rate_limit_errors(sim: SimulatorHarness) -> None:
    b = make("binance", sim.base_url)
    k = make("kraken", sim.base_url)
    try:
        await b.load_markets()
        await k.load_markets()
        await sim.afault("binance", "rest_error", endpoint="depth", status=429, retry_after=1)
        with pytest.raises(ccxt.DDoSProtection):  # ccxt's binance maps 418/429 here
            await b.fetch_order_book("BTC/USDT", 5)
        assert len((await b.fetch_order_book("BTC/USDT", 5))["bids"]) == 5  # count=1 used up
        await sim.afault("kraken", "rest_error", endpoint="Depth", status=429, count=2)
        for _ in range(2):  # Kraken's "EGeneral:Too many requests" -> DDoSProtection in ccxt
            with pytest.raises(ccxt.DDoSProtection):
                await k.fetch_order_book("BTC/USD", 5)
        ob = await k.fetch_order_book("BTC/USD", 5)
        truth = await sim.abook("kraken", "BTC/USD", 5)
        assert abs(ob["bids"][0][0] - float(truth["bids"][0][0])) < 100
        injected = (await sim.acounters())["rest_errors_injected"]
        assert injected == {"binance": {"depth": 1}, "kraken": {"Depth": 2}}
    finally:
        await b.close()
        await k.close()


async def test_stall_and_market_stop_silence_one_stream(sim: SimulatorHarness) -> None:
    ex = make("binance", sim.base_url)
    try:
        await asyncio.gather(
            keep_watching(ex, "BTC/USDT", 100, 0.5), keep_watching(ex, "ETH/USDT", 100, 0.5)
        )
        await sim.afault("binance", "stall", "BTC/USDT", seconds=1.5)
        with pytest.raises(TimeoutError):
            await within(ex.watch_order_book("BTC/USDT", 100), 1.0)
        assert await keep_watching(ex, "ETH/USDT", 100, 0.3) > 0  # other market unaffected
        await asyncio.sleep(0.5)
        assert await keep_watching(ex, "BTC/USDT", 100, 0.5) > 0  # resumes, no gap error

        await sim.arequest(
            "POST", "/control/market/stop", {"exchange": "binance", "market": "ETH/USDT"}
        )
        sent = (await sim.acounters())["messages_sent"]["binance"]["ETH/USDT"]
        await asyncio.sleep(0.5)
        assert (await sim.acounters())["messages_sent"]["binance"]["ETH/USDT"] == sent
        await sim.arequest(
            "POST", "/control/market/start", {"exchange": "binance", "market": "ETH/USDT"}
        )
        assert await keep_watching(ex, "ETH/USDT", 100, 0.5) > 0
    finally:
        await ex.close()


async def test_fixed_rate_and_firehose_modes(sim: SimulatorHarness) -> None:
    ex = make("binance", sim.base_url)
    try:
        await sim.arequest("POST", "/control/mode", {"mode": "fixed_rate", "rate": 40})
        await keep_watching(ex, "BTC/USDT", 100, 0.3)
        c0 = await sim.acounters()
        t0 = time.monotonic()
        await keep_watching(ex, "BTC/USDT", 100, 2.0)
        c1 = await sim.acounters()
        rate = (
            c1["book_steps"]["binance"]["BTC/USDT"] - c0["book_steps"]["binance"]["BTC/USDT"]
        ) / (time.monotonic() - t0)
        assert 32 <= rate <= 48, rate
        assert c1["send_lag_seconds"]["max"] < 0.5
        await sim.arequest("POST", "/control/mode", {"mode": "firehose"})
        got = await keep_watching(ex, "BTC/USDT", 100, 1.0)
        c2 = await sim.acounters()
        sent = (
            c2["messages_sent"]["binance"]["BTC/USDT"] - c1["messages_sent"]["binance"]["BTC/USDT"]
        )
        assert sent > 400, sent  # far above the fixed 40/s
        assert got > 40
        await sim.arequest("POST", "/control/mode", {"mode": "random", "rate": 20})
    finally:
        await ex.close()


# -- arbitrage ---------------------------------------------------------------------------------


def net_profit(buy_asks: list[Any], buy_rate: float, sell_bids: list[Any], usd: float) -> float:
    """Buy `usd` worth on the ask side (price*rate = USD), sell the base into the bids."""
    base, left = 0.0, usd
    for p, q, *_ in buy_asks:
        cost = p * buy_rate * q
        if cost >= left:
            base += left / (p * buy_rate)
            left = 0.0
            break
        base += q
        left -= cost
    if left > 0:
        return float("-inf")
    base *= 1 - FEE
    proceeds = 0.0
    for p, q, *_ in sell_bids:
        take = min(q, base)
        proceeds += take * p
        base -= take
        if base <= 0:
            break
    if base > 0:
        return float("-inf")
    return proceeds * (1 - FEE) - usd


async def test_dislocation_opens_then_closes_an_arbitrage(sim: SimulatorHarness) -> None:
    b = make("binance", sim.base_url)
    k = make("kraken", sim.base_url)
    stop = asyncio.Event()

    async def pump(ex: Any, symbol: str, limit: int) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await within(ex.watch_order_book(symbol, limit), 1.0)

    def profit(usd: float) -> float:
        bb, kk, usdt = b.orderbooks["BTC/USDT"], k.orderbooks["BTC/USD"], k.orderbooks["USDT/USD"]
        rate = (usdt["bids"][0][0] + usdt["asks"][0][0]) / 2
        return net_profit(list(bb["asks"]), rate, list(kk["bids"]), usd)

    async def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            await asyncio.sleep(0.05)
        return False

    tasks = [
        asyncio.create_task(pump(b, "BTC/USDT", 100)),
        asyncio.create_task(pump(k, "BTC/USD", 100)),
        asyncio.create_task(pump(k, "USDT/USD", 10)),
    ]
    try:
        ready = await wait_for(
            lambda: (
                all(s in b.orderbooks for s in ["BTC/USDT"])
                and all(s in k.orderbooks for s in ["BTC/USD", "USDT/USD"])
            ),
            5.0,
        )
        assert ready
        await asyncio.sleep(0.5)
        assert profit(5000) < 0  # fees eat the normal cross-venue noise
        await sim.adislocation("BTC/USD", "kraken", 0.004, 2.0)
        assert await wait_for(lambda: profit(1000) > 0 and profit(5000) > 0, 1.5)
        kb, ba = k.orderbooks["BTC/USD"]["bids"][0][0], b.orderbooks["BTC/USDT"]["asks"][0][0]
        assert kb > ba  # Kraken bid above Binance ask (USDT ~ USD)
        assert await wait_for(lambda: profit(1000) < 0, 4.0)  # the window closes
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        await k.close()


# -- raw wire protocol -------------------------------------------------------------------------


async def test_raw_protocol_acks_pings_and_heartbeats_while_frozen(sim: SimulatorHarness) -> None:
    ws_base = sim.base_url.replace("http://", "ws://")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_base + "/binance/stream/ws/7") as ws:
            for rid, stream in [(1, "btcusdt@depth@100ms"), (2, "ethusdt@depth")]:
                await ws.send_json({"method": "SUBSCRIBE", "params": [stream], "id": rid})
            acks, symbols = [], set()
            while len(acks) < 2 or len(symbols) < 2:
                msg = await within(ws.receive_json())
                if "id" in msg:
                    acks.append(msg)
                else:
                    assert msg["e"] == "depthUpdate" and msg["u"] >= msg["U"]
                    symbols.add(msg["s"])
            assert acks == [{"result": None, "id": 1}, {"result": None, "id": 2}]
            await ws.send_json({"method": "UNSUBSCRIBE", "params": ["ethusdt@depth"], "id": 3})
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
            replies: dict[int, Any] = {}
            while 4 not in replies:
                msg = await within(ws.receive_json())
                if "id" in msg:
                    replies[msg["id"]] = msg
            assert replies[3] == {"result": None, "id": 3}
            assert replies[4]["result"] == ["btcusdt@depth@100ms"]

        await sim.afreeze()
        async with session.ws_connect(ws_base + "/kraken/v2") as ws:
            sub = {"channel": "book", "symbol": ["SOL/USD"], "depth": 25}
            await ws.send_json({"method": "subscribe", "params": sub, "req_id": 9})
            await ws.send_json({"method": "ping", "req_id": 10})
            seen: dict[str, Any] = {}
            while not {"ack", "snapshot", "pong", "heartbeat"} <= seen.keys():
                msg = await within(ws.receive_json(), 3.0)
                if msg.get("method") == "subscribe":
                    seen["ack"] = msg
                elif msg.get("method") == "pong":
                    seen["pong"] = msg
                elif msg.get("channel") == "heartbeat":
                    seen["heartbeat"] = msg
                elif msg.get("channel") == "book":
                    assert msg["type"] == "snapshot", "no book updates while frozen"
                    seen["snapshot"] = msg
            assert seen["ack"]["success"] is True and seen["ack"]["result"]["depth"] == 25
            assert seen["pong"]["req_id"] == 10
            data = seen["snapshot"]["data"][0]
            assert len(data["bids"]) == len(data["asks"]) == 25
            truth = await sim.abook("kraken", "SOL/USD", 25)
            assert data["checksum"] == truth["checksum"]
            assert [[f"{lv['price']:.2f}", f"{lv['qty']:.8f}"] for lv in data["bids"]] == truth[
                "bids"
            ]


# -- reset -------------------------------------------------------------------------------------


@functools.cache
def initial_world() -> World:
    """What a freshly started simulator with the module's seed serves (built in-process)."""
    return World(SIMULATOR["seed"])


def initial_book(exchange: str, market: str, depth: int) -> dict[str, list[list[str]]]:
    book = initial_world().book((exchange, market))
    return {
        "bids": [[book.price_str(p), book.qty_str(q)] for p, q in book.top_bids(depth)],
        "asks": [[book.price_str(p), book.qty_str(q)] for p, q in book.top_asks(depth)],
    }


async def test_reset_restores_every_kind_of_state(sim: SimulatorHarness) -> None:
    keys = [(m.exchange, m.symbol) for m in SIMULATED_MARKETS]
    # Change every kind of state: sockets and subscriptions, books and sequences, faults
    # (pending and lasting), a dislocation, mode and rate, the freeze, the counters.
    b = make("binance", sim.base_url)
    k = make("kraken", sim.base_url, CheckingKraken)
    try:
        await keep_watching(b, "BTC/USDT", 100, 0.5)
        await keep_watching(k, "ETH/USD", 10, 0.5)
        sim.fault("binance", "sequence_gap", "BTC/USDT", gap=1000)
        sim.fault("binance", "stall", "ETH/USDT", seconds=60)
        sim.market_stop("binance", "SOL/USDT")
        sim.fault("binance", "frozen", "BTC/USDT", seconds=60)
        sim.fault("binance", "rest_error", endpoint="depth", count=5)
        sim.fault("kraken", "bad_checksum", "BTC/USD")  # pending: nobody watches BTC/USD
        sim.fault("kraken", "drop_update", "SOL/USD")  # pending likewise
        sim.dislocation("BTC", "kraken", 0.1, 60)
        sim.mode("fixed_rate", 7)
        sim.freeze()
        markets = sim.get("/control/markets")
        assert {(m["exchange"], m["symbol"]) for m in markets["markets"] if m["stopped"]} == {
            ("binance", "SOL/USDT")
        }
        assert {(m["exchange"], m["symbol"]) for m in markets["markets"] if m["stalled"]} == {
            ("binance", "ETH/USDT")
        }
        assert markets["dislocations"] and all(m["sequence"] > 0 for m in markets["markets"])
        before = sim.counters()
        assert before["frozen"] and (before["mode"], before["rate"]) == ("fixed_rate", 7)
        assert before["ticks"] > 0 and before["faults"]["binance"]["rest_error"] == 1
        assert before["ws_connections"]["binance"]["open"] >= 1

        reset = sim.reset(frozen=True)  # frozen: the initial books stay readable
        assert reset["closed"] >= 2  # the Binance and the Kraken socket
        assert all(seq == 0 for seqs in reset["sequences"].values() for seq in seqs.values())
        for ex, market in keys:
            truth = sim.book(ex, market, depth=50)
            assert truth["sequence"] == 0
            assert {s: truth[s] for s in ("bids", "asks")} == initial_book(ex, market, 50)
        markets = sim.get("/control/markets")
        assert not any(m["stopped"] or m["stalled"] for m in markets["markets"])
        assert markets["dislocations"] == []
        after = sim.counters()
        assert after["frozen"] and (after["mode"], after["rate"]) == ("random", 20)
        for name in ("rest_requests", "depth_snapshots", "rest_errors_injected", "faults",
                     "subscribe_requests", "unsubscribe_requests", "messages_sent",
                     "book_steps", "pings", "ws_connections"):  # fmt: skip
            assert after[name] == {}, name
        assert after["ticks"] == after["engine_errors"] == 0
        lag = after["send_lag_seconds"]  # the schedule runs while frozen; ticks do not
        assert lag["mean"] == lag["resets"] == 0
        assert sim.health()["frozen"] is True
    finally:
        await b.close()
        await k.close()

    # The pending and lasting faults are gone, not merely hidden by the freeze.
    sim.unfreeze()
    b = make("binance", sim.base_url)
    k = make("kraken", sim.base_url, CheckingKraken)
    try:
        await b.load_markets()
        assert len((await b.fetch_order_book("BTC/USDT", 5))["bids"]) == 5  # no REST error
        watched = await asyncio.gather(
            *(keep_watching(b, s, 100, 1.5) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")),
            *(keep_watching(k, s, 10, 1.5) for s in ("BTC/USD", "SOL/USD")),
        )  # no sequence gap raised; stalled, stopped and frozen markets move again
        assert all(n > 3 for n in watched), watched
        assert k.checks and all(server == local for _, server, local in k.checks)
        c = sim.counters()
        assert c["rest_errors_injected"] == {} and "drop_update_applied" not in str(c["faults"])
        steps = c["book_steps"]["binance"]
        assert all(steps[s] > 3 for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")), steps
        await sim.afreeze()
        truth = await sim.abook("binance", "BTC/USDT", 10)
        assert truth["bids"] != initial_book("binance", "BTC/USDT", 10)["bids"]  # not frozen
    finally:
        await b.close()
        await k.close()
