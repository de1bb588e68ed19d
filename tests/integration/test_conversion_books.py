"""Two conversion books at once: BTC/USD trades against USDT on Binance (priced through
Kraken's USDT/USD), ETH/USD against USDC (through Kraken's USDC/USD). Each conversion book's
staleness stops only the routes that need it, and USDC is priced by its own book, never as USD."""

from __future__ import annotations

import pytest

from exporter.app import Exporter
from exporter.config import parse
from exporter.model import BookStatus
from tests.support.exporter import all_live, running_exporter, sim_config_data, wait_for
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 17, "rate": 20}
SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDC", "kraken": "ETH/USD"},
}


def routes(exp: Exporter) -> set[str]:
    return {key[0] for key, _ in exp.state.live_pairs()}


def mid(exp: Exporter, exchange: str, market: str) -> float:
    snap = exp.state.snapshot(exchange, market)
    assert snap is not None and snap.best_bid is not None and snap.best_ask is not None
    return (snap.best_bid + snap.best_ask) / 2


async def test_each_conversion_book_stops_only_the_routes_that_need_it(
    sim: SimulatorHarness,
) -> None:
    data = sim_config_data(sim.base_url, feeds={"stale_after": 1.5})
    data["symbols"] = SYMBOLS
    data["quote_conversion"] = {
        "USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}},
        "USDC": {"book": {"exchange": "kraken", "market": "USDC/USD"}},
    }
    async with running_exporter(parse(data, "test", environ={})) as exp:
        await wait_for(lambda: all_live(exp), timeout=20, what="every book live")
        await wait_for(lambda: routes(exp) == {"BTC/USD", "ETH/USD"}, what="both symbols")

        # USDC is priced through its own book: the record's rate is USDC/USD's mid.
        rec = exp.state.record("binance", "ETH/USD")
        assert rec is not None and rec.rate is not None
        assert rec.rate == pytest.approx(mid(exp, "kraken", "USDC/USD"), rel=1e-3)
        assert rec.rate != pytest.approx(mid(exp, "kraken", "USDT/USD"), rel=1e-9)

        for stopped, needs_it, other in (
            ("USDC/USD", "ETH/USD", "BTC/USD"),
            ("USDT/USD", "BTC/USD", "ETH/USD"),
        ):
            sim.market_stop("kraken", stopped)
            try:
                await wait_for(
                    lambda s=stopped: exp.state.status("kraken", s) is not BookStatus.LIVE,
                    timeout=5,
                    what=f"{stopped} not live",
                )
                await wait_for(lambda n=needs_it: n not in routes(exp), what=f"{needs_it} gone")
                # the other symbol does not need the stopped book: its routes stay (or return)
                await wait_for(lambda o=other: o in routes(exp), what=f"{other} routes")
                assert exp.state.status("kraken", stopped) is not BookStatus.LIVE
                assert not exp.state.book_live("binance", needs_it)
                assert exp.state.book_live("kraken", needs_it)  # quoted in USD: no conversion
            finally:
                sim.market_start("kraken", stopped)
            await wait_for(
                lambda: routes(exp) == {"BTC/USD", "ETH/USD"}, timeout=10, what="both back"
            )
