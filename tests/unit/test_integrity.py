"""Per-venue integrity hooks on synthetic frames, run through the real guarded ccxt.pro
clients (ccxt applies the frames to its book; nothing is connected).

Checksum vectors:
- OKX: the two examples of OKX's checksum documentation (even and odd number of levels,
  checksum -1881014294 and 831078360), as quoted in the OKX v3 docs and reproduced in public
  gists; the payload is "bid:ask" interleaved "price:size" strings.
- Kraken: the documented level formatting ("45285.2", "0.00100000" -> "452852100000") is in
  test_clients.py with the property test of the integer method; here a whole book whose
  expected value is the CRC32 of the documented string method, written out by hand.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import pytest

from exporter.feeds.clients import build_exchange
from exporter.feeds.integrity import (
    BybitSequence,
    ChecksumMismatch,
    CoinbaseSequence,
    SequenceGap,
    okx_checksum,
    okx_checksum_payload,
)
from exporter.feeds.supervisor import classify
from exporter.model import ErrorReason

MARKET = {
    "type": "spot", "spot": True, "margin": False, "swap": False, "future": False,
    "option": False, "contract": False, "linear": None, "inverse": None, "active": True,
    "settle": None, "settleId": None, "contractSize": None, "limits": {}, "info": {},
}  # fmt: skip


def market(mid: str, symbol: str, price: float = 0.1, amount: float = 0.0001) -> dict[str, Any]:
    base, quote = symbol.split("/")
    return {**MARKET, "id": mid, "symbol": symbol, "base": base, "quote": quote,
            "baseId": base, "quoteId": quote, "lowercaseId": mid.lower(),
            "precision": {"price": price, "amount": amount}}  # fmt: skip


class FakeWs:
    """Stands in for ccxt's ws Client: records what the handlers resolve and reject."""

    def __init__(self, url: str = "wss://fake/spot", subscriptions: dict[str, Any] | None = None):
        self.url = url
        self.subscriptions: dict[str, Any] = subscriptions or {}
        self.futures: dict[str, Any] = {}
        self.resolved: list[tuple[Any, Any]] = []
        self.rejected: list[BaseException] = []

    def resolve(self, result: Any, message_hash: Any = None) -> Any:
        self.resolved.append((message_hash, result))
        return result

    def reject(self, exc: BaseException, message_hash: Any = None) -> Any:
        self.rejected.append(exc)
        return exc


def client(exchange: str, *markets: dict[str, Any]) -> Any:
    seen: list[tuple[ErrorReason, str]] = []
    c = build_exchange(exchange, {}, on_frame=lambda: None, on_malformed=lambda e: None,
                       on_rejected=lambda r, d: seen.append((r, d)))  # fmt: skip
    c.set_markets(list(markets))
    c.cryptoarb_seen = seen
    return c


def feed(c: Any, ws: FakeWs, message: dict[str, Any]) -> None:
    c.handle_message(ws, json.loads(json.dumps(message)))


def levels(book: Any, side: str) -> list[tuple[float, float]]:
    return [(p, q) for p, q in book[side]]


# -- OKX ---------------------------------------------------------------------------------------


def test_okx_checksum_matches_the_documented_examples() -> None:
    even_bids, even_asks = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]
    assert okx_checksum_payload(even_bids, even_asks) == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert okx_checksum(even_bids, even_asks) == -1881014294
    odd_bids, odd_asks = [("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]
    assert okx_checksum_payload(odd_bids, odd_asks) == "3366.1:7:3366.8:9:3368:8:3372:8"
    assert okx_checksum(odd_bids, odd_asks) == 831078360


def test_okx_checksum_covers_the_top_25_levels_only() -> None:
    bids = [(str(100 - i), "1") for i in range(30)]
    asks = [(str(101 + i), "1") for i in range(30)]
    assert okx_checksum(bids, asks) == okx_checksum(bids[:25], asks[:25])
    assert okx_checksum(bids, asks) != okx_checksum(bids[:24], asks[:25])


def okx_frame(
    action: str, bids: list[list[str]], asks: list[list[str]], checksum: int, seq: int, prev: int
) -> dict[str, Any]:
    item = {
        "bids": [[p, q, "0", "1"] for p, q in bids],
        "asks": [[p, q, "0", "1"] for p, q in asks],
        "ts": "1700000000000",
        "checksum": checksum,
        "seqId": seq,
        "prevSeqId": prev,
    }
    return {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action, "data": [item]}


class OkxBook:
    """The exchange's side of the synthetic OKX stream: strings, sorted, checksummed."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {"100.5": "1.20", "100.4": "0.5", "100": "3"}
        self.asks: dict[str, str] = {"100.6": "0.10", "100.7": "2", "101": "1.5"}
        self.seq = 10

    def checksum(self) -> int:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))
        return okx_checksum(bids, asks)

    def snapshot(self) -> dict[str, Any]:
        bids, asks = [list(kv) for kv in self.bids.items()], [list(kv) for kv in self.asks.items()]
        return okx_frame("snapshot", bids, asks, self.checksum(), self.seq, -1)

    def update(self, bids: dict[str, str], asks: dict[str, str]) -> dict[str, Any]:
        for book, changes in ((self.bids, bids), (self.asks, asks)):
            for p, q in changes.items():
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        prev, self.seq = self.seq, self.seq + 1
        new_bids, new_asks = [list(kv) for kv in bids.items()], [list(kv) for kv in asks.items()]
        return okx_frame("update", new_bids, new_asks, self.checksum(), self.seq, prev)


def test_okx_books_verified_after_every_update_and_a_corrupt_level_resyncs() -> None:
    c = client("okx", market("BTC-USDT", "BTC/USDT"))
    ws = FakeWs(subscriptions={"books:BTC/USDT": True})
    truth = OkxBook()
    feed(c, ws, truth.snapshot())
    feed(c, ws, truth.update({"100.5": "0", "100.45": "2.50"}, {"100.6": "0.25"}))
    assert not ws.rejected and len(ws.resolved) == 2
    book = ws.resolved[-1][1]
    assert levels(book, "bids")[:2] == [(100.45, 2.5), (100.4, 0.5)]
    # The venue's book moves, but one level of the frame is corrupted in transit: the
    # checksum (over the true book) no longer matches the book ccxt built.
    frame = truth.update({"100.4": "0.75"}, {})
    frame["data"][0]["bids"][0][1] = "0.76"
    feed(c, ws, frame)
    assert len(ws.resolved) == 2, "the bad book never reaches a watch"
    assert [type(e) for e in ws.rejected] == [ChecksumMismatch]
    assert classify(ws.rejected[0]) is ErrorReason.CHECKSUM
    # Later frames are ignored until the supervisor rebuilds the client.
    feed(c, ws, truth.update({"100.3": "1"}, {}))
    assert len(ws.resolved) == 2 and len(ws.rejected) == 1


def test_okx_checksum_uses_the_exchange_strings_and_skips_a_deprecated_zero() -> None:
    c = client("okx", market("BTC-USDT", "BTC/USDT"))
    ws = FakeWs(subscriptions={"books:BTC/USDT": True})
    truth = OkxBook()
    truth.asks["100.6"] = "0.10"  # "0.10" is not "0.1" in the checksum
    feed(c, ws, truth.snapshot())
    zero = truth.update({"100.2": "4"}, {})
    zero["data"][0]["checksum"] = 0  # OKX: the field reads 0 once deprecated
    feed(c, ws, zero)
    assert not ws.rejected and len(ws.resolved) == 2


# -- Kraken ------------------------------------------------------------------------------------


def documented_kraken(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """Kraken's documented method on the exchange's strings: '.' removed, leading zeros
    stripped, asks then bids, top 10 each."""

    def f(x: str) -> str:
        return x.replace(".", "").lstrip("0")

    return binascii.crc32("".join(f(p) + f(q) for p, q in asks[:10] + bids[:10]).encode())


def test_kraken_checksum_through_the_hook() -> None:
    c = client("kraken", market("XBTUSD", "BTC/USD", price=0.1, amount=0.00000001))
    ws = FakeWs(subscriptions={})
    asks = [(f"{45285.2 + i / 10:.1f}", f"{0.001 * (i + 1):.8f}") for i in range(12)]
    bids = [(f"{45283.5 - i / 10:.1f}", f"{0.5 + i:.8f}") for i in range(12)]
    expected = documented_kraken(asks, bids)
    assert expected == documented_kraken(asks[:10], bids[:10])

    def frame(kind: str, checksum: int) -> dict[str, Any]:
        item = {"symbol": "BTC/USD", "checksum": checksum, "timestamp": "2024-01-01T00:00:00Z",
                "bids": [{"price": float(p), "qty": float(q)} for p, q in bids],
                "asks": [{"price": float(p), "qty": float(q)} for p, q in asks]}  # fmt: skip
        return {"channel": "book", "type": kind, "data": [item]}

    feed(c, ws, frame("snapshot", expected))
    assert not ws.rejected and len(ws.resolved) == 1
    feed(c, ws, frame("update", expected ^ 1))
    assert [type(e) for e in ws.rejected] == [ChecksumMismatch]


# -- Bybit -------------------------------------------------------------------------------------


def bybit_frame(kind: str, u: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1700000000000,
            "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": 1000 + u}}  # fmt: skip


def test_bybit_update_ids_are_checked_per_symbol() -> None:
    hook = BybitSequence()
    assert hook.on_frame(bybit_frame("snapshot", 10, [], [])) is None
    assert hook.on_frame(bybit_frame("delta", 11, [], [])) is None
    gap = hook.on_frame(bybit_frame("delta", 13, [], []))
    assert gap is not None and gap[0] is ErrorReason.SEQUENCE_GAP and "u=13 after u=11" in gap[1]
    # u == 1: Bybit restarted the service and sent a fresh book.
    assert hook.on_frame(bybit_frame("delta", 1, [], [])) is None
    assert hook.on_frame(bybit_frame("delta", 2, [], [])) is None
    other = {**bybit_frame("delta", 5, [], []), "data": {"s": "ETHUSDT", "u": 5, "b": [], "a": []}}
    before_snapshot = hook.on_frame(other)
    assert before_snapshot is not None and "before a snapshot" in before_snapshot[1]
    bad = hook.on_frame({**bybit_frame("delta", 3, [], []), "data": {"s": "BTCUSDT", "u": "3"}})
    assert bad is not None and bad[0] is ErrorReason.MALFORMED_FRAME
    assert hook.on_frame({"op": "pong"}) is None and hook.on_frame("pong") is None


def test_bybit_dropped_delta_is_not_applied_and_rejects_the_watch() -> None:
    c = client("bybit", market("BTCUSDT", "BTC/USDT"))
    ws = FakeWs(url="wss://stream.bybit.com/v5/public/spot")
    feed(c, ws, bybit_frame("snapshot", 100, [["100", "1"], ["99", "2"]], [["101", "1"]]))
    feed(c, ws, bybit_frame("delta", 101, [["100", "3"]], []))
    assert not ws.rejected and levels(ws.resolved[-1][1], "bids")[0] == (100.0, 3.0)
    feed(c, ws, bybit_frame("delta", 103, [["100", "0"]], []))  # 102 was dropped
    assert [type(e) for e in ws.rejected] == [SequenceGap]
    assert classify(ws.rejected[0]) is ErrorReason.SEQUENCE_GAP
    assert levels(c.orderbooks["BTC/USDT"], "bids")[0] == (100.0, 3.0), "the gap was not applied"
    assert len(ws.resolved) == 2


async def test_a_failure_between_two_watches_raises_at_the_next_watch() -> None:
    """With no watch pending, ccxt would keep the rejection nowhere and hand out the book
    it gave up on; the guarded client raises the failure at the next watch instead."""
    c = client("bybit", market("BTCUSDT", "BTC/USDT"))
    ws = FakeWs(url="wss://stream.bybit.com/v5/public/spot")
    feed(c, ws, bybit_frame("snapshot", 7, [["100", "1"]], [["101", "1"]]))
    feed(c, ws, bybit_frame("delta", 9, [], []))
    with pytest.raises(SequenceGap):
        await c.watch_order_book("BTC/USDT", 50)


# -- Coinbase ----------------------------------------------------------------------------------


def cb_frame(seq: int, kind: str = "update", side: str = "bid", price: str = "100",
             qty: str = "1") -> dict[str, Any]:  # fmt: skip
    return {"channel": "l2_data", "client_id": "", "timestamp": "2024-01-01T00:00:00.000Z",
            "sequence_num": seq, "events": [{"type": kind, "product_id": "BTC-USD", "updates": [
                {"side": side, "event_time": "2024-01-01T00:00:00Z", "price_level": price,
                 "new_quantity": qty}]}]}  # fmt: skip


def test_coinbase_sequence_num_is_checked_per_connection_across_channels() -> None:
    hook = CoinbaseSequence()
    heartbeat = {"channel": "heartbeats", "sequence_num": 1, "events": []}
    assert hook.on_frame({"channel": "subscriptions", "sequence_num": 0}) is None
    assert hook.on_frame(heartbeat) is None
    assert hook.on_frame(cb_frame(2)) is None
    gap = hook.on_frame(cb_frame(4))
    assert gap is not None and gap[0] is ErrorReason.SEQUENCE_GAP and "4 after 2" in gap[1]
    bad = hook.on_frame({"channel": "l2_data", "sequence_num": "5"})
    assert bad is not None and bad[0] is ErrorReason.MALFORMED_FRAME


def test_coinbase_gap_rejects_the_book_watch() -> None:
    c = client("coinbase", market("BTC-USD", "BTC/USD"))
    ws = FakeWs(url="wss://advanced-trade-ws.coinbase.com")
    feed(c, ws, cb_frame(0, "snapshot"))
    feed(c, ws, cb_frame(1, side="offer", price="101"))
    assert not ws.rejected and len(ws.resolved) >= 2
    feed(c, ws, cb_frame(3, price="99"))
    assert [type(e) for e in ws.rejected] == [SequenceGap]
    assert 99.0 not in [p for p, _ in c.orderbooks["BTC/USD"]["bids"]]


async def test_coinbase_subscribes_heartbeats_on_the_book_connection() -> None:
    c = client("coinbase", market("BTC-USD", "BTC/USD"))
    sent: list[tuple[str, str, dict[str, Any]]] = []
    loop_future: Any = None

    def watch(url: str, message_hash: str, message: Any = None, *_: Any) -> Any:
        nonlocal loop_future
        import asyncio

        sent.append((url, message_hash, message))
        future = asyncio.get_running_loop().create_future()
        if message_hash.startswith("level2"):
            book = c.order_book({})
            future.set_result(book)
        else:
            loop_future = future
        return future

    c.watch = watch
    await c.watch_order_book("BTC/USD")
    await c.watch_order_book("BTC/USD")  # heartbeats are subscribed once per client
    assert [(h, m["channel"]) for _, h, m in sent] == [
        ("heartbeats", "heartbeats"), ("level2::BTC/USD", "level2"), ("level2::BTC/USD", "level2"),
    ]  # fmt: skip
    assert sent[0][0] == sent[1][0], "the same connection"
    assert sent[0][2]["type"] == "subscribe" and sent[0][2]["product_ids"] == ["BTC-USD"]
    loop_future.set_exception(RuntimeError("closed"))  # consumed: no 'never retrieved' noise
