"""The simulated Bybit v5 and OKX v5 spot venues driven by the REAL ccxt.pro clients (4.5.90)."""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import ccxt
import ccxt.pro
import pytest

from exporter.simulator.endpoints import ccxt_config
from tests.support.simulator import SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = TypeVar("T")
SIMULATOR = {"seed": 13, "rate": 20}
WATCH_TIMEOUT = 5.0


def make(exchange: str, base_url: str, cls: Any = None) -> Any:
    return (cls or getattr(ccxt.pro, exchange))(ccxt_config(exchange, base_url))


async def within(aw: Awaitable[T], timeout: float = WATCH_TIMEOUT) -> T:
    return await asyncio.wait_for(aw, timeout)


async def keep_watching(ex: Any, symbol: str, limit: int | None, seconds: float) -> int:
    """Call watch_order_book repeatedly for `seconds`; return how many updates resolved."""
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await within(ex.watch_order_book(symbol, limit))
        n += 1
    return n


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def levels(side: list[list[Any]], n: int) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in side[:n]]


async def settle(sim: SimulatorHarness) -> None:
    """Freeze, then wait until the sockets drained what was queued before the freeze."""
    await sim.afreeze()
    await asyncio.sleep(0.3)


async def same_as_truth(sim: SimulatorHarness, ex: Any, exchange: str, symbol: str, n: int) -> bool:
    truth = await sim.abook(exchange, symbol, n)
    ob = ex.orderbooks[symbol]
    return all(levels(ob[s], n) == levels(truth[s], n) for s in ("bids", "asks"))


def okx_crc(ob: Any) -> int:
    """OKX's checksum recomputed over a client's book (ccxt keeps floats; print them back)."""

    def fmt(x: float) -> str:
        s = f"{x:.10f}".rstrip("0").rstrip(".")
        return s

    bids, asks = ob["bids"][:25], ob["asks"][:25]
    parts = []
    for i in range(25):
        if i < len(bids):
            parts.append(f"{fmt(bids[i][0])}:{fmt(bids[i][1])}")
        if i < len(asks):
            parts.append(f"{fmt(asks[i][0])}:{fmt(asks[i][1])}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class CheckingOkx(ccxt.pro.okx):  # type: ignore[misc]
    """Records, per ``books`` message, the server's checksum and one over ccxt's book."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.checks: list[tuple[str, int, int]] = []

    def handle_order_book(self, client: Any, message: Any) -> Any:
        out = super().handle_order_book(client, message)
        arg = message.get("arg", {})
        if arg.get("channel") == "books":
            symbol = self.safe_symbol(arg["instId"])
            if symbol in self.orderbooks:
                checksum = int(message["data"][0]["checksum"])
                self.checks.append((symbol, checksum, okx_crc(self.orderbooks[symbol])))
        return out


class RecordingBybit(ccxt.pro.bybit):  # type: ignore[misc]
    """Records (symbol, type, u, seq) of every order book message."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.seen: list[tuple[str, str, int, int]] = []

    def handle_order_book(self, client: Any, message: Any) -> None:
        data = message["data"]
        self.seen.append((data["s"], message["type"], int(data["u"]), int(data["seq"])))
        super().handle_order_book(client, message)


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
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
    assert ex.options["fetchMarkets"]["types"] == ["spot"]
    if exchange == "bybit":
        assert ex.urls["api"]["ws"]["public"]["spot"] == "ws://127.0.0.1:1234/bybit/v5/public/spot"
    else:
        assert ex.get_url("books") == "ws://127.0.0.1:1234/okx/ws/v5/public"


# -- markets and exactness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "endpoint"), [("bybit", "instruments-info"), ("okx", "instruments")]
)
async def test_load_markets_is_one_rest_call(
    sim: SimulatorHarness, exchange: str, endpoint: str
) -> None:
    ex = make(exchange, sim.base_url)
    try:
        markets = await ex.load_markets()
        assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
        counters = await sim.acounters()
        assert counters["rest_requests"] == {exchange: {endpoint: 1}}
        btc = markets["BTC/USDT"]
        assert btc["spot"] and btc["active"]
        if exchange == "bybit":
            assert btc["id"] == "BTCUSDT" and btc["taker"] == 0.001
            assert btc["precision"] == {"amount": 0.000001, "price": 0.01}
            assert btc["limits"]["amount"]["min"] == 0.000048
            assert btc["limits"]["cost"]["min"] == 1
        else:
            assert btc["id"] == "BTC-USDT" and btc["taker"] == 0.0015
            assert btc["precision"] == {"amount": 1e-8, "price": 0.1}
            assert btc["limits"]["amount"]["min"] == 0.00001
    finally:
        await ex.close()


async def test_bybit_client_books_equal_ground_truth(sim: SimulatorHarness) -> None:
    ex = make("bybit", sim.base_url, RecordingBybit)
    depths = {"BTC/USDT": 50, "ETH/USDT": 1000, "SOL/USDT": 1}
    try:
        counts = await asyncio.gather(*(keep_watching(ex, s, d, 2.0) for s, d in depths.items()))
        assert all(n > 5 for n in counts), counts
        await settle(sim)
        for symbol, depth in depths.items():
            truth = await sim.abook("bybit", symbol, depth)
            ob = ex.orderbooks[symbol]
            assert len(ob["bids"]) == len(ob["asks"]) == depth  # kept at depth by the server
            assert levels(ob["bids"], depth) == levels(truth["bids"], depth), symbol
            assert levels(ob["asks"], depth) == levels(truth["asks"], depth), symbol
            last = [m for m in ex.seen if m[0] == ex.market_id(symbol)][-1]
            assert last[2] == truth["u"][str(depth)]
            assert last[3] <= truth["seq"]
        for market_id in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            us = [m[2] for m in ex.seen if m[0] == market_id]
            assert us == list(range(1, len(us) + 1)), market_id  # contiguous u, no faults
        counters = await sim.acounters()
        assert counters["rest_requests"] == {"bybit": {"instruments-info": 1}}
        assert counters["ws_connections"]["bybit"]["open"] == 1  # ccxt: one spot socket
    finally:
        await ex.close()


async def test_okx_client_books_and_checksums_equal_ground_truth(sim: SimulatorHarness) -> None:
    ex = make("okx", sim.base_url, CheckingOkx)
    depths: dict[str, int | None] = {"BTC/USDT": None, "ETH/USDT": 5, "SOL/USDT": 1}
    try:
        await asyncio.gather(*(keep_watching(ex, s, d, 2.0) for s, d in depths.items()))
        await settle(sim)
        for symbol, limit in depths.items():
            n = limit or 400
            truth = await sim.abook("okx", symbol, n)
            ob = ex.orderbooks[symbol]
            assert len(ob["bids"]) == n
            assert levels(ob["bids"], n) == levels(truth["bids"], n), symbol
            assert levels(ob["asks"], n) == levels(truth["asks"], n), symbol
        truth = await sim.abook("okx", "BTC/USDT", 25)
        assert ex.orderbooks["BTC/USDT"]["nonce"] == truth["seqId"] == truth["sequence"]
        assert okx_crc(ex.orderbooks["BTC/USDT"]) == truth["checksum"]
        assert len(ex.checks) > 10
        assert all(server == local for _, server, local in ex.checks)
        counters = await sim.acounters()
        assert counters["rest_requests"] == {"okx": {"instruments": 1}}
    finally:
        await ex.close()


# -- faults common to both venues --------------------------------------------------------------

LIMIT = {"bybit": 50, "okx": None}
VENUES = ["bybit", "okx"]


@pytest.mark.parametrize("exchange", VENUES)
@pytest.mark.parametrize("kind", ["close", "abort"])
async def test_close_and_abort_raise_network_error_then_reconnect(
    sim: SimulatorHarness, exchange: str, kind: str
) -> None:
    ex = make(exchange, sim.base_url)
    try:
        await keep_watching(ex, "BTC/USDT", LIMIT[exchange], 0.3)
        # The market is stalled first, so the watch is pending when the socket goes: between
        # two watches ccxt would reopen a lost socket without raising (a race under load).
        await sim.afault(exchange, "stall", "BTC/USDT", seconds=1.5)
        await asyncio.sleep(0.2)
        watching = asyncio.ensure_future(ex.watch_order_book("BTC/USDT", LIMIT[exchange]))
        await asyncio.sleep(0.2)
        assert not watching.done()
        assert (await sim.afault(exchange, kind, "BTC/USDT"))["affected"] == 1
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(watching, 3.0)
        await asyncio.sleep(1.2)  # the stall is over
        assert await keep_watching(ex, "BTC/USDT", LIMIT[exchange], 0.3) > 0
        assert (await sim.acounters())["ws_connections"][exchange]["opened"] == 2
    finally:
        await ex.close()


@pytest.mark.parametrize("exchange", VENUES)
async def test_stall_silences_one_market_then_it_resumes(
    sim: SimulatorHarness, exchange: str
) -> None:
    ex = make(exchange, sim.base_url)
    limit = LIMIT[exchange]
    try:
        await asyncio.gather(
            keep_watching(ex, "BTC/USDT", limit, 0.3), keep_watching(ex, "ETH/USDT", limit, 0.3)
        )
        await sim.afault(exchange, "stall", "BTC/USDT", seconds=1.2)
        with pytest.raises(TimeoutError):
            await within(ex.watch_order_book("BTC/USDT", limit), 0.8)
        assert await keep_watching(ex, "ETH/USDT", limit, 0.2) > 0  # other market unaffected
        assert await keep_watching(ex, "BTC/USDT", limit, 1.0) > 0  # resumes, no nonce error
    finally:
        await ex.close()


@pytest.mark.parametrize("exchange", VENUES)
async def test_crossed_book_reaches_the_client(sim: SimulatorHarness, exchange: str) -> None:
    ex = make(exchange, sim.base_url)
    try:
        await keep_watching(ex, "SOL/USDT", LIMIT[exchange], 0.3)
        await sim.afault(exchange, "crossed", "SOL/USDT", seconds=1.0)
        ob = ex.orderbooks["SOL/USDT"]  # ccxt's receive loop applies it; no watch needed

        async def crossed() -> bool:
            return bool(ob["bids"][0][0] > ob["asks"][0][0])

        await wait_for(crossed, 1.0)
        truth = await sim.abook(exchange, "SOL/USDT", 5)
        assert float(truth["bids"][0][0]) > float(truth["asks"][0][0])
        assert ob["bids"][0][0] == float(truth["bids"][0][0])
    finally:
        await ex.close()


@pytest.mark.parametrize("exchange", VENUES)
async def test_malformed_frame_kills_ccxt_receive_loop(
    sim: SimulatorHarness, exchange: str
) -> None:
    ex = make(exchange, sim.base_url)
    try:
        await keep_watching(ex, "ETH/USDT", LIMIT[exchange], 0.3)
        res = await sim.afault(exchange, "malformed_frame", "ETH/USDT")
        assert res["affected"] == 1
        with pytest.raises(TimeoutError):  # the receive loop died; only a timeout notices
            for _ in range(3):  # at most an update or two queued before the bad frame
                await within(ex.watch_order_book("ETH/USDT", LIMIT[exchange]), 1.0)
    finally:
        await ex.close()


@pytest.mark.parametrize(
    ("exchange", "endpoint"), [("bybit", "instruments-info"), ("okx", "instruments")]
)
async def test_rest_error_maps_to_ccxt_errors(
    sim: SimulatorHarness, exchange: str, endpoint: str
) -> None:
    ex = make(exchange, sim.base_url)
    try:
        await sim.afault(exchange, "rest_error", endpoint=endpoint, status=429, retry_after=1)
        with pytest.raises(ccxt.RateLimitExceeded):
            await ex.load_markets()
        await sim.afault(exchange, "rest_error", endpoint="*", status=503)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.load_markets(reload=True)
        assert sorted(await ex.load_markets(reload=True)) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
        counters = await sim.acounters()
        assert counters["rest_errors_injected"] == {exchange: {endpoint: 2}}
        assert counters["rest_requests"] == {exchange: {endpoint: 3}}
    finally:
        await ex.close()


@pytest.mark.parametrize("exchange", VENUES)
async def test_dislocation_moves_one_venue(sim: SimulatorHarness, exchange: str) -> None:
    ex = make(exchange, sim.base_url)
    try:
        ob = await within(ex.watch_order_book("BTC/USDT", LIMIT[exchange]))
        before = ob["bids"][0][0]
        await sim.adislocation("BTC", exchange, 0.01, 5.0)
        deadline = time.monotonic() + 3.0
        while ob["bids"][0][0] < before * 1.005:
            assert time.monotonic() < deadline, (before, ob["bids"][0][0])
            ob = await within(ex.watch_order_book("BTC/USDT", LIMIT[exchange]))
        other = "okx" if exchange == "bybit" else "bybit"
        assert float((await sim.abook(other, "BTC/USDT", 1))["bids"][0][0]) < before * 1.005
    finally:
        await ex.close()


# -- Bybit faults ------------------------------------------------------------------------------


def u_steps(ex: RecordingBybit, market_id: str) -> list[int]:
    us = [u for s, kind, u, _ in ex.seen if s == market_id and kind == "delta"]
    return [b - a for a, b in itertools.pairwise(us)]


async def test_bybit_drop_update_leaves_ccxt_book_silently_wrong(sim: SimulatorHarness) -> None:
    ex = make("bybit", sim.base_url, RecordingBybit)
    try:
        await keep_watching(ex, "BTC/USDT", 50, 0.5)
        # The dropped delta's content can be rewritten by the steps that land before the freeze
        # (rarely: every level it changed changes again), so drop until the hole shows.
        for attempt in range(5):
            applied = attempt + 1
            await sim.afault("bybit", "drop_update", "BTC/USDT")

            async def dropped(n: int = applied) -> bool:
                faults = (await sim.acounters())["faults"]["bybit"]
                return faults.get("drop_update_applied", 0) >= n

            await wait_for(dropped)
            await settle(sim)
            if not await same_as_truth(sim, ex, "bybit", "BTC/USDT", 50):
                break
            await sim.aunfreeze()
            await keep_watching(ex, "BTC/USDT", 50, 0.3)
        else:
            pytest.fail("5 drops in a row were healed before the freeze")
        assert len(ex.orderbooks["BTC/USDT"]["bids"]) == 50
        await sim.aunfreeze()  # no error; nothing for ccxt to notice but the u jump
        await keep_watching(ex, "BTC/USDT", 50, 0.3)
        assert 2 in u_steps(ex, "BTCUSDT")  # one delta missing: u jumped by 2
    finally:
        await ex.close()


async def test_bybit_sequence_gap_jumps_u_without_losing_content(sim: SimulatorHarness) -> None:
    ex = make("bybit", sim.base_url, RecordingBybit)
    try:
        await keep_watching(ex, "ETH/USDT", 50, 0.5)
        await sim.afault("bybit", "sequence_gap", "ETH/USDT", gap=7)
        await keep_watching(ex, "ETH/USDT", 50, 0.5)
        steps = u_steps(ex, "ETHUSDT")
        assert steps.count(8) == 1 and set(steps) == {1, 8}
        await settle(sim)
        assert await same_as_truth(sim, ex, "bybit", "ETH/USDT", 50)
        truth = await sim.abook("bybit", "ETH/USDT", 1)
        assert truth["u"]["50"] == [u for s, _, u, _ in ex.seen if s == "ETHUSDT"][-1]
    finally:
        await ex.close()


async def test_bybit_frozen_goes_quiet_and_ping_pong(sim: SimulatorHarness) -> None:
    ex = make("bybit", sim.base_url)
    try:
        await keep_watching(ex, "SOL/USDT", 50, 0.3)
        await sim.afault("bybit", "frozen", "SOL/USDT", seconds=1.5)
        await asyncio.sleep(0.1)  # let queued deltas land
        sent = (await sim.acounters())["messages_sent"]["bybit"]["SOL/USDT"]
        with pytest.raises(TimeoutError):  # steps change nothing, so Bybit sends nothing
            await within(ex.watch_order_book("SOL/USDT", 50), 1.0)
        c = await sim.acounters()
        assert c["messages_sent"]["bybit"]["SOL/USDT"] == sent
        assert c["book_steps"]["bybit"]["SOL/USDT"] > 0
    finally:
        await ex.close()
    ws_url = sim.base_url.replace("http://", "ws://") + "/bybit/v5/public/spot"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_json({"op": "ping", "req_id": "7"})
        pong = await within(ws.receive_json())
        assert pong["ret_msg"] == "pong" and pong["req_id"] == "7" and pong["success"]
        await ws.send_json({"op": "subscribe", "req_id": "8", "args": ["orderbook.7.BTCUSDT"]})
        bad = await within(ws.receive_json())
        assert bad["success"] is False and bad["req_id"] == "8"


# -- OKX faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sequence_gap", "drop_update"])
async def test_okx_sequence_faults_raise_invalid_nonce_then_resync(
    sim: SimulatorHarness, kind: str
) -> None:
    ex = make("okx", sim.base_url)
    try:
        await keep_watching(ex, "BTC/USDT", None, 0.5)
        await sim.afault("okx", kind, "BTC/USDT")
        with pytest.raises(ccxt.InvalidNonce):
            await keep_watching(ex, "BTC/USDT", None, 3.0)
        assert await keep_watching(ex, "BTC/USDT", None, 0.5) > 0  # unsubscribe + subscribe
        await settle(sim)
        assert await same_as_truth(sim, ex, "okx", "BTC/USDT", 400)
        c = await sim.acounters()
        assert c["unsubscribe_requests"]["okx"]["BTC/USDT"] == 1
        assert c["depth_snapshots"]["okx"]["BTC/USDT"] == 2
    finally:
        await ex.close()


async def test_okx_bad_checksum_is_one_wrong_checksum_on_a_right_book(
    sim: SimulatorHarness,
) -> None:
    ex = make("okx", sim.base_url, CheckingOkx)
    try:
        await keep_watching(ex, "ETH/USDT", None, 0.5)
        mark = len(ex.checks)
        await sim.afault("okx", "bad_checksum", "ETH/USDT")
        await keep_watching(ex, "ETH/USDT", None, 0.8)  # ccxt never verifies: no error
        bad = [c for c in ex.checks[mark:] if c[1] != c[2]]
        assert len(bad) == 1
        await settle(sim)
        assert await same_as_truth(sim, ex, "okx", "ETH/USDT", 400)
    finally:
        await ex.close()


async def test_okx_corrupt_level_leaves_ccxt_book_silently_wrong(sim: SimulatorHarness) -> None:
    ex = make("okx", sim.base_url, CheckingOkx)
    try:
        await keep_watching(ex, "BTC/USDT", None, 0.5)
        for _ in range(5):  # a later step may rewrite the corrupted level before the freeze
            mark = len(ex.checks)
            await sim.afault("okx", "corrupt_level", "BTC/USDT")
            while not any(c[1] != c[2] for c in ex.checks[mark:]):
                await within(ex.watch_order_book("BTC/USDT"))  # ccxt raises nothing
            await settle(sim)
            truth = await sim.abook("okx", "BTC/USDT", 400)
            assert ex.orderbooks["BTC/USDT"]["nonce"] == truth["seqId"]  # sequence intact
            if not await same_as_truth(sim, ex, "okx", "BTC/USDT", 400):
                break
            await sim.aunfreeze()
        else:
            pytest.fail("5 corrupted levels in a row were rewritten before the freeze")
        assert okx_crc(ex.orderbooks["BTC/USDT"]) != truth["checksum"]
    finally:
        await ex.close()


async def test_okx_frozen_sends_keepalives_and_ping_pong(sim: SimulatorHarness) -> None:
    ex = make("okx", sim.base_url)
    try:
        await keep_watching(ex, "SOL/USDT", None, 0.3)
        await sim.afault("okx", "frozen", "SOL/USDT", seconds=2.0)
        await asyncio.sleep(0.2)
        ob = await within(ex.watch_order_book("SOL/USDT"))
        nonce, bids = ob["nonce"], levels(ob["bids"], 400)
        assert await keep_watching(ex, "SOL/USDT", None, 0.8) > 3  # keep-alives resolve
        ob = ex.orderbooks["SOL/USDT"]
        assert ob["nonce"] == nonce and levels(ob["bids"], 400) == bids  # nothing changed
    finally:
        await ex.close()
    ws_url = sim.base_url.replace("http://", "ws://") + "/okx/ws/v5/public"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_str("ping")
        assert await within(ws.receive_str()) == "pong"
        arg = {"channel": "books50-l2-tbt", "instId": "BTC-USDT"}
        await ws.send_json({"op": "subscribe", "args": [arg]})
        err = await within(ws.receive_json())
        assert (err["event"], err["code"]) == ("error", "60011")


async def test_reset_forgets_venue_state(sim: SimulatorHarness) -> None:
    b = make("bybit", sim.base_url)
    o = make("okx", sim.base_url)
    try:
        await keep_watching(b, "BTC/USDT", 50, 0.3)
        await keep_watching(o, "BTC/USDT", None, 0.3)
        await sim.afault("okx", "corrupt_level", "ETH/USDT")  # pending: nobody watches ETH
        await sim.afault("okx", "bad_checksum", "ETH/USDT")
        assert (await sim.abook("bybit", "BTC/USDT", 1))["u"]["50"] > 1
        reset = sim.reset(frozen=True)
        assert reset["closed"] == 2
        assert reset["sequences"]["bybit"] == reset["sequences"]["okx"] == {
            "BTC/USDT": 0, "ETH/USDT": 0, "SOL/USDT": 0,
        }  # fmt: skip
        assert (await sim.abook("bybit", "BTC/USDT", 1))["u"] == {}
        await sim.aunfreeze()
    finally:
        await b.close()
        await o.close()
    o = make("okx", sim.base_url, CheckingOkx)
    try:
        await keep_watching(o, "ETH/USDT", None, 0.8)
        assert o.checks and all(server == local for _, server, local in o.checks)
    finally:
        await o.close()
