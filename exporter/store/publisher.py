"""Hands the market's changed books to the Redis writer (``ticker:{exchange}:{symbol}`` and
the ``symbols`` set, docs/redis.md) on the writer's flush timer.

It reads :meth:`MarketState.take_dirty`: books whose levels or status changed since the last
call, so a book that goes stale is re-published with its new status at the next flush even
when no update arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.feeds.stats import LatencyHistogram
from exporter.market.state import BookView, MarketState
from exporter.model import label_number
from exporter.store.writer import StateWriter

TICKER_LEVELS = 10  # top levels per side copied into the Redis ticker


class TickerPublisher:
    def __init__(
        self,
        state: MarketState,
        latency: Mapping[str, LatencyHistogram],
        writer: StateWriter,
    ) -> None:
        self.state = state
        self.latency = latency
        self.writer = writer
        self.reference_band = state.config.reference_band

    def payload(self, view: BookView) -> dict[str, Any] | None:
        rec = view.record
        if rec is None or rec.metrics is None or rec.rate is None:
            return None
        snap, met, rate = rec.snapshot, rec.metrics, rec.rate
        ref_bid, ref_ask = met.depth[self.reference_band]
        h = self.latency.get(view.exchange)
        latency = snap.received_at - snap.exchange_ts if snap.exchange_ts is not None else None
        if latency is None and h is not None and h.count:
            latency = h.total / h.count
        return {
            "exchange": view.exchange,
            "symbol": view.symbol,
            "market": snap.market,
            "bid": met.best_bid * rate,
            "ask": met.best_ask * rate,
            "quote_rate": rate,
            "bid_depth": ref_bid,
            "ask_depth": ref_ask,
            "depth": {label_number(b): {"bid": d[0], "ask": d[1]} for b, d in met.depth.items()},
            "latency": latency,
            "timestamp": int(snap.exchange_ts * 1000) if snap.exchange_ts is not None else None,
            "received_at": int(snap.received_at * 1000),
            "status": str(view.status),
            # Immutable tuples, encoded as JSON arrays at flush time (no per-level copy here).
            "bids": snap.bids[:TICKER_LEVELS],
            "asks": snap.asks[:TICKER_LEVELS],
        }

    def publish(self) -> None:
        now = self.state.clock.monotonic()
        for view in self.state.take_dirty(now):
            payload = self.payload(view)
            if payload is not None:
                self.writer.put_ticker(view.exchange, view.symbol, payload)
        self.writer.put_symbols(self.state.live_symbols(now))
