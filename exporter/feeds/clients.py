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
import ssl
from collections.abc import Callable
from typing import Any

import ccxt.pro
from ccxt.base.errors import ChecksumError, NetworkError

from exporter.feeds.guard import FrameCheck, frame_check
from exporter.model import ErrorReason

log = logging.getLogger(__name__)


class FrameRejected(NetworkError):  # type: ignore[misc]
    """A frame was skipped (counted where it was caught); the book is rebuilt."""

    reason = ErrorReason.MALFORMED_FRAME


class MalformedFrame(FrameRejected):
    """A frame ccxt could not handle; the client is rebuilt."""


class BadValueFrame(FrameRejected):
    """A frame with NaN/inf/negative/out-of-bound prices or quantities."""

    reason = ErrorReason.BAD_VALUE


class SocketLost(NetworkError):  # type: ignore[misc]
    """ccxt is about to reopen a socket it lost between two watches: go through the
    supervisor (backoff, snapshot budget) instead."""


FrameHook = Callable[[], None]
ErrorHook = Callable[[BaseException], None]
# (reason, detail) of a frame the input checks refused
RejectHook = Callable[[ErrorReason, str], None]


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


def _with_client_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """ccxt retries a failed depth snapshot 3 times back to back (ignoring Retry-After);
    the supervisor retries instead, with backoff and the snapshot budget."""
    config = dict(config)
    options = dict(config.get("options") or {})
    watch = dict(options.get("watchOrderBook") or {})
    watch.setdefault("maxRetries", 1)
    options["watchOrderBook"] = watch
    # No permessage-deflate by default: market data frames are small, and each compressed
    # socket allocates ~300 KB of zlib state whose churn on every reconnect fragments the
    # heap (RSS kept growing in the soak). `options.ws.compress: 15` turns it back on.
    ws = dict(options.get("ws") or {})
    ws.setdefault("compress", 0)
    options["ws"] = ws
    config["options"] = options
    return config


# (cafile, include_OS_certificates) -> the process-wide context for that trust store
_SSL_CONTEXTS: dict[tuple[str, bool], ssl.SSLContext] = {}


def _share_ssl_context(client: Any) -> None:
    """Give the client the process's SSL context for its trust store, built as ccxt's open()
    would build it. ccxt builds one per instance (the CA bundle parsed into ~1 MB of native
    memory) and a client is rebuilt on every reconnect: the soak showed the heap growing
    with each rebuild, and building it cost ~2 % of the CPU profile."""
    if client.ssl_context is not None or not client.verify:
        return
    include_os = bool(client.safe_bool(client.options, "include_OS_certificates", False))
    key = (str(client.cafile), include_os)
    ctx = _SSL_CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=client.cafile)
        paths = ssl.get_default_verify_paths()
        if include_os and paths.cafile and paths.cafile != client.cafile:
            ctx.load_verify_locations(cafile=paths.cafile)
        _SSL_CONTEXTS[key] = ctx
    client.ssl_context = ctx


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
    on_rejected: RejectHook | None = None,
    max_price: float = 1e9,
    max_quantity: float = 1e12,
) -> Any:
    """Instantiate a guarded ccxt.pro client for one market.

    Frames are checked before ccxt applies them (:mod:`exporter.feeds.guard`): an unknown
    symbol is skipped; a frame with missing fields or bad values is skipped and the pending
    watch rejected, so the supervisor rebuilds the book (it has missed an update)."""
    base = getattr(ccxt.pro, exchange_id)
    config = _with_client_defaults(config)

    class Guarded(base):  # type: ignore[misc, valid-type]
        _cryptoarb_seen_urls: set[str]
        _cryptoarb_check: FrameCheck | None = None

        def client(self, url: str) -> Any:
            fresh = url not in (self.clients or {})
            if fresh:
                seen = self.__dict__.setdefault("_cryptoarb_seen_urls", set())
                if url in seen:
                    # ccxt would silently reopen a socket it lost between two watches.
                    raise SocketLost(f"socket to {url} was lost")
                seen.add(url)
            c = super().client(url)
            _guard_client(c, on_frame, on_malformed)
            return c

        def handle_message(self, client: Any, message: Any) -> Any:
            check = self._cryptoarb_check
            if check is None:
                check = frame_check(exchange_id, self, max_price, max_quantity)
                self._cryptoarb_check = check or (lambda _m: None)
            problem = check(message) if check is not None else None
            if problem is None:
                return super().handle_message(client, message)
            reason, detail = problem
            if on_rejected is not None:
                on_rejected(reason, detail)
            if reason is ErrorReason.UNKNOWN_SYMBOL:
                return None  # not our book: skipping it loses nothing
            exc_type = BadValueFrame if reason is ErrorReason.BAD_VALUE else MalformedFrame
            client.reject(exc_type(f"{reason}: {detail}"))
            return None

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
                decimals = self.__dict__.setdefault("_cryptoarb_decimals", {})
                pd_ad = decimals.get(symbol)
                if pd_ad is None:  # once per symbol: this runs on every message
                    precision = self.market(symbol)["precision"]
                    pd_ad = decimals[symbol] = (
                        _decimals(precision["price"]),
                        _decimals(precision["amount"]),
                    )
                return kraken_checksum(book["asks"], book["bids"], *pd_ad)

        client: Any = GuardedKraken(config)
    else:
        client = Guarded(config)
    _share_ssl_context(client)
    return client
