"""ccxt.pro client classes with the guards the exporter needs.

- Every inbound text frame is counted (``cryptoarb_feed_messages_total`` counts ccxt handler
  calls, not watch returns, because ccxt coalesces updates).
- A frame that would crash ccxt's handler (bad JSON, missing fields) is counted as
  ``malformed_frame`` and turned into a rejection of the pending watch, so the supervisor
  reconnects at once instead of hanging forever (ccxt's receive loop dies silently).
- The venue's integrity hook (:mod:`exporter.feeds.integrity`: Kraken and OKX checksums,
  Bybit and Coinbase sequence numbers) sees every frame before ccxt applies it and every
  book ccxt resolves before the watch returns it; a failure rejects the watch with
  ``ChecksumError``/``InvalidNonce`` (reasons ``checksum``/``sequence_gap``), ignores the
  client's later frames and makes every later watch of that client raise it too, so the
  supervisor resyncs that book only.
- Coinbase clients also subscribe the ``heartbeats`` channel on the book's connection:
  Coinbase closes level2 subscriptions that see no update otherwise.

One client class per exchange id (the ccxt.pro class under the guard mixin) is built on
first use and cached; the hooks are attributes of each client.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import ccxt.pro
from ccxt.base.errors import NetworkError

from exporter.feeds.guard import FrameCheck, Rejection, frame_check
from exporter.feeds.integrity import IntegrityHook, failure, integrity_hook
from exporter.feeds.levels import tracked_order_book
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


def _guard_client(
    client: Any, exchange: _Guarded, on_frame: FrameHook, on_malformed: ErrorHook
) -> None:
    if getattr(client, "_cryptoarb_guarded", False):
        return
    inner = client.handle_text_or_binary_message
    resolve = client.resolve

    def resolve_or_keep(result: Any, message_hash: Any = None) -> Any:
        # ccxt drops a resolve that no watch awaits: a book update landing between two
        # watches would reach the exporter only with the next update, never if the market
        # then goes quiet. Remember it, so the next watch returns the book at once.
        if message_hash not in client.futures and isinstance(result, dict) and "bids" in result:
            exchange._cryptoarb_unseen = True
        return resolve(result, message_hash)

    def guarded(data: Any) -> None:
        on_frame()
        try:
            inner(data)
        except Exception as exc:
            on_malformed(exc)
            client.reject(MalformedFrame(f"malformed frame: {type(exc).__name__}: {exc}"))

    client.handle_text_or_binary_message = guarded
    client.resolve = resolve_or_keep
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


@dataclass(frozen=True)
class ClientHooks:
    """What a guarded client reports to its supervisor, and the bounds of its frame checks."""

    on_frame: FrameHook
    on_malformed: ErrorHook
    on_rejected: RejectHook | None = None
    max_price: float = 1e9
    max_quantity: float = 1e12


_INTEGRITY_REASONS = (ErrorReason.CHECKSUM, ErrorReason.SEQUENCE_GAP)


class _BookGate:
    """Stands in for the ws Client while ccxt's ``handle_order_book`` runs, so the integrity
    hook sees each book ccxt built before the watch is resolved with it (a bad book never
    reaches the exporter). Everything else is the real client's."""

    def __init__(self, client: Any, exchange: _Guarded, message: Any) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_exchange", exchange)
        object.__setattr__(self, "_message", message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._client, name, value)

    def resolve(self, result: Any, message_hash: Any = None) -> Any:
        exchange = self._exchange
        if exchange._cryptoarb_failure is not None:
            return result  # this client is being rebuilt: nothing more reaches a watch
        hook = exchange._cryptoarb_integrity
        if hook is not None and isinstance(result, dict) and "bids" in result and "asks" in result:
            rejection = hook.on_book(self._message, result)
            if rejection is not None:
                exchange._cryptoarb_reject(self._client, rejection)
                return result
        return self._client.resolve(result, message_hash)


class _Guarded(ccxt.pro.Exchange):  # type: ignore[misc]
    """Guard mixin, placed before an exchange's ccxt.pro class by :func:`_guarded_class`:
    counts frames, checks them before ccxt applies them, runs the venue's integrity hook,
    and refuses to let ccxt reopen a lost socket behind the supervisor's back."""

    _cryptoarb_exchange_id: str  # set on each class by _guarded_class

    def __init__(self, config: dict[str, Any], hooks: ClientHooks) -> None:
        super().__init__(config)
        self._cryptoarb_hooks = hooks
        self._cryptoarb_check: FrameCheck | None = None  # built once the markets are loaded
        self._cryptoarb_seen_urls: set[str] = set()
        self._cryptoarb_integrity: IntegrityHook | None = integrity_hook(
            self._cryptoarb_exchange_id, self
        )
        # The integrity failure every later watch of this client raises (set once).
        self._cryptoarb_failure: Exception | None = None
        # The cached book changed while no watch was pending, after the caller's last read.
        self._cryptoarb_unseen = False

    def client(self, url: str) -> Any:
        if url not in (self.clients or {}):
            if url in self._cryptoarb_seen_urls:
                # ccxt would silently reopen a socket it lost between two watches.
                raise SocketLost(f"socket to {url} was lost")
            self._cryptoarb_seen_urls.add(url)
        c = super().client(url)
        _guard_client(c, self, self._cryptoarb_hooks.on_frame, self._cryptoarb_hooks.on_malformed)
        return c

    async def watch_order_book(self, symbol: str, limit: Any = None, params: Any = None) -> Any:
        """ccxt's watch, raising this client's integrity failure (also one that happened
        while no watch was pending: ccxt would otherwise hand out the book it gave up on)."""
        if self._cryptoarb_failure is not None:
            raise self._cryptoarb_failure
        if self._cryptoarb_unseen:
            # Checked in the same step that registers ccxt's future below: an update lands
            # either before it (returned here) or after (resolves the future).
            self._cryptoarb_unseen = False
            book = (self.orderbooks or {}).get(self.symbol(symbol))
            if book is not None:
                return book.limit()
        book = await super().watch_order_book(symbol, limit, params or {})
        if self._cryptoarb_failure is not None:
            raise self._cryptoarb_failure
        return book

    def order_book(self, snapshot: Any = None, depth: int | None = None) -> Any:
        """Books whose sides log their changes, so the feed's copy is patched, not rebuilt."""
        return tracked_order_book(snapshot, depth)

    def handle_message(self, client: Any, message: Any) -> Any:
        if self._cryptoarb_failure is not None:
            return None  # being rebuilt: the book is given up, later frames change nothing
        hooks = self._cryptoarb_hooks
        check = self._cryptoarb_check
        if check is None:
            check = frame_check(
                self._cryptoarb_exchange_id, self, hooks.max_price, hooks.max_quantity
            )
            check = self._cryptoarb_check = check or _no_check
        rejection = check(message)
        if rejection is None and self._cryptoarb_integrity is not None:
            rejection = self._cryptoarb_integrity.on_frame(message)
        if rejection is None:
            return super().handle_message(client, message)
        self._cryptoarb_reject(client, rejection)
        return None

    def handle_order_book(self, client: Any, message: Any) -> Any:
        hook = self._cryptoarb_integrity
        if hook is not None and hook.checks_books:
            client = _BookGate(client, self, message)
        return super().handle_order_book(client, message)

    def _cryptoarb_reject(self, client: Any, rejection: Rejection) -> None:
        """Refuse a frame (or the book it built): count it, reject the pending watch."""
        reason, detail = rejection
        if reason in _INTEGRITY_REASONS:
            # Counted by the supervisor when the watch raises (once per client).
            self._cryptoarb_failure = exc = failure(rejection)
            client.reject(exc)
            return
        hooks = self._cryptoarb_hooks
        if hooks.on_rejected is not None:
            hooks.on_rejected(reason, detail)
        if reason is ErrorReason.UNKNOWN_SYMBOL:
            return  # not our book: skipping it loses nothing
        exc_type = BadValueFrame if reason is ErrorReason.BAD_VALUE else MalformedFrame
        client.reject(exc_type(f"{reason}: {detail}"))


def mark_read(client: Any) -> None:
    """The caller is about to copy the client's book, so the book holds every update applied
    so far: an update that landed while no watch was pending is read with it and must not
    make the next watch return the same book again."""
    if getattr(client, "_cryptoarb_unseen", False):
        client._cryptoarb_unseen = False


def _no_check(_message: Any) -> None:
    return None


class _GuardedCoinbase(_Guarded):
    """Coinbase closes a level2 subscription that sees no update for a while unless the
    connection also subscribes ``heartbeats``; ccxt has no watch for it, so the subscribe
    message goes out on the book's connection before the first book watch."""

    _cryptoarb_heartbeats = False

    async def watch_order_book(self, symbol: str, limit: Any = None, params: Any = None) -> Any:
        if not self._cryptoarb_heartbeats:
            self._cryptoarb_heartbeats = True
            if self.markets is None:
                await self.load_markets()
            request = {
                "type": "subscribe",
                "product_ids": [self.market(symbol)["id"]],
                "channel": "heartbeats",
            }
            # Never resolved (ccxt's heartbeat handler resolves nothing); rejected when the
            # client closes or fails, which _consume swallows.
            future = self.watch(self.urls["api"]["ws"], "heartbeats", request, "heartbeats")
            future.add_done_callback(_consume)
        return await super().watch_order_book(symbol, limit, params)


def _consume(future: Any) -> None:
    if not future.cancelled():
        future.exception()


# exchange id -> the mixin placed before its ccxt.pro class
_MIXINS: dict[str, type[_Guarded]] = {"coinbase": _GuardedCoinbase}

# exchange id -> its guarded client class
_GUARDED_CLASSES: dict[str, type[_Guarded]] = {}


def _guarded_class(exchange_id: str) -> type[_Guarded]:
    """The client class of ``exchange_id``: its ccxt.pro class under the guard mixin (the
    venue's integrity hook is chosen per client), built on first use."""
    cls = _GUARDED_CLASSES.get(exchange_id)
    if cls is None:
        base = getattr(ccxt.pro, exchange_id)
        mixin = _MIXINS.get(exchange_id, _Guarded)
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
