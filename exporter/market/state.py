"""MarketState: the in-memory picture every reader (Collector, API, Redis writer) uses.

Feeds call :meth:`MarketState.on_book` once per ccxt wake-up; only the pairs of the book's
symbol are recomputed. :meth:`MarketState.sweep` runs on a timer and applies staleness,
frozen detection and window closing even when no update arrives. Records are immutable
and replaced per key, so a reader never sees a half-updated book or pair.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.analytics.arbitrage import Leg, evaluate, evaluate_pair
from exporter.analytics.book import book_metrics
from exporter.analytics.windows import WindowKey, WindowTracker, window_entry
from exporter.config import Config
from exporter.feeds.stats import FeedStats
from exporter.model import (
    BookMetrics,
    BookSnapshot,
    BookStatus,
    CloseReason,
    ErrorReason,
    Fill,
    PairResult,
    Window,
)

log = logging.getLogger(__name__)

FeedKey = tuple[str, str]  # exchange, market
BookKey = tuple[str, str]  # exchange, canonical symbol
PairKey = tuple[str, str, str]  # symbol, buy_exchange, sell_exchange
FeeLookup = Callable[[str, str], tuple[float, float, float] | None]  # fee, min_cost, min_amount
LogSink = Callable[[dict[str, str | float]], None]


@dataclass(frozen=True, slots=True)
class BookRecord:
    snapshot: BookSnapshot
    metrics: BookMetrics | None  # None when the quote rate is unknown or a side is empty
    rate: float | None
    changed_mono: float  # last time the copied levels changed (frozen detection)


_CLOSE_REASON = {
    BookStatus.STALE: CloseReason.STALE,
    BookStatus.CROSSED: CloseReason.CROSSED,
}


class MarketState:
    def __init__(
        self,
        config: Config,
        feeds: dict[FeedKey, FeedStats],
        fees: FeeLookup,
        append_log: LogSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.feeds = feeds
        self._fees = fees
        self._append_log = append_log
        self._clock = clock
        self.books: dict[BookKey, BookRecord] = {}
        self.conversion: dict[FeedKey, BookSnapshot] = {}
        self.pairs: dict[PairKey, PairResult] = {}
        self.dirty_books: set[BookKey] = set()
        # symbols whose conversion rate moved since their books were last evaluated, with
        # the monotonic time of the first such move
        self._rate_dirty: dict[str, float] = {}
        self._stale: set[FeedKey] = set()  # feeds seen stale by the last sweep
        self.windows = WindowTracker(
            config.windows.open_threshold,
            config.windows.close_threshold,
            config.windows.min_duration_seconds,
            self._window_closed,
        )
        # symbol -> {exchange: market}
        self.symbols = {s: dict(m) for s, m in config.symbols.items()}
        # which symbols need the conversion book (exchange, market) for their rates
        self._conv_users: dict[FeedKey, set[str]] = {}
        for sym, mapping in self.symbols.items():
            for market in mapping.values():
                ref = self._conversion_ref(sym, market)
                if ref is not None:
                    self._conv_users.setdefault(ref, set()).add(sym)
        self.windows.register(self.window_keys())
        # Benchmark hook (off by default): called once the state reflects a snapshot.
        self.on_published: Callable[[BookSnapshot], None] | None = None

    # -- static structure -------------------------------------------------------------
    def pair_keys(self) -> list[PairKey]:
        out = []
        for sym, mapping in self.symbols.items():
            exs = list(mapping)
            out += [(sym, a, b) for a in exs for b in exs if a != b]
        return out

    def window_keys(self) -> list[WindowKey]:
        return [(s, a, b, n) for s, a, b in self.pair_keys() for n in self.config.notionals]

    def _conversion_ref(self, symbol: str, market: str) -> FeedKey | None:
        quote = market.split("/")[1]
        if quote == self.config.canonical_quote(symbol):
            return None
        conv = self.config.quote_conversion[quote]
        return (conv.book.exchange, conv.book.market) if conv.book is not None else None

    # -- status -------------------------------------------------------------------------
    def status(self, exchange: str, market: str, now: float | None = None) -> BookStatus:
        """Effective state: the feed's own view plus staleness and frozen detection."""
        stats = self.feeds[(exchange, market)]
        if stats.status is not BookStatus.LIVE:
            return stats.status
        now = self._clock() if now is None else now
        stale_after = self.config.stale_after(exchange, market)
        if stats.symbol in self.symbols:
            rec = self.books.get((exchange, stats.symbol))
            snap = rec.snapshot if rec else None
        else:
            snap = self.conversion.get((exchange, market))
            rec = None
        if snap is None:
            return BookStatus.SYNCING
        if now - snap.received_mono > stale_after:
            return BookStatus.STALE
        if rec is not None and self._frozen(exchange, stats.symbol, rec, now):
            return BookStatus.STALE
        return BookStatus.LIVE

    def _frozen(self, exchange: str, symbol: str, rec: BookRecord, now: float) -> bool:
        if now - rec.changed_mono <= self.config.feeds.frozen_after:
            return False
        # Frozen only if another exchange's book of the symbol moved meanwhile.
        for other in self.symbols[symbol]:
            orec = self.books.get((other, symbol))
            if other != exchange and orec is not None and orec.changed_mono > rec.changed_mono:
                return True
        return False

    def rate(self, symbol: str, market: str, now: float | None = None) -> float | None:
        """r(q -> C) for a market of ``symbol``; None when its conversion book is not live."""
        quote = market.split("/")[1]
        canon = self.config.canonical_quote(symbol)
        if quote == canon:
            return 1.0
        conv = self.config.quote_conversion[quote]
        if conv.rate is not None:
            return conv.rate
        assert conv.book is not None
        key = (conv.book.exchange, conv.book.market)
        snap = self.conversion.get(key)
        if snap is None or self.status(*key, now=now) is not BookStatus.LIVE:
            return None
        bid, ask = snap.best_bid, snap.best_ask
        if bid is None or ask is None:
            return None
        mid = (bid + ask) / 2
        return mid if conv.book.market.split("/")[0] == quote else 1.0 / mid

    # -- updates -----------------------------------------------------------------------
    def on_book(self, snap: BookSnapshot) -> None:
        if snap.symbol not in self.symbols:
            conv = (snap.exchange, snap.market)
            last = self.conversion.get(conv)
            live = last is not None and self.status(*conv) is BookStatus.LIVE
            self.conversion[conv] = snap
            users = self._conv_users.get(conv, ())
            if last is None or not live:
                # The rate was unknown (first book, back from stale/down): apply it at once.
                for sym in users:
                    self._refresh_symbol(sym, snap.received_at)
            elif (last.best_bid, last.best_ask) != (snap.best_bid, snap.best_ask):
                # A move of a live rate (most updates touch depth only and move nothing).
                # Refreshing every user at once costs ~0.2 ms per symbol (40 ms for 200
                # symbols, at every tick of the conversion book): users pick the rate up at
                # their own next update or at flush_rates().
                now = self._clock()
                for sym in users:
                    self._rate_dirty.setdefault(sym, now)
            if self.on_published is not None:
                self.on_published(snap)
            return
        key = (snap.exchange, snap.symbol)
        prev = self.books.get(key)
        changed = prev is None or prev.snapshot.bids != snap.bids or prev.snapshot.asks != snap.asks
        changed_mono = snap.received_mono if changed or prev is None else prev.changed_mono
        self._store_book(snap, changed_mono)
        if snap.crossed:
            self.feeds[(snap.exchange, snap.market)].errors[ErrorReason.CROSSED] += 1
        if self._rate_dirty.pop(snap.symbol, None) is not None:
            self._refresh_symbol(snap.symbol, snap.received_at, skip=snap.exchange)
        else:
            self._evaluate_symbol(snap.symbol, snap.exchange, snap.received_at)
        if self.on_published is not None:
            self.on_published(snap)

    def _store_book(self, snap: BookSnapshot, changed_mono: float) -> None:
        rate = self.rate(snap.symbol, snap.market)
        metrics = book_metrics(snap, rate, self.config.bands) if rate is not None else None
        self.books[(snap.exchange, snap.symbol)] = BookRecord(snap, metrics, rate, changed_mono)
        self.dirty_books.add((snap.exchange, snap.symbol))

    def _refresh_symbol(self, symbol: str, now_wall: float, skip: str | None = None) -> None:
        """The conversion rate moved: recompute the symbol's books (but ``skip``, stored
        just now) and pairs."""
        for ex in self.symbols[symbol]:
            rec = self.books.get((ex, symbol))
            if rec is not None and ex != skip:
                self._store_book(rec.snapshot, rec.changed_mono)
        self._evaluate_symbol(symbol, None, now_wall)

    def flush_rates(self) -> None:
        """Timer (every half ``feeds.rate_refresh_interval``): apply conversion-rate moves to
        the symbols no book update has refreshed for half that interval, so a quiet symbol
        lags a rate move by at most the interval, and a busy one is never refreshed twice."""
        if not self._rate_dirty:
            return
        cutoff = self._clock() - self.config.feeds.rate_refresh_interval / 2
        due = [sym for sym, since in self._rate_dirty.items() if since <= cutoff]
        wall = time.time()
        for symbol in due:
            del self._rate_dirty[symbol]
            self._refresh_symbol(symbol, wall)

    def _evaluate_symbol(self, symbol: str, changed: str | None, now_wall: float) -> None:
        mapping = self.symbols[symbol]
        for a in mapping:
            for b in mapping:
                if a == b or (changed is not None and changed not in (a, b)):
                    continue
                self._evaluate_pair(symbol, a, b, now_wall)

    def _leg(
        self, exchange: str, symbol: str, now: float, buy: bool
    ) -> tuple[Leg, BookRecord] | None:
        rec = self.books.get((exchange, symbol))
        market = self.symbols[symbol][exchange]
        if rec is None or rec.rate is None:
            return None
        if self.status(exchange, market, now) is not BookStatus.LIVE:
            return None
        fees = self._fees(exchange, market)
        if fees is None:
            return None
        fee, min_cost, min_amount = fees
        levels = rec.snapshot.asks if buy else rec.snapshot.bids
        return Leg(levels, fee, rec.rate, min_cost, min_amount), rec

    def _evaluate_pair(self, symbol: str, a: str, b: str, now_wall: float) -> None:
        key = (symbol, a, b)
        now = self._clock()
        buy = self._leg(a, symbol, now, buy=True)
        sell = self._leg(b, symbol, now, buy=False)
        skew_ok = (
            buy is not None
            and sell is not None
            and abs(buy[1].snapshot.received_mono - sell[1].snapshot.received_mono)
            <= self.config.feeds.max_book_skew
        )
        if buy is None or sell is None or not skew_ok:
            self.pairs.pop(key, None)
            # A book that is not live closes windows with its own reason (stale, crossed,
            # feed_down), not as if the opportunity had merely vanished.
            reason = self._not_live_reason(symbol, (a, b), now)
            for n in self.config.notionals:
                wkey = (symbol, a, b, n)
                if reason is not None and wkey in self.windows.open:
                    self.windows.close(wkey, reason, now_wall)
                else:
                    self.windows.observe(wkey, None, None, now_wall)
            return
        result = evaluate_pair(
            symbol,
            a,
            b,
            buy[0],
            sell[0],
            self.config.notionals,
            transfer_cost=self._transfer_cost(a, symbol),
            rebalance_cost_bps=self.config.execution.rebalance_cost_bps,
            computed_at=now_wall,
        )
        self.pairs[key] = result
        for fill in result.fills:
            self.windows.observe(
                (symbol, a, b, fill.notional), fill.net_roi, fill.net_profit, now_wall
            )

    def _not_live_reason(
        self, symbol: str, exchanges: tuple[str, str], now: float
    ) -> CloseReason | None:
        for ex in exchanges:
            market = self.symbols[symbol][ex]
            st = self.status(ex, market, now)
            if st is not BookStatus.LIVE:
                return _CLOSE_REASON.get(st, CloseReason.FEED_DOWN)
            ref = self._conversion_ref(symbol, market)
            if ref is not None and self.status(*ref, now=now) is not BookStatus.LIVE:
                return CloseReason.STALE
        return None

    def _transfer_cost(self, buy_exchange: str, symbol: str) -> float:
        if self.config.execution.model != "transfer":
            return 0.0
        base = self.symbols[symbol][buy_exchange].split("/")[0]
        return self.config.exchanges[buy_exchange].withdrawal_fees.get(base, 0.0)

    def live_pair(self, key: PairKey, now: float | None = None) -> PairResult | None:
        """The pair's result only while both books (and their conversion books) are live:
        what readers export, so a book that just went down yields nothing even before the
        next sweep."""
        result = self.pairs.get(key)
        if result is None:
            return None
        now = self._clock() if now is None else now
        symbol, a, b = key
        for ex in (a, b):
            market = self.symbols[symbol][ex]
            if self.status(ex, market, now) is not BookStatus.LIVE:
                return None
            ref = self._conversion_ref(symbol, market)
            if ref is not None and self.status(*ref, now=now) is not BookStatus.LIVE:
                return None
        return result

    # -- timer -------------------------------------------------------------------------
    def sweep(self) -> None:
        """Apply staleness/frozen/feed loss: drop pairs and close windows of non-live books."""
        now = self._clock()
        wall = time.time()
        for feed, stats in self.feeds.items():
            # Count each live -> stale (or frozen) transition once.
            stale = self.status(*feed, now=now) is BookStatus.STALE
            if stale and feed not in self._stale:
                stats.errors[ErrorReason.STALE] += 1
                self._stale.add(feed)
            elif not stale:
                self._stale.discard(feed)
        for symbol, mapping in self.symbols.items():
            for ex, market in mapping.items():
                st = self.status(ex, market, now)
                if st is BookStatus.LIVE:
                    continue
                rec = self.books.get((ex, symbol))
                reason = _CLOSE_REASON.get(st, CloseReason.FEED_DOWN)
                end = wall
                if st is BookStatus.STALE and rec is not None:
                    end = min(wall, rec.snapshot.received_at + self.config.stale_after(ex, market))
                self.windows.close_matching(symbol, ex, reason, end)
                for key in [k for k in self.pairs if k[0] == symbol and ex in k[1:]]:
                    del self.pairs[key]
        # Conversion books going stale stop every opportunity that needs them.
        for (ex, market), users in self._conv_users.items():
            if self.status(ex, market, now) is BookStatus.LIVE:
                continue
            for symbol in users:
                for key in [k for k in self.pairs if k[0] == symbol]:
                    del self.pairs[key]
                for k in [k for k in self.windows.open if k[0] == symbol]:
                    self.windows.close(k, CloseReason.STALE, wall)

    def close_all(self, reason: CloseReason) -> list[Window]:
        return self.windows.close_all(reason, time.time())

    def _window_closed(self, window: Window, logged: bool) -> None:
        if logged:
            self._append_log(window_entry(window))

    # -- on demand (JSON API) -----------------------------------------------------------
    def evaluate_notional(self, symbol: str, a: str, b: str, notional: float) -> Fill | None:
        """Net profit of buying ``notional`` on ``a`` and selling on ``b`` from the live books
        now, exactly as the exported opportunities; None when no opportunity exists."""
        now = self._clock()
        buy = self._leg(a, symbol, now, buy=True)
        sell = self._leg(b, symbol, now, buy=False)
        if buy is None or sell is None:
            return None
        skew = abs(buy[1].snapshot.received_mono - sell[1].snapshot.received_mono)
        if skew > self.config.feeds.max_book_skew:
            return None
        return evaluate(
            buy[0],
            sell[0],
            notional,
            transfer_cost=self._transfer_cost(a, symbol),
            rebalance_cost_bps=self.config.execution.rebalance_cost_bps,
        )
