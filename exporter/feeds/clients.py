"""ccxt.pro client classes with the guards the exporter needs.

- Every inbound text frame is counted (``cryptoarb_feed_messages_total`` counts ccxt handler
  calls, not watch returns, because ccxt coalesces updates).
- A frame that would crash ccxt's handler (bad JSON, missing fields) is counted as
  ``malformed_frame`` and turned into a rejection of the pending watch, so the supervisor
  reconnects at once instead of hanging forever (ccxt's receive loop dies silently).
- Kraken books are verified with the exchange's CRC32 checksum, which ccxt leaves off (and
  crashes when turned on); a mismatch rejects the watch with ``ChecksumError``.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable
from typing import Any

import ccxt.pro
from ccxt.base.errors import ChecksumError, NetworkError

log = logging.getLogger(__name__)


class MalformedFrame(NetworkError):  # type: ignore[misc]
    """A frame ccxt could not handle; the client is rebuilt."""


FrameHook = Callable[[], None]
ErrorHook = Callable[[BaseException], None]


def _guard_client(client: Any, on_frame: FrameHook, on_malformed: ErrorHook) -> None:
    if getattr(client, "_cryptoarb_guarded", False):
        return
    inner = client.handle_text_or_binary_message

    def guarded(data: Any) -> None:
        on_frame()
        try:
            inner(data)
        except Exception as exc:
            on_malformed(exc)
            client.reject(MalformedFrame(f"malformed frame: {type(exc).__name__}: {exc}"))

    client.handle_text_or_binary_message = guarded
    client._cryptoarb_guarded = True


def kraken_checksum_payload(
    asks: Any, bids: Any, fmt_price: Callable[[float], str], fmt_qty: Callable[[float], str]
) -> str:
    """Kraken v2 checksum input: top 10 asks low->high then bids high->low, price then qty,
    each formatted with the market precision, '.' removed, leading zeros stripped."""
    parts: list[str] = []
    for side in (asks, bids):
        for price, qty in list(side)[:10]:
            for text in (fmt_price(price), fmt_qty(qty)):
                parts.append(text.replace(".", "").lstrip("0"))
    return "".join(parts)


def kraken_checksum(
    asks: Any, bids: Any, fmt_price: Callable[[float], str], fmt_qty: Callable[[float], str]
) -> int:
    return binascii.crc32(kraken_checksum_payload(asks, bids, fmt_price, fmt_qty).encode())


def _decimals(precision: Any) -> int:
    """ccxt precision (TICK_SIZE mode: 0.01) -> number of decimals (2)."""
    if precision is None:
        return 8
    p = float(precision)
    if p >= 1:
        return 0
    text = f"{p:.12f}".rstrip("0")
    return len(text.split(".")[1])


class _KrakenChecksumGate:
    """Stands in for the ws Client while ccxt's kraken handler runs, so the checksum is
    verified before the watch is resolved (and the bad book never reaches the exporter)."""

    def __init__(self, client: Any, verify: Callable[[Any], bool], on_mismatch: Callable[[], None]):
        self._client = client
        self._verify = verify
        self._on_mismatch = on_mismatch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def resolve(self, result: Any, message_hash: str) -> Any:
        if self._verify(result):
            return self._client.resolve(result, message_hash)
        self._on_mismatch()
        return self._client.reject(ChecksumError("kraken book checksum mismatch"), message_hash)


def build_exchange(
    exchange_id: str,
    config: dict[str, Any],
    *,
    on_frame: FrameHook,
    on_malformed: ErrorHook,
    on_reconnect: Callable[[], None] | None = None,
) -> Any:
    """Instantiate a guarded ccxt.pro client for one market."""
    base = getattr(ccxt.pro, exchange_id)

    class Guarded(base):  # type: ignore[misc, valid-type]
        _cryptoarb_seen_urls: set[str]

        def client(self, url: str) -> Any:
            fresh = url not in (self.clients or {})
            c = super().client(url)
            if fresh:
                seen = self.__dict__.setdefault("_cryptoarb_seen_urls", set())
                if url in seen and on_reconnect is not None:
                    # ccxt silently reopened a socket it lost between two watches.
                    on_reconnect()
                seen.add(url)
            _guard_client(c, on_frame, on_malformed)
            return c

    if exchange_id == "kraken":

        class GuardedKraken(Guarded):
            checksum_mismatches = 0

            def handle_order_book(self, client: Any, message: dict[str, Any]) -> Any:
                data = message.get("data") or [{}]
                first = data[0] if isinstance(data, list) and data else {}
                expected = first.get("checksum") if isinstance(first, dict) else None
                symbol = first.get("symbol") if isinstance(first, dict) else None
                if expected is None or symbol is None:
                    return super().handle_order_book(client, message)

                def verify(book: Any) -> bool:
                    return self._kraken_book_checksum(symbol, book) == int(expected)

                def mismatch() -> None:
                    # Drop the book so a resubscription starts from a clean snapshot.
                    self.orderbooks.pop(symbol, None)
                    GuardedKraken.checksum_mismatches += 1

                gate = _KrakenChecksumGate(client, verify, mismatch)
                return super().handle_order_book(gate, message)

            def _kraken_book_checksum(self, symbol: str, book: Any) -> int:
                market = self.market(symbol)
                pd = _decimals(market["precision"]["price"])
                ad = _decimals(market["precision"]["amount"])
                # Pre-built format functions: ~2x cheaper than an f-string with a nested spec.
                return kraken_checksum(
                    book["asks"], book["bids"], f"{{:.{pd}f}}".format, f"{{:.{ad}f}}".format
                )

        return GuardedKraken(config)
    return Guarded(config)
