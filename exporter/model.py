"""Immutable value types shared by feeds, analytics, state and the collector.

Levels are plain ``(price, qty)`` tuples: they are created per book update, and tuples are
several times cheaper to build and read than dataclass instances on that path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

Level = tuple[float, float]
"""One price level: ``(price, quantity)``; price in the market's quote, quantity in base."""

FeedKey = NewType("FeedKey", tuple[str, str])
"""One watched book as the exchange names it: ``(exchange, market)``, e.g. ``("binance",
"BTC/USDT")``. Conversion books (e.g. ``("kraken", "USDT/USD")``) have one too."""

BookKey = NewType("BookKey", tuple[str, str])
"""One book of a canonical symbol: ``(exchange, symbol)``, e.g. ``("binance", "BTC/USD")``."""

PairKey = tuple[str, str, str]
"""An ordered pair of one symbol: ``(symbol, buy_exchange, sell_exchange)``."""


class BookStatus(enum.StrEnum):
    """State machine of one book (docs/analytics.md, "Book state")."""

    SYNCING = "syncing"
    LIVE = "live"
    STALE = "stale"
    CROSSED = "crossed"
    RESYNCING = "resyncing"
    DOWN = "down"


class ErrorReason(enum.StrEnum):
    """Fixed label set of ``cryptoarb_feed_errors_total{reason}``."""

    NETWORK = "network"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    SEQUENCE_GAP = "sequence_gap"
    CHECKSUM = "checksum"
    CROSSED = "crossed"
    STALE = "stale"
    MALFORMED_FRAME = "malformed_frame"
    BAD_VALUE = "bad_value"
    UNKNOWN_SYMBOL = "unknown_symbol"


class CloseReason(enum.StrEnum):
    BELOW_THRESHOLD = "below_threshold"
    STALE = "stale"
    CROSSED = "crossed"
    FEED_DOWN = "feed_down"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A copy of the top K levels of one market's book, taken right after ccxt updated it.

    ``bids`` are sorted high->low and ``asks`` low->high, prices in the market's own quote.
    ``exchange_ts`` is the exchange event time in seconds (None when the exchange gave none,
    e.g. right after a REST snapshot); ``received_at`` is local wall time and
    ``received_mono`` the local monotonic clock at receipt.
    """

    exchange: str
    symbol: str
    market: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    exchange_ts: float | None
    received_at: float
    received_mono: float
    nonce: int | None = None

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def crossed(self) -> bool:
        return bool(self.bids and self.asks and self.bids[0][0] >= self.asks[0][0])


@dataclass(frozen=True, slots=True)
class BookMetrics:
    """Per-book analytics (docs/analytics.md, "Per book").

    ``best_bid``, ``best_ask`` and ``mid`` are in the market's OWN quote (what the exchange
    shows; multiply by ``quote_rate`` for the canonical quote); ``depth`` is in the canonical
    quote; ``spread_ratio`` and ``imbalance`` are unit-free.
    """

    best_bid: float
    best_ask: float
    mid: float
    spread_ratio: float
    # band -> (bid depth, ask depth) in the canonical quote
    depth: dict[float, tuple[float, float]]
    # band -> True when the copied levels reach the band's edge on both sides
    depth_complete: dict[float, bool]
    # band -> imbalance; a band with no depth on either side has no entry (never NaN)
    imbalance: dict[float, float]
    # rate(market quote -> canonical quote) used for ``depth``
    quote_rate: float = 1.0


@dataclass(frozen=True, slots=True)
class Fill:
    """Result of one net-ROI evaluation at notional ``notional`` (canonical quote)."""

    notional: float
    fillable: bool
    net_profit: float | None = None
    net_roi: float | None = None


@dataclass(frozen=True, slots=True)
class SizeOptimum:
    """Break-even and profit-maximising notional for one ordered pair."""

    breakeven_notional: float
    optimal_notional: float
    optimal_net_profit: float
    capped: bool  # True when the search ran out of copied depth


@dataclass(frozen=True, slots=True)
class PairResult:
    """Opportunity for (symbol, buy on ``buy_exchange``, sell on ``sell_exchange``)."""

    symbol: str
    buy_exchange: str
    sell_exchange: str
    gross_spread: float
    fills: tuple[Fill, ...]
    optimum: SizeOptimum | None
    computed_at: float  # local wall time of the newer of the two books


@dataclass(slots=True)
class Window:
    """A profitable window for (symbol, A, B, notional); mutable while open."""

    id: str
    symbol: str
    buy_exchange: str
    sell_exchange: str
    notional: float
    start: float
    threshold: float
    peak_roi: float
    peak_profit: float
    last_seen: float = field(default=0.0)
    end: float | None = None
    close_reason: CloseReason | None = None

    @property
    def duration(self) -> float:
        return (self.end if self.end is not None else self.last_seen) - self.start


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """A market's trading terms from ccxt's listing (the taker fee after config overrides
    once it sits in the fee table)."""

    taker_fee: float
    min_cost: float
    min_amount: float
    # ccxt's precision of price and amount (its precisionMode's units); kept for recordings
    price_precision: float | None = None
    amount_precision: float | None = None


class LogSink(Protocol):
    """Where entries of the persistent ``windows`` log go (closed windows, alerts); the Redis
    writer implements it. ``dedupe_key`` makes a re-sent entry land once."""

    def append_log(self, entry: Mapping[str, Any], dedupe_key: str | None = None) -> None: ...


def label_number(x: float) -> str:
    """A configured number as a label value / log field: 10000.0 -> '10000', 0.005 -> '0.005'."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
