"""Supervised ccxt.pro order-book feeds: one task per (exchange, market).

Each market gets its own ccxt client (markets loaded once per exchange and shared), so a
forced reconnect or a checksum resync touches that book only. The watch has its own
timeout because a crashed ccxt receive loop never wakes the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import ccxt.pro
from ccxt.base import errors as ccxt_errors

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.feeds import profiles
from exporter.feeds.clients import FrameRejected, MalformedFrame, build_exchange, mark_read
from exporter.feeds.guard import SnapshotBudget, retry_after_seconds
from exporter.feeds.levels import LevelCopier
from exporter.feeds.shared_budget import SharedBudget
from exporter.feeds.stats import FeedStats, LatencyHistogram, RateLimitedLog
from exporter.model import BookSnapshot, BookStatus, ErrorReason, MarketInfo

log = logging.getLogger(__name__)


class FeedSink(Protocol):
    """What the feeds report to (the market state, wired by the app)."""

    def on_book(self, snap: BookSnapshot) -> None:
        """A fresh copy of one book, once per ccxt wake-up."""

    def on_status(self, exchange: str, market: str) -> None:
        """The feed's own status changed without a book (disconnect, resync, timeout)."""

    def on_markets(self, exchange: str, markets: Mapping[str, MarketInfo]) -> None:
        """The exchange's markets were loaded: their trading terms."""


@dataclass(frozen=True)
class FeedSettings:
    depth: int
    watch_timeout: float
    backoff_base: float
    backoff_cap: float
    # Silence after which the feed reconnects (the watch times out every watch_timeout).
    resubscribe_after: float = 300.0
    max_price: float = 1e9
    max_quantity: float = 1e12
    # Per-market budget of (re)subscriptions, each of which costs a depth snapshot.
    snapshot_burst: int = 4
    snapshots_per_minute: float = 8.0
    # Longest Retry-After honoured (a longer one is clamped, and logged).
    retry_after_max: float = 600.0
    # The limit passed to ccxt's watch_order_book: "depth" passes ``depth``; None leaves
    # ccxt's default. ExchangeFeeds sets it from the venue's profile (profiles.py).
    ccxt_limit: int | Literal["depth"] | None = "depth"

    @property
    def watch_limit(self) -> int | None:
        return self.depth if self.ccxt_limit == "depth" else self.ccxt_limit


def classify(exc: BaseException) -> ErrorReason:
    """Map a ccxt (or asyncio) error to the fixed reason label set."""
    if isinstance(exc, FrameRejected):
        return exc.reason
    if isinstance(exc, ccxt_errors.ChecksumError):
        return ErrorReason.CHECKSUM
    if isinstance(exc, ccxt_errors.InvalidNonce):
        return ErrorReason.SEQUENCE_GAP
    if isinstance(exc, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection):
        return ErrorReason.RATE_LIMIT
    if isinstance(exc, TimeoutError | ccxt_errors.RequestTimeout):
        return ErrorReason.TIMEOUT
    if isinstance(exc, ccxt_errors.BadSymbol):
        return ErrorReason.UNKNOWN_SYMBOL
    if isinstance(exc, ccxt_errors.NetworkError):
        return ErrorReason.NETWORK
    if isinstance(exc, ccxt_errors.BadResponse):
        return ErrorReason.BAD_VALUE
    if isinstance(exc, ccxt_errors.ExchangeError | ccxt_errors.OperationFailed):
        return ErrorReason.NETWORK  # the exchange refused or failed (e.g. HTTP 5xx, code -1000)
    return ErrorReason.BAD_VALUE


class Backoff:
    """Capped exponential backoff with full jitter, reset after a success."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def _optional_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class RestGate:
    """Exchange-wide pause after a rate-limit answer: a Retry-After (or a 418 ban) is about
    the IP, so every market of the exchange waits, not just the one that was refused."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.not_before = 0.0  # monotonic
        # The REST budget shared by all shards (feeds.shared_rate_limit; set by app.py).
        self.shared: SharedBudget | None = None

    def hold(self, seconds: float) -> None:
        self.not_before = max(self.not_before, self._clock.monotonic() + seconds)

    def delay(self) -> float:
        return max(0.0, self.not_before - self._clock.monotonic())


class MarketFeed:
    """Watches one market forever; owned by the ExchangeFeeds task group."""

    def __init__(
        self,
        exchange_id: str,
        market: str,
        stats: FeedStats,
        latency: LatencyHistogram,
        settings: FeedSettings,
        make_client: Callable[[FeedStats], Any],
        sink: FeedSink,
        warn: RateLimitedLog,
        gate: RestGate | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.exchange_id = exchange_id
        self.market = market
        self.stats = stats
        self.latency = latency
        self.settings = settings
        self._make_client = make_client
        self._sink = sink
        self._warn = warn
        self._clock = clock
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.budget = SnapshotBudget(
            settings.snapshot_burst, settings.snapshots_per_minute, clock=clock.monotonic
        )
        self.gate = gate or RestGate(clock)

    def _set_status(self, status: BookStatus) -> None:
        self.stats.status = status
        self._sink.on_status(self.exchange_id, self.market)

    def _error(self, reason: ErrorReason, exc: BaseException | str, count: bool = True) -> None:
        if count:
            self.stats.errors[reason] += 1
        self.stats.last_error = f"{reason}: {exc}"
        self._warn.warning(
            (self.exchange_id, reason), "%s %s: %s (%s)", self.exchange_id, self.market, reason, exc
        )

    async def _wait_for_budget(self) -> None:
        """Wait for the exchange-wide Retry-After and for a snapshot token (the market's, then
        the exchange's budget shared by all shards, when configured)."""
        while True:
            wait = max(self.gate.delay(), self.budget.delay())
            if wait <= 0 and self.gate.shared is not None:
                wait = await self.gate.shared.try_take()  # the exchange's shared budget
            if wait <= 0:
                self.budget.take()
                return
            await asyncio.sleep(wait)

    async def run(self) -> None:
        first = True
        while True:
            await self._wait_for_budget()
            client = self._make_client(self.stats)
            retry_after: float | None = None
            try:
                if not first:
                    self.stats.reconnects += 1
                first = False
                await self._watch(client)
            except asyncio.CancelledError:
                raise
            except (ccxt_errors.BadSymbol, ccxt_errors.NotSupported) as exc:
                # A configuration problem: retrying cannot help.
                self.stats.config_error = True
                self._set_status(BookStatus.DOWN)
                self._error(ErrorReason.UNKNOWN_SYMBOL, exc)
                log.error("%s %s: not retried: %s", self.exchange_id, self.market, exc)
                return
            except Exception as exc:
                reason = classify(exc)
                # Rejected frames are counted where they are caught (clients.py), a silence when
                # it began (_watch_books).
                self._error(reason, exc, count=not isinstance(exc, FrameRejected | Silent))
                if reason in (ErrorReason.CHECKSUM, ErrorReason.SEQUENCE_GAP):
                    self.stats.resyncs += 1
                    self._set_status(BookStatus.RESYNCING)
                elif isinstance(exc, Silent):
                    # Quiet, not unreachable: a halted or illiquid market must read stale
                    # while it is re-snapshotted, not page as a feed that is down.
                    self._set_status(BookStatus.STALE)
                else:
                    self._set_status(BookStatus.DOWN)
                retry_after = retry_after_seconds(getattr(client, "last_response_headers", None))
            finally:
                await _close_quietly(client)
            delay = self._backoff.next_delay()
            if retry_after is not None:
                honoured = min(retry_after, self.settings.retry_after_max)
                self.gate.hold(honoured)
                delay = max(delay, honoured)
            await asyncio.sleep(delay)

    async def _watch(self, client: Any) -> None:
        s = self.settings
        copy_bids = LevelCopier(s.depth, s.max_price, s.max_quantity)
        copy_asks = LevelCopier(s.depth, s.max_price, s.max_quantity)
        watcher = _Watcher(client, self.market, s.watch_limit, s.watch_timeout)
        try:
            await self._watch_books(client, watcher, copy_bids, copy_asks)
        finally:
            watcher.close()

    async def _watch_books(
        self, client: Any, watcher: _Watcher, copy_bids: LevelCopier, copy_asks: LevelCopier
    ) -> None:
        stats = self.stats
        silent_since: float | None = None
        while True:
            try:
                book = await watcher.next()
            except Silent as exc:
                # A quiet market, not a dead feed: ccxt's keepalive closes a socket that stops
                # answering. Reconnecting (a new client, a REST snapshot) at every timeout
                # cost a quiet exporter most of its CPU; the book reads stale meanwhile and is
                # re-snapshotted only after `resubscribe_after` of silence.
                now = self._clock.monotonic()
                if silent_since is None:
                    silent_since = now - self.settings.watch_timeout
                    self._error(ErrorReason.TIMEOUT, exc)
                if now - silent_since >= self.settings.resubscribe_after or not _socket_open(
                    client
                ):
                    raise Silent(f"no update for {now - silent_since:.0f}s: resubscribing") from exc
                self._set_status(BookStatus.STALE)
                continue
            silent_since = None
            poisoned = getattr(client, "cryptoarb_malformed", None)
            if poisoned is not None:
                # A frame was skipped: the book may miss an update, so rebuild it.
                raise MalformedFrame(f"malformed frame skipped: {poisoned}")
            received_at = self._clock.time()
            mono = self._clock.monotonic()
            mark_read(client)
            try:
                bids = copy_bids.copy(book["bids"])
                asks = copy_asks.copy(book["asks"])
            except (ValueError, TypeError) as exc:
                # The ccxt book holds garbage: count it and rebuild the book from scratch.
                raise _BadBook(str(exc)) from exc
            ts = book.get("timestamp")
            exchange_ts = ts / 1000.0 if isinstance(ts, int | float) else None
            if exchange_ts is not None:
                self.latency.observe(received_at - exchange_ts, received_at)
            snap = BookSnapshot(
                exchange=self.exchange_id,
                symbol=stats.symbol,
                market=self.market,
                bids=bids,
                asks=asks,
                exchange_ts=exchange_ts,
                received_at=received_at,
                received_mono=mono,
                nonce=book.get("nonce"),
            )
            if not bids or not asks:
                stats.status = BookStatus.SYNCING
            else:
                stats.status = BookStatus.CROSSED if snap.crossed else BookStatus.LIVE
                self._backoff.reset()
            self._sink.on_book(snap)


class _Watcher:
    """``watch_order_book`` with a timeout, awaited in the feed's own task.

    A task per watch, woken through a future of its own, cost three more loop iterations
    per message than a bare ccxt loop. The timeout is the one ``asyncio.timeout`` would
    give (the feed task is cancelled and the cancellation turned into :class:`Silent`,
    counted with ``uncancel`` so a shutdown's cancellation is never swallowed), with one
    timer per feed, moved lazily: a watch only records its deadline, and the timer, when it
    fires before the latest deadline, re-arms for it (a timer per watch would cost a heap
    push and leave a cancelled handle in the loop's heap at every message). ccxt's watch
    awaits plain asyncio futures and lets a cancellation through, and the exit path bounds
    the wait for any library task that would not."""

    __slots__ = ("_client", "_deadline", "_expired", "_limit", "_loop", "_market", "_pending",
                 "_task", "_timeout", "_timer")  # fmt: skip

    def __init__(self, client: Any, market: str, limit: int | None, timeout: float) -> None:
        self._client, self._market, self._limit, self._timeout = client, market, limit, timeout
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a feed runs in a task"
        self._task = task
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._pending = False  # a watch is being awaited
        self._expired = False  # the timer cancelled the feed task for this watch

    async def next(self) -> Any:
        self._deadline = self._loop.time() + self._timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
        self._pending = True
        try:
            book = await self._client.watch_order_book(self._market, self._limit)
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._task.uncancel() == 0:  # only the timeout's cancellation
                    raise Silent(f"no update for {self._timeout:g}s") from None
            raise
        finally:
            self._pending = False
        if self._expired:  # the watch swallowed the timeout's cancellation: undo it
            self._expired = False
            self._task.uncancel()
        return book

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if not self._pending or self._expired:
            return  # no watch pending: the next one arms the timer
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._expired = True  # the watch timed out
        self._task.cancel()


def _socket_open(client: Any) -> bool:
    """Whether the ccxt client still holds an open websocket (a closed one: reconnect now)."""
    sockets = getattr(client, "clients", None) or {}
    return any(not ws.closed() for ws in sockets.values())


class Silent(TimeoutError):
    """No update within the watch timeout: a quiet market (the book reads stale on its
    subscription) or, past ``resubscribe_after`` or with the socket closed, a stream to renew
    (the feed reconnects; the book reads stale meanwhile)."""


class _BadBook(ccxt_errors.BadResponse):  # type: ignore[misc]
    pass


_closing: set[asyncio.Task[Any]] = set()


async def _close_quietly(client: Any, timeout: float = 2.0) -> None:
    """Close a ccxt client without ever hanging: ccxt's close() may swallow cancellation,
    which would make ``wait_for`` wait forever, so wait on a separately owned task."""
    task = asyncio.ensure_future(client.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    task.add_done_callback(_consume)
    with contextlib.suppress(Exception):
        await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.cancel()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ExchangeFeeds:
    """All markets of one exchange: loads markets once, then one MarketFeed per market.

    The venue's watch profile (profiles.py) decides the limit passed to ccxt (``depth``
    overrides it: ``exchanges.<id>.depth``) and the ccxt option defaults; both are logged
    at start, and a venue outside the table is logged as unverified."""

    def __init__(
        self,
        exchange_id: str,
        ccxt_config: dict[str, Any],
        markets: dict[str, FeedStats],
        latency: LatencyHistogram,
        settings: FeedSettings,
        sink: FeedSink,
        clock: Clock = SYSTEM_CLOCK,
        depth: int | None = None,
    ) -> None:
        self.exchange_id = exchange_id
        self.ccxt_config = ccxt_config
        self.stats = markets  # market -> stats
        self.latency = latency
        limit = profiles.ccxt_limit(exchange_id, settings.depth, depth)
        self.settings = dataclasses.replace(settings, ccxt_limit=limit)
        describe = profiles.describe_limit(exchange_id, settings.depth, limit)
        if profiles.profile(exchange_id) is None:
            log.warning("%s", describe)
        else:
            log.info("%s", describe)
        if limit is not None and limit < settings.depth:
            log.warning(
                "%s: ccxt limit %d is below feeds.depth %d: the analytics see at most %d levels",
                exchange_id, limit, settings.depth, limit,
            )  # fmt: skip
        self.sink = sink
        self.clock = clock
        self.market_info: dict[str, MarketInfo] = {}
        self.ready = asyncio.Event()
        self._markets: Any = None
        self._currencies: Any = None
        self._warn = RateLimitedLog(log)
        self.gate = RestGate(clock)

    def _client_config(self) -> dict[str, Any]:
        config = profiles.client_config(self.exchange_id, self.ccxt_config)
        config.setdefault("enableRateLimit", True)
        return config

    async def load_markets(self) -> None:
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        while True:
            loader = getattr(ccxt.pro, self.exchange_id)(self._client_config())
            retry_after: float | None = None
            try:
                await loader.load_markets()
                self._markets, self._currencies = loader.markets, loader.currencies
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = classify(exc)
                for market, stats in self.stats.items():
                    stats.errors[reason] += 1
                    stats.status = BookStatus.DOWN
                    self.sink.on_status(self.exchange_id, market)
                self._warn.warning(
                    (self.exchange_id, "load_markets"),
                    "%s: loading markets failed: %s",
                    self.exchange_id,
                    exc,
                )
                # Each attempt uses a fresh client: its headers are this attempt's answer.
                retry_after = retry_after_seconds(getattr(loader, "last_response_headers", None))
            finally:
                await _close_quietly(loader)
            delay = backoff.next_delay()
            if retry_after is not None:
                honoured = min(retry_after, self.settings.retry_after_max)
                self.gate.hold(honoured)
                delay = max(delay, honoured)
            await asyncio.sleep(delay)
        for market, stats in self.stats.items():
            m = self._markets.get(market)
            if m is None:
                stats.status = BookStatus.DOWN
                stats.config_error = True
                self.sink.on_status(self.exchange_id, market)
                stats.errors[ErrorReason.UNKNOWN_SYMBOL] += 1
                log.error("%s: market %s is not listed; not watched", self.exchange_id, market)
                continue
            limits = m.get("limits") or {}
            precision = m.get("precision") or {}
            self.market_info[market] = MarketInfo(
                taker_fee=float(m.get("taker") or 0.0),
                min_cost=float((limits.get("cost") or {}).get("min") or 0.0),
                min_amount=float((limits.get("amount") or {}).get("min") or 0.0),
                price_precision=_optional_float(precision.get("price")),
                amount_precision=_optional_float(precision.get("amount")),
            )
        self.sink.on_markets(self.exchange_id, self.market_info)
        self.ready.set()

    def _make_client(self, stats: FeedStats) -> Any:
        def on_frame() -> None:
            stats.messages += 1

        def on_malformed(exc: BaseException) -> None:
            # Counted here, once per frame; the supervisor then rebuilds the client.
            stats.errors[ErrorReason.MALFORMED_FRAME] += 1
            client.cryptoarb_malformed = f"{type(exc).__name__}: {exc}"
            self._warn.warning(
                (self.exchange_id, ErrorReason.MALFORMED_FRAME),
                "%s %s: malformed frame skipped: %r",
                self.exchange_id,
                stats.market,
                exc,
            )

        def on_rejected(reason: ErrorReason, detail: str) -> None:
            stats.errors[reason] += 1
            if reason is not ErrorReason.UNKNOWN_SYMBOL:
                # The book missed an update. clients.py also rejects the pending watch, but
                # when the frame lands between two watches there is none: rebuild at the
                # next watch return instead (seen as a 5 s wait for a reconnect in tests).
                client.cryptoarb_malformed = f"{reason}: {detail}"
            self._warn.warning(
                (self.exchange_id, reason),
                "%s %s: frame skipped: %s: %s",
                self.exchange_id,
                stats.market,
                reason,
                detail,
            )

        client: Any = None
        client = build_exchange(
            self.exchange_id,
            self._client_config(),
            on_frame=on_frame,
            on_malformed=on_malformed,
            on_rejected=on_rejected,
            max_price=self.settings.max_price,
            max_quantity=self.settings.max_quantity,
        )
        client.set_markets(self._markets, self._currencies)
        return client

    async def run(self) -> None:
        await self.load_markets()
        async with asyncio.TaskGroup() as tg:
            for market, stats in self.stats.items():
                if market not in self.market_info:
                    continue
                feed = MarketFeed(
                    self.exchange_id,
                    market,
                    stats,
                    self.latency,
                    self.settings,
                    self._make_client,
                    self.sink,
                    self._warn,
                    self.gate,
                    self.clock,
                )
                tg.create_task(feed.run(), name=f"feed:{self.exchange_id}:{market}")
