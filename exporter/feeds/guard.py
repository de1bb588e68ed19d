"""Input guards for exchange data and the snapshot-request budget.

- :func:`frame_check` returns an exchange's check of parsed frames, run *before* ccxt
  applies them: missing fields, NaN/inf/negative or out-of-bound prices and quantities,
  unknown symbols. A bad frame is never applied to the book; the caller counts it by reason
  and skips it (and, unless only its symbol is unknown, has the book rebuilt).
- :class:`SnapshotBudget` is a per-market token bucket around (re)subscriptions: each one
  costs the exchange a depth snapshot (Binance REST ``/depth``, Kraken WS snapshot), so a
  reconnect storm must not turn into a REST ban. Defaults: burst 4, 8 per minute, i.e. at
  most 12 snapshot requests per market in any 60 s.
- :func:`retry_after_seconds` reads a ``Retry-After`` header (seconds or HTTP date).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from exporter.model import ErrorReason

# Why a frame was refused: (reason label, detail for the log).
Rejection = tuple[ErrorReason, str]


def _bad_number(value: Any, max_value: float, allow_zero: bool) -> Rejection | None:
    """None when ``value`` is a finite number (or numeric string) in range, else why not:
    not a number at all is ``malformed_frame``; NaN/inf/negative/too large is ``bad_value``."""
    if isinstance(value, bool):
        return ErrorReason.MALFORMED_FRAME, f"not a number: {value!r}"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ErrorReason.MALFORMED_FRAME, f"not a number: {value[:32]!r}"
    elif isinstance(value, int | float):
        number = float(value)
    else:
        return ErrorReason.MALFORMED_FRAME, f"not a number: {type(value).__name__}"
    if not math.isfinite(number):
        return ErrorReason.BAD_VALUE, f"not finite: {value!r}"
    if number < 0 or (number == 0 and not allow_zero):
        return ErrorReason.BAD_VALUE, f"not positive: {value!r}"
    if number > max_value:
        return ErrorReason.BAD_VALUE, f"beyond bound {max_value:g}: {value!r}"
    return None


def _check_levels(levels: Any, as_dict: bool, max_price: float, max_qty: float) -> Rejection | None:
    if not isinstance(levels, list):
        return ErrorReason.MALFORMED_FRAME, "levels are not a list"
    for level in levels:
        if as_dict:
            if not isinstance(level, Mapping) or "price" not in level or "qty" not in level:
                return ErrorReason.MALFORMED_FRAME, f"bad level {str(level)[:64]}"
            price, qty = level["price"], level["qty"]
        else:
            if not isinstance(level, list | tuple) or len(level) < 2:
                return ErrorReason.MALFORMED_FRAME, f"bad level {str(level)[:64]}"
            price, qty = level[0], level[1]
        rejection = _bad_number(price, max_price, allow_zero=False)
        if rejection is None:
            rejection = _bad_number(qty, max_qty, allow_zero=True)  # qty 0 deletes the level
        if rejection is not None:
            return rejection
    return None


def check_binance(
    message: Any, known_ids: Collection[str], max_price: float, max_qty: float
) -> Rejection | None:
    """A Binance ``depthUpdate`` (optionally in a ``{"stream", "data"}`` wrapper)."""
    if not isinstance(message, Mapping):
        return ErrorReason.MALFORMED_FRAME, f"frame is a {type(message).__name__}"
    data = message.get("data") if "stream" in message else message
    if not isinstance(data, Mapping) or data.get("e") != "depthUpdate":
        return None  # subscription answers and other events: ccxt's business
    for field in ("s", "U", "u", "b", "a"):
        if field not in data:
            return ErrorReason.MALFORMED_FRAME, f"depthUpdate without {field!r}"
    if not isinstance(data["U"], int) or not isinstance(data["u"], int):
        return ErrorReason.MALFORMED_FRAME, "depthUpdate with non-integer U/u"
    if data["s"] not in known_ids:
        return ErrorReason.UNKNOWN_SYMBOL, f"unknown symbol {str(data['s'])[:32]!r}"
    for side in ("b", "a"):
        rejection = _check_levels(data[side], False, max_price, max_qty)
        if rejection is not None:
            return rejection
    return None


def check_kraken(
    message: Any, known_symbols: Collection[str], max_price: float, max_qty: float
) -> Rejection | None:
    """A Kraken WS v2 ``book`` snapshot or update."""
    if not isinstance(message, Mapping):
        return ErrorReason.MALFORMED_FRAME, f"frame is a {type(message).__name__}"
    if message.get("channel") != "book" or message.get("type") not in ("snapshot", "update"):
        return None
    data = message.get("data")
    if not isinstance(data, list) or not data:
        return ErrorReason.MALFORMED_FRAME, "book frame without data"
    for item in data:
        if not isinstance(item, Mapping) or not isinstance(item.get("symbol"), str):
            return ErrorReason.MALFORMED_FRAME, "book item without symbol"
        if item["symbol"] not in known_symbols:
            return ErrorReason.UNKNOWN_SYMBOL, f"unknown symbol {item['symbol'][:32]!r}"
        checksum = item.get("checksum")
        if checksum is not None and (isinstance(checksum, bool) or not isinstance(checksum, int)):
            return ErrorReason.MALFORMED_FRAME, "non-integer checksum"
        for side in ("bids", "asks"):
            rejection = _check_levels(item.get(side, []), True, max_price, max_qty)
            if rejection is not None:
                return rejection
    return None


def _check_sides(
    item: Mapping[str, Any], sides: tuple[str, str], max_price: float, max_qty: float
) -> Rejection | None:
    for side in sides:
        rejection = _check_levels(item.get(side, []), False, max_price, max_qty)
        if rejection is not None:
            return rejection
    return None


def check_bybit(
    message: Any, known_ids: Collection[str], max_price: float, max_qty: float
) -> Rejection | None:
    """A Bybit v5 ``orderbook.{depth}.{symbol}`` snapshot or delta."""
    if not isinstance(message, Mapping):
        return ErrorReason.MALFORMED_FRAME, f"frame is a {type(message).__name__}"
    topic = message.get("topic")
    if not isinstance(topic, str) or not topic.startswith("orderbook."):
        return None  # op answers, pongs and other topics: ccxt's business
    data = message.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("s"), str):
        return ErrorReason.MALFORMED_FRAME, "orderbook frame without data.s"
    if not isinstance(data.get("u"), int) or isinstance(data.get("u"), bool):
        return ErrorReason.MALFORMED_FRAME, "orderbook frame with a non-integer u"
    if data["s"] not in known_ids:
        return ErrorReason.UNKNOWN_SYMBOL, f"unknown symbol {data['s'][:32]!r}"
    return _check_sides(data, ("b", "a"), max_price, max_qty)


def check_okx(
    message: Any, known_ids: Collection[str], max_price: float, max_qty: float
) -> Rejection | None:
    """An OKX v5 order-book push (``books``, ``books5``, ``bbo-tbt``, ...)."""
    if not isinstance(message, Mapping):
        return None  # OKX answers a text ping with the text "pong"
    arg = message.get("arg")
    if not isinstance(arg, Mapping) or not str(arg.get("channel", "")).startswith(("books", "bbo")):
        return None
    if "event" in message:
        return None  # subscribe / unsubscribe answers
    if arg.get("instId") not in known_ids:
        return ErrorReason.UNKNOWN_SYMBOL, f"unknown instrument {str(arg.get('instId'))[:32]!r}"
    data = message.get("data")
    if not isinstance(data, list) or not data:
        return ErrorReason.MALFORMED_FRAME, "book push without data"
    for item in data:
        if not isinstance(item, Mapping):
            return ErrorReason.MALFORMED_FRAME, "book item is not an object"
        rejection = _check_sides(item, ("bids", "asks"), max_price, max_qty)
        if rejection is not None:
            return rejection
    return None


def check_coinbase(
    message: Any, known_ids: Collection[str], max_price: float, max_qty: float
) -> Rejection | None:
    """A Coinbase Advanced Trade ``l2_data`` message (snapshot and update events)."""
    if not isinstance(message, Mapping):
        return ErrorReason.MALFORMED_FRAME, f"frame is a {type(message).__name__}"
    if message.get("channel") != "l2_data":
        return None
    events = message.get("events")
    if not isinstance(events, list):
        return ErrorReason.MALFORMED_FRAME, "l2_data without an events list"
    for event in events:
        if not isinstance(event, Mapping) or not isinstance(event.get("updates"), list):
            return ErrorReason.MALFORMED_FRAME, "l2_data event without updates"
        if event.get("product_id") not in known_ids:
            return (
                ErrorReason.UNKNOWN_SYMBOL,
                f"unknown product {str(event.get('product_id'))[:32]!r}",
            )
        for update in event["updates"]:
            if not isinstance(update, Mapping) or update.get("side") not in ("bid", "offer"):
                return ErrorReason.MALFORMED_FRAME, f"bad update {str(update)[:64]}"
            rejection = _bad_number(update.get("price_level"), max_price, allow_zero=False)
            if rejection is None:
                rejection = _bad_number(update.get("new_quantity"), max_qty, allow_zero=True)
            if rejection is not None:
                return rejection
    return None


_CHECKS = {
    "binance": check_binance,
    "bybit": check_bybit,
    "okx": check_okx,
    "coinbase": check_coinbase,
}

FrameCheck = Callable[[Any], Rejection | None]


def frame_check(
    exchange_id: str, exchange: Any, max_price: float, max_qty: float
) -> FrameCheck | None:
    """The checker for ``exchange_id`` bound to its loaded markets (None: no checks known)."""
    check = _CHECKS.get(exchange_id)
    if check is not None:  # these venues name markets by exchange id in their frames
        ids = exchange.markets_by_id or {}
        return lambda m: check(m, ids, max_price, max_qty)
    if exchange_id == "kraken":
        symbols = exchange.markets or {}
        return lambda m: check_kraken(m, symbols, max_price, max_qty)
    return None


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """``Retry-After`` from a ccxt ``last_response_headers`` dict: delta seconds or HTTP date."""
    if not isinstance(headers, Mapping):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_EPS = 1e-9  # float slack: waiting exactly delay() must make a token available


class SnapshotBudget:
    """Token bucket: ``burst`` tokens, refilled at ``per_minute`` per minute. At most
    ``burst + per_minute * T / 60`` (re)subscriptions in any window of T seconds."""

    def __init__(
        self, burst: int = 4, per_minute: float = 8.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self.waited = 0  # attempts that had to wait for a token

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return now

    def delay(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        self._refill()
        if self._tokens >= 1.0 - _EPS:
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def take(self) -> None:
        self._refill()
        if self._tokens < 1.0 - _EPS:
            raise RuntimeError("no snapshot token: call delay() and wait first")
        self._tokens = max(0.0, self._tokens - 1.0)
