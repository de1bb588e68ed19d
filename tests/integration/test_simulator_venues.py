"""The simulated Bybit v5 and OKX v5 spot venues driven by the REAL ccxt.pro clients (4.5.90)."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

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
