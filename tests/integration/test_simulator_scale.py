"""Simulator extensions for benchmarks: generated symbols (--symbols) and the send log."""

from __future__ import annotations

import asyncio

import ccxt.pro
import pytest

from exporter.simulator.endpoints import SIMULATED_MARKETS, ccxt_config, generated_markets
from tests.support.simulator import SimulatorError, SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_generated_markets_come_after_the_real_ones() -> None:
    assert generated_markets(3) == []
    gen = generated_markets(5)
    assert [(m.exchange, m.symbol) for m in gen] == [
        ("binance", "G0004/USDT"), ("kraken", "G0004/USD"),
        ("binance", "G0005/USDT"), ("kraken", "G0005/USD"),
    ]  # fmt: skip
    assert not {m.symbol for m in gen} & {m.symbol for m in SIMULATED_MARKETS}


async def test_generated_symbols_are_watchable_and_sends_are_logged() -> None:
    with SimulatorHarness(
        seed=3, rate=50, extra_args=["--symbols", "5", "--record-sends", "--mode", "fixed_rate"]
    ) as sim:
        markets = {(m["exchange"], m["symbol"]) for m in sim.get("/control/markets")["markets"]}
        assert markets == {(m.exchange, m.symbol) for m in SIMULATED_MARKETS} | {
            (m.exchange, m.symbol) for m in generated_markets(5)
        }
        binance = ccxt.pro.binance(ccxt_config("binance", sim.base_url))
        kraken_cfg = ccxt_config("kraken", sim.base_url)
        kraken_cfg["rateLimit"] = 50
        kraken = ccxt.pro.kraken(kraken_cfg)
        try:
            b = await asyncio.wait_for(binance.watch_order_book("G0005/USDT", 100), 10)
            k = await asyncio.wait_for(kraken.watch_order_book("G0005/USD", 10), 10)
            b = await asyncio.wait_for(binance.watch_order_book("G0005/USDT", 100), 10)
            assert b["bids"] and b["asks"] and b["bids"][0][0] < b["asks"][0][0]
            assert k["bids"] and k["asks"]
            sends = sim.get("/control/sends")["sends"]
            seqs = {s[2] for s in sends if s[:2] == ["binance", "G0005/USDT"]}
            assert b["nonce"] in seqs  # the Binance book nonce is the simulator's sequence
        finally:
            await binance.close()
            await kraken.close()


def test_send_log_needs_the_flag() -> None:
    with SimulatorHarness(seed=3) as sim, pytest.raises(SimulatorError, match="400"):
        sim.get("/control/sends")
