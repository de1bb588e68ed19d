"""Frame checks of Bybit, OKX and Coinbase: a frame ccxt would choke on or apply with bad
values is refused with its reason before ccxt sees it; frames that are not book data pass."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.feeds.guard import check_bybit, check_coinbase, check_okx
from exporter.model import ErrorReason

M, B = ErrorReason.MALFORMED_FRAME, ErrorReason.BAD_VALUE
U = ErrorReason.UNKNOWN_SYMBOL


def bybit(data: Any, topic: str = "orderbook.50.BTCUSDT") -> dict[str, Any]:
    return {"topic": topic, "type": "delta", "ts": 1, "data": data}


def okx(item: Any, inst: str = "BTC-USDT", channel: str = "books") -> dict[str, Any]:
    return {"arg": {"channel": channel, "instId": inst}, "action": "update", "data": [item]}


def coinbase(update: Any, product: str = "BTC-USD") -> dict[str, Any]:
    event = {"type": "update", "product_id": product, "updates": [update]}
    return {"channel": "l2_data", "sequence_num": 4, "events": [event]}


GOOD_CB = {"side": "bid", "price_level": "97000.5", "new_quantity": "0.25"}


@pytest.mark.parametrize(("message", "reason"), [
    (bybit({"s": "BTCUSDT", "u": 7, "b": [["97000.1", "0.5"]], "a": [["97000.2", "0"]]}), None),
    ({"op": "pong", "success": True}, None),
    (bybit({"s": "BTCUSDT", "u": 7, "b": [], "a": []}, topic="publicTrade.BTCUSDT"), None),
    (bybit([None]), M),
    (bybit({"s": "BTCUSDT", "u": "7", "b": [], "a": []}), M),
    (bybit({"s": "BTCUSDT", "u": 7, "b": [["nan", "1"]], "a": []}), B),
    (bybit({"s": "ETHBTC", "u": 7, "b": [], "a": []}), U),
])  # fmt: skip
def test_bybit(message: Any, reason: ErrorReason | None) -> None:
    got = check_bybit(message, {"BTCUSDT"}, 1e9, 1e12)
    assert (got[0] if got else None) is reason


@pytest.mark.parametrize(("message", "reason"), [
    (okx({"bids": [["97000.1", "0.5", "0", "1"]], "asks": [], "checksum": 1}), None),
    ("pong", None),
    ({"event": "subscribe", "arg": {"channel": "books", "instId": "BTC-USDT"}}, None),
    (okx({"bids": [7], "asks": [7]}), M),
    (okx({"bids": [["-1", "0.5"]], "asks": []}), B),
    (okx({"bids": [], "asks": []}, inst="XRP-USDT"), U),
    (okx({"bids": [], "asks": []}, channel="bbo-tbt"), None),
])  # fmt: skip
def test_okx(message: Any, reason: ErrorReason | None) -> None:
    got = check_okx(message, {"BTC-USDT"}, 1e9, 1e12)
    assert (got[0] if got else None) is reason


@pytest.mark.parametrize(("message", "reason"), [
    (coinbase(GOOD_CB), None),
    (coinbase(dict(GOOD_CB, new_quantity="0")), None),  # a deletion
    ({"channel": "heartbeats", "events": [{"heartbeat_counter": 3}]}, None),
    (coinbase(dict(GOOD_CB, price_level="garbage", new_quantity=None)), M),
    ({"channel": "l2_data", "events": "garbage"}, M),
    (coinbase(dict(GOOD_CB, side="ask")), M),
    (coinbase(dict(GOOD_CB, price_level="inf")), B),
    (coinbase(GOOD_CB, product="DOGE-USD"), U),
])  # fmt: skip
def test_coinbase(message: Any, reason: ErrorReason | None) -> None:
    got = check_coinbase(message, {"BTC-USD"}, 1e9, 1e12)
    assert (got[0] if got else None) is reason
