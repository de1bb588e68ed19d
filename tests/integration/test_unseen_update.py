"""A book update that lands while no watch is pending is not lost.

ccxt applies every frame to its cached book but hands the book out only by resolving a
pending watch; a frame that arrives while the caller is busy between two watches resolves
nothing, and plain ccxt returns it only with the next update. On a market that then goes
quiet, the exporter would keep a book one update old for as long as the quiet lasts. The
guarded client remembers such an update, and the next watch returns the book at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exporter.feeds.clients import build_exchange, mark_read
from exporter.simulator.endpoints import ccxt_config
from tests.support.simulator import SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SIMULATOR = {"seed": 5, "rate": 20}
MARKETS = {
    "binance": "BTC/USDT",
    "kraken": "BTC/USD",
    "bybit": "BTC/USDT",
    "okx": "BTC/USDT",
    "coinbase": "BTC/USD",
}
DEPTH = 10


def top(side: list[list[Any]]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in side[:DEPTH]]


async def settle(sim: SimulatorHarness) -> None:
    """Freeze, then let the sockets drain what was sent before the freeze."""
    await sim.afreeze()
    await asyncio.sleep(0.4)


@pytest.mark.parametrize("exchange", sorted(MARKETS))
async def test_update_between_watches_is_returned_by_the_next_watch(
    sim: SimulatorHarness, exchange: str
) -> None:
    market = MARKETS[exchange]
    ex = build_exchange(
        exchange,
        ccxt_config(exchange, sim.base_url),
        on_frame=lambda: None,
        on_malformed=lambda _exc: None,
    )
    try:
        for _ in range(3):
            await asyncio.wait_for(ex.watch_order_book(market), 5)
        await settle(sim)
        mark_read(ex)  # the caller copies the book here: it holds every update so far
        before = (await sim.abook(exchange, market, DEPTH))["sequence"]

        # Updates while no watch is pending: ccxt applies them and resolves nothing.
        await sim.aunfreeze()
        for _ in range(250):  # the book steps at 20/s: one step within 5 s
            if (await sim.abook(exchange, market, DEPTH))["sequence"] != before:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the simulator's book did not step")
        await settle(sim)
        truth = await sim.abook(exchange, market, DEPTH)

        book = await asyncio.wait_for(ex.watch_order_book(market), 1.0)
        assert top(book["bids"]) == top(truth["bids"])
        assert top(book["asks"]) == top(truth["asks"])

        # Once read, the same book is not handed out again: the frozen market stays quiet.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.watch_order_book(market), 0.5)

        # A read between the update and the next watch (the caller's copy) consumes it.
        await sim.aunfreeze()
        await asyncio.sleep(0.3)
        await settle(sim)
        mark_read(ex)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.watch_order_book(market), 0.5)
    finally:
        await ex.close()
