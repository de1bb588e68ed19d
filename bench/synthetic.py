"""A synthetic, fully populated exporter state of N canonical symbols x 2 exchanges.

Every book is live, every pair evaluated, so the Collector exports every series it can
(~113 series per symbol). Used by the scrape benchmark and the exposition tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from exporter.config import Config, parse
from exporter.feeds.stats import FeedStats, LatencyHistogram
from exporter.http.collector import MarketCollector
from exporter.market.fees import FeeTable
from exporter.market.state import MarketState
from exporter.model import BookSnapshot, BookStatus, FeedKey, MarketInfo


def symbol_name(i: int) -> str:
    return f"G{i:04d}/USD"


def make_config(n: int) -> Config:
    symbols = {}
    for i in range(n):
        base = symbol_name(i).split("/")[0]
        symbols[symbol_name(i)] = {"binance": f"{base}/USDT", "kraken": f"{base}/USD"}
    data: dict[str, Any] = {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": symbols,
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000, 50000],
        "redis": {"url": None},
    }
    return parse(data, "synthetic", environ={})


class ListSink(list[dict[str, Any]]):
    """The window log kept in memory (the writer's ``append_log`` protocol)."""

    def append_log(self, entry: Mapping[str, Any], dedupe_key: str | None = None) -> None:
        self.append(dict(entry))


class SyntheticState:
    """MarketState + Collector over N symbols; :meth:`touch` changes one book."""

    def __init__(self, n: int, seed: int = 1, levels: int = 20) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.rng = random.Random(seed)
        self.levels = levels
        self.config = make_config(n)
        self.feeds: dict[FeedKey, FeedStats] = {}
        for sym, mapping in self.config.symbols.items():
            for ex, market in mapping.items():
                self.feeds[FeedKey((ex, market))] = FeedStats(ex, sym, market)
        self.feeds[FeedKey(("kraken", "USDT/USD"))] = FeedStats("kraken", "USDT/USD", "USDT/USD")
        self.log = ListSink()
        self.fees = FeeTable(self.config)
        for exchange in self.config.exchanges:
            terms = {m: MarketInfo(0.001, 0.0, 0.0) for ex, m in self.feeds if ex == exchange}
            self.fees.load(exchange, terms)
        self.state = MarketState(self.config, self.feeds, self.fees, self.log)
        self.latency = {ex: LatencyHistogram() for ex in self.config.exchanges}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(MarketCollector(self.state, self.latency))
        self.book("kraken", "USDT/USD", 1.0001)
        for mapping in self.config.symbols.values():
            mid = 10.0 + self.rng.random() * 1000
            for ex, market in mapping.items():
                self.book(ex, market, mid * (1 + self.rng.uniform(-0.003, 0.003)))
                for _ in range(self.rng.randint(0, 50)):
                    self.latency[ex].observe(self.rng.random() * 0.05, time.time())

    def book(self, exchange: str, market: str, mid: float, nonce: int | None = None) -> None:
        stats = self.feeds[FeedKey((exchange, market))]
        step = mid * 0.0002
        rng = self.rng
        snap = BookSnapshot(
            exchange=exchange,
            symbol=stats.symbol,
            market=market,
            bids=tuple((mid - step * (i + 0.5), rng.uniform(0.1, 50)) for i in range(self.levels)),
            asks=tuple((mid + step * (i + 0.5), rng.uniform(0.1, 50)) for i in range(self.levels)),
            exchange_ts=time.time() - 0.01,
            received_at=time.time(),
            received_mono=time.monotonic(),
            nonce=nonce,
        )
        stats.status = BookStatus.LIVE
        stats.messages += 1
        self.state.on_book(snap)

    def touch(self) -> tuple[str, str, float]:
        """Move one random Kraken book to a new, unique mid; return (exchange, symbol, bid)."""
        sym = self.rng.choice(list(self.config.symbols))
        mid = 10.0 + self.rng.random() * 1000
        self.book("kraken", self.config.symbols[sym]["kraken"], mid)
        rec = self.state.record("kraken", sym)
        assert rec is not None
        return "kraken", sym, rec.snapshot.bids[0][0]

    def series(self) -> int:
        from prometheus_client import generate_latest

        text = generate_latest(self.registry).decode()
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))
