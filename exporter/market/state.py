"""MarketState: the single read model of books, pairs and windows.

A book's status is decided here and stored: once per update (:meth:`on_book`), once per feed
event (:meth:`on_feed_status`, e.g. a disconnect) and once per :meth:`sweep`. A live book
also stores the monotonic deadline at which it turns stale without a new update, so every
reader (the Collector, the JSON API, the intelligence timer, the Redis publisher) sees a book
go stale at the same instant through the same views (:meth:`status`, :meth:`live_pairs`,
:meth:`live_book`, :meth:`books`, :meth:`take_dirty`) even before the next sweep.

Records are immutable and replaced per key, so a reader never sees a half-updated book or
pair. Time comes from the injected :class:`~exporter.clock.Clock`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from exporter.analytics.arbitrage import Leg, evaluate, evaluate_pair_reach
from exporter.analytics.book import book_metrics
from exporter.analytics.windows import WindowKey, WindowTracker, window_entry
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.feeds.stats import FeedStats
from exporter.market.fees import FeeTable
from exporter.market.status import BookStatuses
from exporter.model import (
    BookKey,
    BookMetrics,
    BookSnapshot,
    BookStatus,
    CloseReason,
    ErrorReason,
    FeedKey,
    Fill,
    Level,
    LogSink,
    MarketInfo,
    PairKey,
    PairResult,
    Window,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BookRecord:
    snapshot: BookSnapshot
    metrics: BookMetrics | None  # None when the quote rate is unknown or a side is empty
    rate: float | None
    changed_mono: float  # last time the copied levels changed (frozen detection)
    terms: MarketInfo | None  # fee and minimum sizes from the fee table, None before markets


@dataclass(frozen=True, slots=True)
class BookView:
    """One configured book as readers see it: its status now and its latest record."""

    exchange: str
    symbol: str
    market: str
    status: BookStatus
    record: BookRecord | None


@dataclass(frozen=True, slots=True)
class _Evaluated:
    """A pair's last evaluation with everything it read: the levels (up to ``reach_*``
    of them, see ``evaluate_pair_reach``) and the legs' terms and rates."""

    asks: tuple[Level, ...]
    bids: tuple[Level, ...]
    reach_a: int
    reach_b: int
    buy_terms: tuple[float, float, float, float]  # fee, rate, min_cost, min_amount
    sell_terms: tuple[float, float, float, float]
    result: PairResult

    def still_valid(
        self,
        asks: tuple[Level, ...],
        bids: tuple[Level, ...],
        buy_terms: tuple[float, float, float, float],
        sell_terms: tuple[float, float, float, float],
    ) -> bool:
        """Nothing the evaluation read has changed: its result stands as it is."""
        ra, rb = self.reach_a, self.reach_b
        return (
            buy_terms == self.buy_terms
            and sell_terms == self.sell_terms
            and (asks is self.asks or asks[:ra] == self.asks[:ra])
            and (bids is self.bids or bids[:rb] == self.bids[:rb])
        )


_CLOSE_REASON = {
    BookStatus.STALE: CloseReason.STALE,
    BookStatus.CROSSED: CloseReason.CROSSED,
}


class MarketState:
    def __init__(
        self,
        config: Config,
        feeds: Mapping[FeedKey, FeedStats],
        fees: FeeTable,
        sink: LogSink,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.feeds = feeds
        self.fees = fees
        self._sink = sink
        self.clock = clock
        self._records: dict[BookKey, BookRecord] = {}
        self._conversion: dict[FeedKey, BookSnapshot] = {}
        self._pairs: dict[PairKey, PairResult] = {}
        self._dirty: set[BookKey] = set()
        self._published: dict[BookKey, BookStatus] = {}  # status last handed to the publisher
        # decided status per feed and, for a live one, when it turns stale without updates
        self._statuses = BookStatuses(config, feeds)
        # symbols whose conversion rate moved since their books were last evaluated, with
        # the monotonic time of the first such move
        self._rate_dirty: dict[str, float] = {}
        self._fees_version = -1
        self.windows = WindowTracker(
            config.windows.open_threshold,
            config.windows.close_threshold,
            config.windows.min_duration_seconds,
            self._window_closed,
        )
        # symbol -> {exchange: market}
        self.symbols = {s: dict(m) for s, m in config.symbols.items()}
        self._feed_of = {
            BookKey((ex, s)): FeedKey((ex, m))
            for s, mp in self.symbols.items()
            for ex, m in mp.items()
        }
        # which symbols need the conversion book (exchange, market) for their rates, and
        # which conversion book each book needs (None: its quote is the canonical one)
        self._conv_users: dict[FeedKey, set[str]] = {}
        self._conv_of: dict[BookKey, FeedKey | None] = {}
        for sym, mapping in self.symbols.items():
            for ex, market in mapping.items():
                ref = self._conversion_ref(sym, market)
                self._conv_of[BookKey((ex, sym))] = ref
                if ref is not None:
                    self._conv_users.setdefault(ref, set()).add(sym)
        # the evaluated routes (`routes.allow`; every ordered pair by default)
        self._pair_keys = [(s, a, b) for s in self.symbols for a, b in config.routes_for(s)]
        self._routes_of: dict[str, list[tuple[str, str]]] = {
            s: config.routes_for(s) for s in self.symbols
        }
        # Per-pair constants and each pair's last evaluation (re-evaluated only when
        # something it read changed).
        self._transfer: dict[PairKey, float] = {
            k: self._transfer_cost(k[1], k[0]) for k in self._pair_keys
        }
        self._evaluated: dict[PairKey, _Evaluated] = {}
        self._rate_src: dict[tuple[str, str], float | tuple[FeedKey, bool]] = {}
        self._notionals = tuple(config.notionals)
        self._bands = tuple(config.bands)
        self.windows.register(self.window_keys())
        # Benchmark hook (off by default): called once the state reflects a snapshot.
        self.on_published: Callable[[BookSnapshot], None] | None = None

    # -- static structure -------------------------------------------------------------
    def pair_keys(self) -> list[PairKey]:
        return list(self._pair_keys)

    def window_keys(self) -> list[WindowKey]:
        return [(s, a, b, n) for s, a, b in self._pair_keys for n in self.config.notionals]

    def _conversion_ref(self, symbol: str, market: str) -> FeedKey | None:
        quote = market.split("/")[1]
        if quote == self.config.canonical_quote(symbol):
            return None
        conv = self.config.quote_conversion[quote]
        return FeedKey((conv.book.exchange, conv.book.market)) if conv.book is not None else None

    # -- views (every reader) ------------------------------------------------------------
    def status(self, exchange: str, market: str, now: float | None = None) -> BookStatus:
        """The stored status, read against the live book's deadline (no recomputation)."""
        now = self.clock.monotonic() if now is None else now
        return self._statuses.read(FeedKey((exchange, market)), now)

    def _live(self, feed: FeedKey, now: float) -> bool:
        return self._statuses.live(feed, now)

    def _book_live(self, key: BookKey, now: float) -> bool:
        """The book and the conversion book its rate needs are live."""
        conv = self._conv_of[key]
        return self._live(self._feed_of[key], now) and (conv is None or self._live(conv, now))

    def live_pair(self, key: PairKey, now: float | None = None) -> PairResult | None:
        """The pair's result while both books (and their conversion books) are live."""
        result = self._pairs.get(key)
        if result is None:
            return None
        now = self.clock.monotonic() if now is None else now
        symbol, a, b = key
        if self._book_live(BookKey((a, symbol)), now) and self._book_live(
            BookKey((b, symbol)), now
        ):
            return result
        return None

    def live_pairs(
        self, symbol: str | None = None, now: float | None = None
    ) -> Iterator[tuple[PairKey, PairResult]]:
        """Live pairs in configuration order (of ``symbol`` only, when given)."""
        now = self.clock.monotonic() if now is None else now
        for key in self._pair_keys:
            if symbol is None or key[0] == symbol:
                result = self.live_pair(key, now)
                if result is not None:
                    yield key, result

    def record(self, exchange: str, symbol: str) -> BookRecord | None:
        """The latest record of a book, whatever its status."""
        return self._records.get(BookKey((exchange, symbol)))

    def snapshot(self, exchange: str, market: str) -> BookSnapshot | None:
        """The latest copy of any watched book, conversion books included."""
        symbol = self.feeds[FeedKey((exchange, market))].symbol
        rec = self._records.get(BookKey((exchange, symbol)))
        return (
            rec.snapshot if rec is not None else self._conversion.get(FeedKey((exchange, market)))
        )

    def conversion_of(self, exchange: str, symbol: str) -> FeedKey | None:
        """The conversion book a book's rate needs (None: its quote is the canonical one or
        has a fixed rate)."""
        return self._conv_of[BookKey((exchange, symbol))]

    def book_live(self, exchange: str, symbol: str, now: float | None = None) -> bool:
        """The book and the conversion book its rate needs are live."""
        now = self.clock.monotonic() if now is None else now
        return self._book_live(BookKey((exchange, symbol)), now)

    def live_book(self, exchange: str, symbol: str, now: float | None = None) -> BookRecord | None:
        """The book's record while it is live and has metrics (its rate is known)."""
        key = BookKey((exchange, symbol))
        rec = self._records.get(key)
        if rec is None or rec.metrics is None or rec.rate is None:
            return None
        now = self.clock.monotonic() if now is None else now
        return rec if self._live(self._feed_of[key], now) else None

    def books(self, now: float | None = None) -> Iterator[BookView]:
        """Every configured book of every symbol, in configuration order."""
        now = self.clock.monotonic() if now is None else now
        for symbol, mapping in self.symbols.items():
            for ex, market in mapping.items():
                yield BookView(
                    ex, symbol, market, self.status(ex, market, now), self.record(ex, symbol)
                )

    def feed_statuses(self, now: float | None = None) -> dict[FeedKey, BookStatus]:
        """Status of every watched book, conversion books included."""
        now = self.clock.monotonic() if now is None else now
        return {k: self.status(*k, now=now) for k in self.feeds}

    def live_symbols(self, now: float | None = None) -> set[str]:
        now = self.clock.monotonic() if now is None else now
        return {
            s
            for s, mapping in self.symbols.items()
            if any(self._live(FeedKey((ex, m)), now) for ex, m in mapping.items())
        }

    def take_dirty(self, now: float | None = None) -> list[BookView]:
        """Books that changed, or whose status changed, since the last call (the publisher)."""
        now = self.clock.monotonic() if now is None else now
        out: list[BookView] = []
        for view in self.books(now):
            key = BookKey((view.exchange, view.symbol))
            if key in self._dirty or self._published.get(key) is not view.status:
                self._published[key] = view.status
                if view.record is not None:
                    out.append(view)
        self._dirty.clear()
        return out

    def rate(self, symbol: str, market: str, now: float | None = None) -> float | None:
        """r(q -> C) for a market of ``symbol``; None when its conversion book is not live."""
        src = self._rate_src.get((symbol, market))
        if src is None:
            src = self._rate_src[(symbol, market)] = self._rate_source(symbol, market)
        if isinstance(src, float):
            return src
        key, direct = src
        snap = self._conversion.get(key)
        now = self.clock.monotonic() if now is None else now
        if snap is None or not self._live(key, now):
            return None
        bid, ask = snap.best_bid, snap.best_ask
        if bid is None or ask is None:
            return None
        mid = (bid + ask) / 2
        return mid if direct else 1.0 / mid

    def _rate_source(self, symbol: str, market: str) -> float | tuple[FeedKey, bool]:
        """Where a market's rate comes from, resolved once: a fixed rate (1.0 for the
        canonical quote), or the conversion book and whether its mid is the rate itself
        (its base is the market's quote) or the inverse."""
        quote = market.split("/")[1]
        if quote == self.config.canonical_quote(symbol):
            return 1.0
        conv = self.config.quote_conversion[quote]
        if conv.rate is not None:
            return conv.rate
        assert conv.book is not None
        key = FeedKey((conv.book.exchange, conv.book.market))
        return key, conv.book.market.split("/")[0] == quote

    # -- status decisions ----------------------------------------------------------------
    def _decide(self, feed: FeedKey, now: float) -> BookStatus:
        """Decide and store a book's status (the only place it is decided)."""
        rec = self._records.get(BookKey((feed[0], self.feeds[feed].symbol)))
        snap = rec.snapshot if rec is not None else self._conversion.get(feed)
        frozen = rec is not None and self._frozen(feed[0], rec, now)
        return self._statuses.decide(feed, snap, frozen, now)

    def _frozen(self, exchange: str, rec: BookRecord, now: float) -> bool:
        if now - rec.changed_mono <= self.config.feeds.frozen_after:
            return False
        # Frozen only if another exchange's book of the symbol moved meanwhile.
        symbol = rec.snapshot.symbol
        for other in self.symbols[symbol]:
            orec = self._records.get(BookKey((other, symbol)))
            if other != exchange and orec is not None and orec.changed_mono > rec.changed_mono:
                return True
        return False

    def on_feed_status(self, exchange: str, market: str) -> None:
        """The feed changed its own status (disconnect, resync, timeout): decide at once."""
        feed = FeedKey((exchange, market))
        now = self.clock.monotonic()
        if self._decide(feed, now) is not BookStatus.LIVE:
            self._retire(feed, self._statuses.read(feed, now), now, self.clock.time())

    # -- updates -----------------------------------------------------------------------
    def on_book(self, snap: BookSnapshot) -> None:
        now = self.clock.monotonic()
        feed = FeedKey((snap.exchange, snap.market))
        if self.fees.version != self._fees_version:
            self._reload_fees()
        if snap.symbol not in self.symbols:
            self._on_conversion_book(feed, snap, now)
        else:
            key = BookKey((snap.exchange, snap.symbol))
            prev = self._records.get(key)
            changed = (
                prev is None or prev.snapshot.bids != snap.bids or prev.snapshot.asks != snap.asks
            )
            changed_mono = snap.received_mono if changed or prev is None else prev.changed_mono
            self._store_book(snap, changed_mono, now, same_levels=not changed)
            st = self._decide(feed, now)
            if snap.crossed:
                self.feeds[feed].errors[ErrorReason.CROSSED] += 1
            if st is not BookStatus.LIVE:
                self._retire(feed, st, now, snap.received_at)
            elif self._rate_dirty.pop(snap.symbol, None) is not None:
                self._refresh_symbol(snap.symbol, snap.received_at, now, skip=snap.exchange)
            else:
                self._evaluate_symbol(snap.symbol, snap.exchange, snap.received_at, now)
        if self.on_published is not None:
            self.on_published(snap)

    def _on_conversion_book(self, feed: FeedKey, snap: BookSnapshot, now: float) -> None:
        last = self._conversion.get(feed)
        was_live = last is not None and self._live(feed, now)
        self._conversion[feed] = snap
        st = self._decide(feed, now)
        if st is not BookStatus.LIVE:
            self._retire(feed, st, now, snap.received_at)
            return
        users = self._conv_users.get(feed, ())
        if last is None or not was_live:
            # The rate was unknown (first book, back from stale/down): apply it at once.
            for sym in users:
                self._refresh_symbol(sym, snap.received_at, now)
        elif (last.best_bid, last.best_ask) != (snap.best_bid, snap.best_ask):
            # A move of a live rate (most updates touch depth only and move nothing).
            # Refreshing every user at once costs ~0.2 ms per symbol (40 ms for 200
            # symbols, at every tick of the conversion book): users pick the rate up at
            # their own next update or at flush_rates().
            for sym in users:
                self._rate_dirty.setdefault(sym, now)

    def _store_book(
        self, snap: BookSnapshot, changed_mono: float, now: float, same_levels: bool = False
    ) -> None:
        """Store a book's record; ``same_levels``: the previous record holds the same levels."""
        key = BookKey((snap.exchange, snap.symbol))
        rate = self.rate(snap.symbol, snap.market, now)
        terms = self.fees.get(*self._feed_of[key])
        prev = self._records.get(key)
        if prev is not None and prev.rate == rate and prev.terms == terms:
            if prev.snapshot is snap and prev.changed_mono == changed_mono:
                # A conversion-rate refresh of a book whose rate did not move: the same record.
                self._dirty.add(key)
                return
            if same_levels or prev.snapshot is snap:
                metrics = prev.metrics  # the same levels at the same rate
            else:
                metrics = book_metrics(snap, rate, self._bands) if rate is not None else None
        else:
            metrics = book_metrics(snap, rate, self._bands) if rate is not None else None
        self._records[key] = BookRecord(snap, metrics, rate, changed_mono, terms)
        self._dirty.add(key)

    def _reload_fees(self) -> None:
        """The fee table changed (markets loaded or reloaded): give every record its terms."""
        self._fees_version = self.fees.version
        for key, rec in self._records.items():
            terms = self.fees.get(*self._feed_of[key])
            if terms != rec.terms:
                self._records[key] = BookRecord(
                    rec.snapshot, rec.metrics, rec.rate, rec.changed_mono, terms
                )

    def _refresh_symbol(
        self, symbol: str, now_wall: float, now: float, skip: str | None = None
    ) -> None:
        """The conversion rate moved: recompute the symbol's books (but ``skip``, stored
        just now) and pairs."""
        for ex in self.symbols[symbol]:
            rec = self._records.get(BookKey((ex, symbol)))
            if rec is not None and ex != skip:
                self._store_book(rec.snapshot, rec.changed_mono, now)
        self._evaluate_symbol(symbol, None, now_wall, now)

    def flush_rates(self) -> None:
        """Timer (every half ``feeds.rate_refresh_interval``): apply conversion-rate moves to
        the symbols no book update has refreshed for half that interval, so a quiet symbol
        lags a rate move by at most the interval, and a busy one is never refreshed twice."""
        if not self._rate_dirty:
            return
        now = self.clock.monotonic()
        cutoff = now - self.config.feeds.rate_refresh_interval / 2
        due = [sym for sym, since in self._rate_dirty.items() if since <= cutoff]
        wall = self.clock.time()
        for symbol in due:
            del self._rate_dirty[symbol]
            self._refresh_symbol(symbol, wall, now)

    def _evaluate_symbol(
        self, symbol: str, changed: str | None, now_wall: float, now: float
    ) -> None:
        for a, b in self._routes_of[symbol]:
            if changed is None or changed in (a, b):
                self._evaluate_pair(symbol, a, b, now_wall, now)

    def _leg(
        self, exchange: str, symbol: str, now: float, buy: bool
    ) -> tuple[Leg, BookRecord] | None:
        key = BookKey((exchange, symbol))
        rec = self._records.get(key)
        if rec is None or rec.rate is None or rec.terms is None or not self._book_live(key, now):
            return None
        t = rec.terms
        levels = rec.snapshot.asks if buy else rec.snapshot.bids
        return Leg(levels, t.taker_fee, rec.rate, t.min_cost, t.min_amount), rec

    def _legs(self, symbol: str, a: str, b: str, now: float) -> tuple[Leg, Leg] | None:
        """Buy leg on ``a`` and sell leg on ``b`` when both books are live, have terms and
        lie within ``max_book_skew`` of each other."""
        buy = self._leg(a, symbol, now, buy=True)
        sell = self._leg(b, symbol, now, buy=False)
        if buy is None or sell is None:
            return None
        skew = abs(buy[1].snapshot.received_mono - sell[1].snapshot.received_mono)
        if skew > self.config.feeds.max_book_skew:
            return None
        return buy[0], sell[0]

    def _live_record(self, exchange: str, symbol: str, now: float) -> BookRecord | None:
        """The book's record when it can be a leg: live, with a rate and terms."""
        key = BookKey((exchange, symbol))
        rec = self._records.get(key)
        if rec is None or rec.rate is None or rec.terms is None or not self._book_live(key, now):
            return None
        return rec

    def _evaluate_pair(self, symbol: str, a: str, b: str, now_wall: float, now: float) -> None:
        key = (symbol, a, b)
        buy = self._live_record(a, symbol, now)
        sell = self._live_record(b, symbol, now) if buy is not None else None
        if (
            buy is None
            or sell is None
            or abs(buy.snapshot.received_mono - sell.snapshot.received_mono)
            > self.config.feeds.max_book_skew
        ):
            self._pairs.pop(key, None)
            self._evaluated.pop(key, None)
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
        bt, st = buy.terms, sell.terms
        assert bt is not None and st is not None and buy.rate is not None and sell.rate is not None
        buy_terms = (bt.taker_fee, buy.rate, bt.min_cost, bt.min_amount)
        sell_terms = (st.taker_fee, sell.rate, st.min_cost, st.min_amount)
        asks, bids = buy.snapshot.asks, sell.snapshot.bids
        last = self._evaluated.get(key)
        if last is not None and last.still_valid(asks, bids, buy_terms, sell_terms):
            # Nothing within reach of either walk changed: the same figures, computed now.
            old = last.result
            result = PairResult(
                symbol, a, b, old.gross_spread, old.fills, old.optimum, computed_at=now_wall
            )
        else:
            result, reach_a, reach_b = evaluate_pair_reach(
                symbol,
                a,
                b,
                Leg(asks, *buy_terms),
                Leg(bids, *sell_terms),
                self._notionals,
                transfer_cost=self._transfer[key],
                rebalance_cost_bps=self.config.execution.rebalance_cost_bps,
                computed_at=now_wall,
            )
            self._evaluated[key] = _Evaluated(
                asks, bids, reach_a, reach_b, buy_terms, sell_terms, result
            )
        self._pairs[key] = result
        for fill in result.fills:
            self.windows.observe(
                (symbol, a, b, fill.notional), fill.net_roi, fill.net_profit, now_wall
            )

    def _not_live_reason(
        self, symbol: str, exchanges: tuple[str, str], now: float
    ) -> CloseReason | None:
        for ex in exchanges:
            key = BookKey((ex, symbol))
            feed = self._feed_of[key]
            if not self._live(feed, now):
                return _CLOSE_REASON.get(self.status(*feed, now=now), CloseReason.FEED_DOWN)
            conv = self._conv_of[key]
            if conv is not None and not self._live(conv, now):
                return CloseReason.STALE
        return None

    def _transfer_cost(self, buy_exchange: str, symbol: str) -> float:
        if self.config.execution.model != "transfer":
            return 0.0
        base = self.symbols[symbol][buy_exchange].split("/")[0]
        return self.config.exchanges[buy_exchange].withdrawal_fees.get(base, 0.0)

    # -- retiring what is no longer live ---------------------------------------------------
    def _retire(self, feed: FeedKey, st: BookStatus, now: float, wall: float) -> None:
        """A book that is not live: drop its pairs and close its windows with its reason.
        A conversion book takes every opportunity that needs its rate with it."""
        if feed in self._conv_users:
            for symbol in self._conv_users[feed]:
                self._drop_pairs(symbol, None)
                for k in [k for k in self.windows.open if k[0] == symbol]:
                    self.windows.close(k, CloseReason.STALE, wall)
        symbol = self.feeds[feed].symbol
        if symbol not in self.symbols:
            return
        exchange = feed[0]
        end = wall
        rec = self._records.get(BookKey((exchange, symbol)))
        if st is BookStatus.STALE and rec is not None:
            end = min(wall, rec.snapshot.received_at + self._statuses.stale_after[feed])
        self.windows.close_matching(
            symbol, exchange, _CLOSE_REASON.get(st, CloseReason.FEED_DOWN), end
        )
        self._drop_pairs(symbol, exchange)

    def _drop_pairs(self, symbol: str, exchange: str | None) -> None:
        for key in [
            k for k in self._pairs if k[0] == symbol and (exchange is None or exchange in k[1:])
        ]:
            del self._pairs[key]

    # -- timer -------------------------------------------------------------------------
    def sweep(self) -> None:
        """Decide every book's status; drop pairs and close windows of non-live books, and
        count each live -> stale (or frozen) transition once."""
        now = self.clock.monotonic()
        wall = self.clock.time()
        for feed in self.feeds:
            st = self._decide(feed, now)
            self._statuses.count_stale(feed, st)
            if st is not BookStatus.LIVE:
                self._retire(feed, st, now, wall)

    def close_all(self, reason: CloseReason) -> list[Window]:
        return self.windows.close_all(reason, self.clock.time())

    def _window_closed(self, window: Window, logged: bool) -> None:
        if logged:
            self._sink.append_log(window_entry(window))

    # -- on demand (JSON API) -----------------------------------------------------------
    def evaluate_notional(self, symbol: str, a: str, b: str, notional: float) -> Fill | None:
        """Net profit of buying ``notional`` on ``a`` and selling on ``b`` from the live books
        now, exactly as the exported opportunities; None when no opportunity exists."""
        legs = self._legs(symbol, a, b, self.clock.monotonic())
        if legs is None:
            return None
        return evaluate(
            legs[0],
            legs[1],
            notional,
            transfer_cost=self._transfer_cost(a, symbol),
            rebalance_cost_bps=self.config.execution.rebalance_cost_bps,
        )
