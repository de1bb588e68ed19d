"""Firehose limited to chosen markets: they stream as fast as the client reads, every other
subscribed market steps at the configured rate (quiet but live); ``ops`` changes per update."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt.pro
import pytest

from exporter.simulator.endpoints import ccxt_config
from tests.support.simulator import SimulatorError, SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SIMULATOR = {"seed": 11, "rate": 20}


async def watch_for(ex: Any, symbol: str, seconds: float) -> int:
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.wait_for(ex.watch_order_book(symbol, 100), 5)
        n += 1
    return n


def steps(counters: dict[str, Any], exchange: str, market: str) -> int:
    return int(counters["book_steps"][exchange].get(market, 0))


async def test_firehose_markets_stream_and_the_others_step_at_the_rate(
    sim: SimulatorHarness,
) -> None:
    fast = ccxt.pro.binance(ccxt_config("binance", sim.base_url))
    slow = ccxt.pro.binance(ccxt_config("binance", sim.base_url))
    try:
        await watch_for(fast, "BTC/USDT", 0.3)
        await watch_for(slow, "ETH/USDT", 0.3)
        body = {"mode": "firehose", "rate": 5, "markets": [["binance", "BTC/USDT"]]}
        await sim.arequest("POST", "/control/mode", body)
        c0, t0 = await sim.acounters(), time.monotonic()
        await asyncio.gather(watch_for(fast, "BTC/USDT", 2.0), watch_for(slow, "ETH/USDT", 2.0))
        c1, elapsed = await sim.acounters(), time.monotonic() - t0
        btc = (steps(c1, "binance", "BTC/USDT") - steps(c0, "binance", "BTC/USDT")) / elapsed
        eth = (steps(c1, "binance", "ETH/USDT") - steps(c0, "binance", "ETH/USDT")) / elapsed
        assert btc > 200, btc  # far above the rate
        assert 3 <= eth <= 8, eth  # the configured 5/s
    finally:
        await fast.close()
        await slow.close()


async def test_firehose_ops_and_validation(sim: SimulatorHarness) -> None:
    ex = ccxt.pro.binance(ccxt_config("binance", sim.base_url))
    try:
        await watch_for(ex, "BTC/USDT", 0.3)
        per_step = {}
        for ops in (2, 10):
            body = {"mode": "firehose", "markets": [["binance", "BTC/USDT"]], "ops": ops}
            await sim.arequest("POST", "/control/mode", body)
            book0, c0 = await sim.abook("binance", "BTC/USDT", 50), await sim.acounters()
            await watch_for(ex, "BTC/USDT", 0.5)
            book1, c1 = await sim.abook("binance", "BTC/USDT", 50), await sim.acounters()
            n = steps(c1, "binance", "BTC/USDT") - steps(c0, "binance", "BTC/USDT")
            # the sequence advances once per changed level
            per_step[ops] = (book1["sequence"] - book0["sequence"]) / max(n, 1)
        assert per_step[10] > 2 * per_step[2], per_step
        with pytest.raises(SimulatorError):
            await sim.arequest("POST", "/control/mode", {"mode": "firehose", "ops": 0})
        with pytest.raises(SimulatorError):
            bad = {"mode": "fixed_rate", "markets": [["binance", "BTC/USDT"]]}
            await sim.arequest("POST", "/control/mode", bad)
        with pytest.raises(SimulatorError):
            await sim.arequest("POST", "/control/mode", {"mode": "firehose", "markets": [["x"]]})
        # a reset goes back to the startup mode
        await sim.arequest("POST", "/control/reset", {})
        health = await sim.arequest("GET", "/control/health")
        assert health["mode"] != "firehose"
    finally:
        await ex.close()
