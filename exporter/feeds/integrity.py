"""Per-venue integrity hooks: the checks ccxt leaves out, one small class per venue.

A hook belongs to one guarded ccxt client (one market) and sees

- :meth:`IntegrityHook.on_frame`: every parsed frame, after the frame guard and *before*
  ccxt applies it (sequence numbers: a gap is refused before it reaches the book);
- :meth:`IntegrityHook.on_book`: each book ccxt's ``handle_order_book`` resolves for that
  frame, *before* the watch returns it (checksums over the book ccxt built).

Each returns None (ok) or a :data:`~exporter.feeds.guard.Rejection` (reason, detail). The
client (clients.py) turns a rejection into :func:`failure`: the pending watch raises it,
every later frame of that client is ignored, and the supervisor counts the reason
(``cryptoarb_feed_errors_total{reason="checksum"|"sequence_gap"}``), counts a resync and
rebuilds that market's client only.

| venue | hook | what ccxt 4.5.90 leaves unchecked |
|---|---|---|
| kraken | :class:`KrakenChecksum` | the v2 CRC32 (option ``checksum`` off by default) |
| okx | :class:`OkxChecksum` | the ``books`` CRC32 over the top 25 levels (never read) |
| bybit | :class:`BybitSequence` | the delta's ``u`` (book nonce stays None) |
| coinbase | :class:`CoinbaseSequence` | ``sequence_num`` (per connection) |

Binance needs none: ccxt checks the diff stream's U/u against the snapshot.
See docs/exchanges.md.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ccxt.base.errors import ChecksumError, InvalidNonce

from exporter.feeds.guard import Rejection
from exporter.model import ErrorReason


class ChecksumMismatch(ChecksumError):  # type: ignore[misc]
    """The book ccxt built differs from the exchange's checksum: resync that book."""


class SequenceGap(InvalidNonce):  # type: ignore[misc]
    """An update was missed: resync that book."""


def failure(rejection: Rejection) -> Exception:
    """The exception a hook's rejection raises in the watch (classified by its reason)."""
    reason, detail = rejection
    if reason is ErrorReason.CHECKSUM:
        return ChecksumMismatch(detail)
    if reason is ErrorReason.SEQUENCE_GAP:
        return SequenceGap(detail)
    raise ValueError(f"not an integrity reason: {reason}")


class IntegrityHook:
    """No checks; venues override what they verify."""

    # Whether on_book runs (it costs a proxy around ccxt's ws client per book frame).
    checks_books = False

    def on_frame(self, message: Any) -> Rejection | None:
        return None

    def on_book(self, message: Any, book: Any) -> Rejection | None:
        return None


# -- Kraken: CRC32 of the top 10 levels, ccxt's option off ----------------------------------


def kraken_checksum_payload(asks: Any, bids: Any, price_decimals: int, qty_decimals: int) -> str:
    """Kraken v2 checksum input: top 10 asks low->high then bids high->low, price then qty,
    each formatted with the market precision, '.' removed, leading zeros stripped.

    That text is the integer number of ticks (lots), so it is computed as one: ~3x cheaper
    than formatting, and it runs on every Kraken message. Exact because book values come
    from strings with at most the market's decimals, so ``x * 10**d`` is within rounding
    error of an integer."""
    ps, qs = 10**price_decimals, 10**qty_decimals
    parts: list[str] = []
    for side in (asks, bids):
        for level in side[:10]:
            parts.append(str(round(level[0] * ps)))
            parts.append(str(round(level[1] * qs)))
    return "".join(parts)


def kraken_checksum(asks: Any, bids: Any, price_decimals: int, qty_decimals: int) -> int:
    return binascii.crc32(
        kraken_checksum_payload(asks, bids, price_decimals, qty_decimals).encode()
    )


def decimals(precision: Any) -> int:
    """ccxt precision (TICK_SIZE mode: 0.01) -> number of decimals (2)."""
    if precision is None:
        return 8
    p = float(precision)
    if p >= 1:
        return 0
    text = f"{p:.12f}".rstrip("0")
    return len(text.split(".")[1])


class KrakenChecksum(IntegrityHook):
    """The book ccxt built after each ``book`` frame against the frame's ``checksum``."""

    checks_books = True

    def __init__(self, exchange: Any) -> None:
        self._exchange = exchange
        self._decimals: dict[str, tuple[int, int]] = {}

    def on_book(self, message: Any, book: Any) -> Rejection | None:
        data = message.get("data") if isinstance(message, Mapping) else None
        first = data[0] if isinstance(data, list) and data else None
        if not isinstance(first, Mapping):
            return None
        expected, symbol = first.get("checksum"), first.get("symbol")
        if expected is None or symbol is None:
            return None
        pd_qd = self._decimals.get(symbol)
        if pd_qd is None:  # once per symbol: this runs on every message
            precision = self._exchange.market(symbol)["precision"]
            pd_qd = self._decimals[symbol] = (
                decimals(precision["price"]),
                decimals(precision["amount"]),
            )
        got = kraken_checksum(book["asks"], book["bids"], *pd_qd)
        if got == int(expected):
            return None
        return ErrorReason.CHECKSUM, f"kraken {symbol} book checksum {got} != {expected}"


# -- OKX: CRC32 of the top 25 levels, never read by ccxt ------------------------------------

OKX_CHECKSUM_LEVELS = 25
_OKX_CHECKSUM_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt"})


def okx_checksum_payload(bids: Any, asks: Any) -> str:
    """OKX checksum input: bid[i] and ask[i] interleaved as "price:size" for i < 25 (a side
    that runs out is skipped), joined with ':'; prices and sizes as the exchange sent them."""
    parts: list[str] = []
    for i in range(OKX_CHECKSUM_LEVELS):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    return ":".join(parts)


def okx_checksum(bids: Any, asks: Any) -> int:
    """Signed 32-bit CRC32 of :func:`okx_checksum_payload` (what OKX sends)."""
    crc = binascii.crc32(okx_checksum_payload(bids, asks).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _plain(x: float) -> str:
    """A float as a plain decimal string (no exponent, no trailing '.0')."""
    text = format(Decimal(repr(x)), "f")
    return text[:-2] if text.endswith(".0") else text


# price -> (price text, size text, size) as the exchange last sent that level
_Texts = dict[float, tuple[str, str, float]]


class OkxChecksum(IntegrityHook):
    """After each ``books`` snapshot/update, the top 25 levels of the book ccxt built
    against the item's ``checksum``.

    The checksum covers the exchange's strings ("0.10" is not "0.1"), and ccxt keeps floats,
    so the hook remembers the text of every level the frames set; a level of ccxt's book
    whose size differs from the one the frames set is rendered from the float, which then
    fails the comparison, as it should. A checksum of 0 is not checked: OKX announced that
    the field will read 0 once deprecated (books, books-l2-tbt, books50-l2-tbt)."""

    checks_books = True

    def __init__(self) -> None:
        self._texts: dict[str, tuple[_Texts, _Texts]] = {}  # instId -> (bids, asks)
        self._pending: list[tuple[str, bool, Mapping[str, Any]]] = []

    def on_frame(self, message: Any) -> Rejection | None:
        self._pending = []
        if not isinstance(message, Mapping):
            return None
        arg = message.get("arg")
        if not isinstance(arg, Mapping) or arg.get("channel") not in _OKX_CHECKSUM_CHANNELS:
            return None
        action, data, inst = message.get("action"), message.get("data"), arg.get("instId")
        if action not in ("snapshot", "update") or not isinstance(data, list):
            return None
        for item in data:
            if not isinstance(item, Mapping):
                return ErrorReason.MALFORMED_FRAME, "okx book item is not an object"
            checksum = item.get("checksum")
            if checksum is not None and (
                isinstance(checksum, bool) or not isinstance(checksum, int)
            ):
                return ErrorReason.MALFORMED_FRAME, "okx book item with a non-integer checksum"
            self._pending.append((str(inst), action == "snapshot", item))
        return None

    def on_book(self, message: Any, book: Any) -> Rejection | None:
        if not self._pending:
            return None
        inst, snapshot, item = self._pending.pop(0)  # ccxt resolves once per data item
        texts = self._texts.get(inst)
        if texts is None or snapshot:
            texts = self._texts[inst] = ({}, {})
        for side, levels in zip(
            texts, (item.get("bids") or [], item.get("asks") or []), strict=True
        ):
            for level in levels:
                price, size = float(level[0]), float(level[1])
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = (str(level[0]), str(level[1]), size)
        expected = item.get("checksum")
        if not expected:
            return None
        bids = self._top(book["bids"], texts[0])
        asks = self._top(book["asks"], texts[1])
        got = okx_checksum(bids, asks)
        if got == expected:
            return None
        return ErrorReason.CHECKSUM, f"okx {inst} book checksum {got} != {expected}"

    @staticmethod
    def _top(side: Any, texts: _Texts) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for level in side[:OKX_CHECKSUM_LEVELS]:
            price, size = level[0], level[1]
            known = texts.get(price)
            if known is not None and known[2] == size:
                out.append((known[0], known[1]))
            else:
                out.append((_plain(price), _plain(size)))
        return out


# -- Bybit: the delta's update id, ignored by ccxt ------------------------------------------


class BybitSequence(IntegrityHook):
    """``orderbook.<depth>.<symbol>`` frames: each delta's ``u`` must be the previous
    ``u`` + 1 for that symbol; a snapshot, or ``u == 1`` (Bybit restarted the service and
    sent a fresh book), starts again. A delta before any snapshot is a gap too: ccxt would
    apply it to an empty book."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def on_frame(self, message: Any) -> Rejection | None:
        if not isinstance(message, Mapping):
            return None
        topic = message.get("topic")
        if not isinstance(topic, str) or not topic.startswith("orderbook."):
            return None
        data = message.get("data")
        if not isinstance(data, Mapping):
            return ErrorReason.MALFORMED_FRAME, "bybit orderbook frame without data"
        market_id, u = data.get("s"), data.get("u")
        if not isinstance(market_id, str) or isinstance(u, bool) or not isinstance(u, int):
            return ErrorReason.MALFORMED_FRAME, "bybit orderbook frame without s/u"
        last = self._last.get(market_id)
        if message.get("type") == "snapshot" or u == 1:
            self._last[market_id] = u
            return None
        if last is None:
            return ErrorReason.SEQUENCE_GAP, f"bybit {market_id} delta u={u} before a snapshot"
        if u != last + 1:
            return ErrorReason.SEQUENCE_GAP, f"bybit {market_id} delta u={u} after u={last}"
        self._last[market_id] = u
        return None


# -- Coinbase: the connection's sequence_num, ignored by ccxt --------------------------------


class CoinbaseSequence(IntegrityHook):
    """Every Advanced Trade frame carries the connection's ``sequence_num`` (all channels:
    subscriptions, heartbeats, l2_data): each must be the previous + 1. One client, hence
    one connection, per market: a gap resyncs that book only."""

    def __init__(self) -> None:
        self._last: int | None = None

    def on_frame(self, message: Any) -> Rejection | None:
        if not isinstance(message, Mapping):
            return None
        seq = message.get("sequence_num")
        if seq is None:
            return None
        if isinstance(seq, bool) or not isinstance(seq, int):
            return ErrorReason.MALFORMED_FRAME, "coinbase frame with a non-integer sequence_num"
        last, self._last = self._last, seq
        if last is not None and seq != last + 1:
            return ErrorReason.SEQUENCE_GAP, f"coinbase sequence_num {seq} after {last}"
        return None


_HOOKS: Mapping[str, Callable[[Any], IntegrityHook]] = {
    "kraken": KrakenChecksum,
    "okx": lambda _exchange: OkxChecksum(),
    "bybit": lambda _exchange: BybitSequence(),
    "coinbase": lambda _exchange: CoinbaseSequence(),
}


def integrity_hook(exchange_id: str, exchange: Any) -> IntegrityHook | None:
    """The hook of one ccxt client of ``exchange_id`` (None: ccxt's own checks only)."""
    make = _HOOKS.get(exchange_id)
    return make(exchange) if make is not None else None
