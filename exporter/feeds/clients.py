"""ccxt.pro client classes with the guards the exporter needs.

- Every inbound text frame is counted (``cryptoarb_feed_messages_total`` counts ccxt handler
  calls, not watch returns, because ccxt coalesces updates).
- A frame that would crash ccxt's handler (bad JSON, missing fields) is counted as
  ``malformed_frame`` and turned into a rejection of the pending watch, so the supervisor
  reconnects at once instead of hanging forever (ccxt's receive loop dies silently).
- Kraken books are verified with the exchange's CRC32 checksum, which ccxt leaves off (and
  crashes when turned on); a mismatch rejects the watch with ``ChecksumError``, which the
  supervisor counts as reason ``checksum``.

One client class per exchange id (the ccxt.pro class under the guard mixins) is built on
first use and cached; the hooks are attributes of each client.
"""

from __future__ import annotations

import binascii
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

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
    # heap (RSS grows steadily under bench/soak.py). `options.ws.compress: 15` turns it back on.
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
    memory) and a client is rebuilt on every reconnect: under bench/soak.py the heap grows
    with each rebuild, and building it costs ~2 % of the CPU profile."""
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


@dataclass(frozen=True)
class ClientHooks:
    """What a guarded client reports to its supervisor, and the bounds of its frame checks."""

    on_frame: FrameHook
    on_malformed: ErrorHook
    on_rejected: RejectHook | None = None
    max_price: float = 1e9
    max_quantity: float = 1e12


class _Guarded(ccxt.pro.Exchange):  # type: ignore[misc]
    """Guard mixin, placed before an exchange's ccxt.pro class by :func:`_guarded_class`:
    counts frames, checks them before ccxt applies them, and refuses to let ccxt reopen a
    lost socket behind the supervisor's back."""

    _cryptoarb_exchange_id: str  # set on each class by _guarded_class

    def __init__(self, config: dict[str, Any], hooks: ClientHooks) -> None:
        super().__init__(config)
        self._cryptoarb_hooks = hooks
        self._cryptoarb_check: FrameCheck | None = None  # built once the markets are loaded
        self._cryptoarb_seen_urls: set[str] = set()

    def client(self, url: str) -> Any:
        if url not in (self.clients or {}):
            if url in self._cryptoarb_seen_urls:
                # ccxt would silently reopen a socket it lost between two watches.
                raise SocketLost(f"socket to {url} was lost")
            self._cryptoarb_seen_urls.add(url)
        c = super().client(url)
        _guard_client(c, self._cryptoarb_hooks.on_frame, self._cryptoarb_hooks.on_malformed)
        return c

    def handle_message(self, client: Any, message: Any) -> Any:
        hooks = self._cryptoarb_hooks
        check = self._cryptoarb_check
        if check is None:
            check = frame_check(
                self._cryptoarb_exchange_id, self, hooks.max_price, hooks.max_quantity
            )
            check = self._cryptoarb_check = check or _no_check
        rejection = check(message)
        if rejection is None:
            return super().handle_message(client, message)
        reason, detail = rejection
        if hooks.on_rejected is not None:
            hooks.on_rejected(reason, detail)
        if reason is ErrorReason.UNKNOWN_SYMBOL:
            return None  # not our book: skipping it loses nothing
        exc_type = BadValueFrame if reason is ErrorReason.BAD_VALUE else MalformedFrame
        client.reject(exc_type(f"{reason}: {detail}"))
        return None


def _no_check(_message: Any) -> None:
    return None


class _GuardedKraken(_Guarded):
    """Kraken: the book checksum is verified before the watch is resolved."""

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


# exchange id -> its guarded client class
_GUARDED_CLASSES: dict[str, type[_Guarded]] = {}


def _guarded_class(exchange_id: str) -> type[_Guarded]:
    """The client class of ``exchange_id``: its ccxt.pro class under the guard mixin (and the
    Kraken checksum for ``kraken``), built on first use."""
    cls = _GUARDED_CLASSES.get(exchange_id)
    if cls is None:
        base = getattr(ccxt.pro, exchange_id)
        mixin = _GuardedKraken if exchange_id == "kraken" else _Guarded
        attrs = {"_cryptoarb_exchange_id": exchange_id}
        cls = cast(type[_Guarded], type(f"Guarded_{exchange_id}", (mixin, base), attrs))
        _GUARDED_CLASSES[exchange_id] = cls
    return cls


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
    hooks = ClientHooks(on_frame, on_malformed, on_rejected, max_price, max_quantity)
    client = _guarded_class(exchange_id)(_with_client_defaults(config), hooks)
    _share_ssl_context(client)
    return client
