"""A quiet market keeps its subscription: the feed renews it only when the socket is closed
or after `feeds.resubscribe_after` of silence (the silence itself is counted once)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from exporter.clock import FakeClock
from exporter.feeds.stats import FeedStats, LatencyHistogram
from exporter.feeds.supervisor import FeedSettings, MarketFeed, Silent, _socket_open
from exporter.model import BookSnapshot, BookStatus, ErrorReason, MarketInfo


class Socket:
    def __init__(self, closed: bool) -> None:
        self._closed = closed

    def closed(self) -> bool:
        return self._closed


class Client:
    """A ccxt client whose stream never sends a book (a quiet market)."""

    def __init__(self, closed: bool = False) -> None:
        self.clients = {"wss://x": Socket(closed)}

    async def watch_order_book(self, market: str, limit: int | None) -> Any:
        await asyncio.Event().wait()


class Sink:
    def __init__(self) -> None:
        self.statuses: list[BookStatus] = []
        self.stats: FeedStats | None = None

    def on_book(self, snap: BookSnapshot) -> None:
        raise AssertionError("no book expected")

    def on_status(self, exchange: str, market: str) -> None:
        assert self.stats is not None
        self.statuses.append(self.stats.status)

    def on_markets(self, exchange: str, markets: Mapping[str, MarketInfo]) -> None:
        pass


class Warn:
    def warning(self, key: Any, msg: str, *args: Any) -> None:
        pass


def test_socket_open() -> None:
    assert _socket_open(Client(closed=False))
    assert not _socket_open(Client(closed=True))
    assert not _socket_open(object())  # never connected


def feed(clock: FakeClock, sink: Sink, resubscribe_after: float) -> MarketFeed:
    stats = FeedStats("kraken", "BTC/USD", "BTC/USD")
    sink.stats = stats
    settings = FeedSettings(
        depth=10, watch_timeout=0.05, backoff_base=0.01, backoff_cap=0.01,
        resubscribe_after=resubscribe_after,
    )  # fmt: skip
    return MarketFeed(
        "kraken", "BTC/USD", stats, LatencyHistogram(), settings, lambda _: Client(), sink,
        Warn(), clock=clock,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_quiet_market_stays_stale_then_resubscribes() -> None:
    clock, sink = FakeClock(), Sink()
    f = feed(clock, sink, resubscribe_after=1.0)
    task = asyncio.create_task(f._watch(Client()))
    # Every 120 ms (two 50 ms watch timeouts) the fake clock moves 0.4 s: silent for 0.05,
    # 0.45, 0.85 (stale, same subscription), then 1.25 >= resubscribe_after: renewed.
    for _ in range(3):
        await asyncio.sleep(0.12)
        assert not task.done()
        clock.advance(0.4)
    with pytest.raises(Silent):
        await asyncio.wait_for(task, 1.0)
    assert sink.statuses and set(sink.statuses) == {BookStatus.STALE}
    assert f.stats.errors[ErrorReason.TIMEOUT] == 1  # the silence, counted when it began


async def test_closed_socket_is_renewed_at_the_first_timeout() -> None:
    clock, sink = FakeClock(), Sink()
    f = feed(clock, sink, resubscribe_after=300.0)
    with pytest.raises(Silent):
        await asyncio.wait_for(f._watch(Client(closed=True)), 1.0)
